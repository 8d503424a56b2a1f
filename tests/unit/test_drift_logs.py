"""Reading the inference log back: every worker's files, rotated ones, cut-off and odd lines."""

from __future__ import annotations

import json
import os
import shutil
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pandas as pd
import pyarrow.feather as feather
import pytest

from forgeml.errors import ForgeError
from forgeml.monitoring import logs
from forgeml.monitoring.decay import time_windows
from forgeml.monitoring.logs import read_current, read_inference_log, select_window

START = datetime(2025, 6, 1, 12, 0, tzinfo=timezone.utc)


def record(second: int, model: str = "cancer", **inputs: object) -> dict:
    return {
        "ts": (START + timedelta(seconds=second)).isoformat().replace("+00:00", "Z"),
        "model": model,
        "version": "1",
        "latency_ms": 1.5,
        "input": inputs,
        "prediction": "benign",
    }


def write_lines(path: Path, records: list[dict], tail: str = "") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records) + tail)


def test_reads_every_worker_and_rotated_file_in_time_order(tmp_path):
    write_lines(tmp_path / "worker-11.jsonl", [record(4, x=4.0, colour="red"), record(6, x=6.0)])
    write_lines(tmp_path / "worker-11.1.jsonl", [record(1, x=1.0, colour="blue")])
    write_lines(tmp_path / "worker-12.jsonl", [record(5, x=5, colour="red"), record(2, x=2.5)])
    frame = read_inference_log(tmp_path)
    assert frame["x"].tolist() == [1.0, 2.5, 4.0, 5.0, 6.0]
    assert frame["colour"][[0, 2]].tolist() == ["blue", "red"] and pd.isna(frame["colour"][1])
    assert {"ts", "model", "version", "latency_ms", "prediction"} <= set(frame.columns)
    assert str(frame["ts"].dt.tz) == "UTC"


def test_records_of_one_time_keep_their_file_order_and_one_without_a_time_comes_last(tmp_path):
    """The log is sorted in Arrow before pandas sees it: stably, a missing time last, as pandas'
    stable sort would order it; a log already in order comes back as it was read."""
    write_lines(tmp_path / "worker-11.1.jsonl", [record(3, x=1.0), {**record(0, x=2.0), "ts": None}])
    write_lines(tmp_path / "worker-11.jsonl", [record(3, x=3.0), record(1, x=4.0)])
    write_lines(tmp_path / "worker-12.jsonl", [record(3, x=5.0)])
    assert read_inference_log(tmp_path)["x"].tolist() == [4.0, 1.0, 3.0, 5.0, 2.0]
    table = logs.parse_table(b"".join(json.dumps(record(second)).encode() + b"\n" for second in (1, 2, 2)))
    assert logs.in_time_order(table) is table


def test_a_line_cut_short_by_a_stopped_worker_is_skipped(tmp_path):
    write_lines(tmp_path / "worker-1.jsonl", [record(1, x=1.0), record(2, x=2.0)], tail='{"ts": "2025-0')
    assert read_inference_log(tmp_path)["x"].tolist() == [1.0, 2.0]
    write_lines(tmp_path / "worker-1.jsonl", [record(1, x=1.0)], tail=json.dumps(record(3, x=3.0)))
    assert read_inference_log(tmp_path)["x"].tolist() == [1.0, 3.0]


def test_mixed_value_types_and_a_corrupt_line_cost_only_that_line(tmp_path):
    path = tmp_path / "worker-1.jsonl"
    write_lines(path, [record(1, x=1.0), record(2, x="2.5"), record(3, x=3.0)])
    path.write_text(path.read_text() + "{not json\n" + json.dumps(record(4, x=4.0)) + "\n")
    frame = read_inference_log(tmp_path)
    assert len(frame) == 4
    assert pd.to_numeric(frame["x"]).tolist() == [1.0, 2.5, 3.0, 4.0]


def test_fields_typed_otherwise_after_the_first_lines_are_read_as_a_whole_file_infers_them(
    tmp_path, monkeypatch
):
    """The types come from the first lines (here: the first one); later lines that disagree
    (an integer label, then text; a field first null, then a number; a new field) lose nothing."""
    monkeypatch.setattr(logs, "SCHEMA_SAMPLE_BYTES", 10)
    first = {**record(1, x=1.0), "prediction": 1, "rejected": None}
    later = [
        {**record(2, x=2.0), "prediction": "benign", "rejected": "bad x"},
        {**record(3, x=3.0, colour="red"), "prediction": 0},
    ]
    write_lines(tmp_path / "worker-1.jsonl", [first, *later])
    frame = read_inference_log(tmp_path)
    assert frame["x"].tolist() == [1.0, 2.0, 3.0]
    assert frame["prediction"].astype(str).tolist() == ["1", "benign", "0"]
    assert frame["rejected"].tolist()[1] == "bad x" and frame["colour"].tolist()[2] == "red"
    assert frame["ts"].dt.second.tolist() == [1, 2, 3] and str(frame["ts"].dt.tz) == "UTC"


def test_times_parsed_by_the_reader_equal_pandas_iso_8601_parse(tmp_path):
    stamps = ["2025-06-01T12:00:01.123456Z", "2025-06-01T12:00:00Z", "2025-06-01T14:00:02.5+02:00"]
    write_lines(
        tmp_path / "worker-1.jsonl", [{**record(0, x=float(i)), "ts": t} for i, t in enumerate(stamps)]
    )
    frame = read_inference_log(tmp_path)
    expected = pd.to_datetime(pd.Series(stamps), utc=True, format="ISO8601").sort_values(ignore_index=True)
    assert frame["ts"].tolist() == expected.tolist() and frame["x"].tolist() == [1.0, 0.0, 2.0]


def test_no_log_directory_yet_reads_as_no_rows(tmp_path):
    assert len(read_inference_log(tmp_path / "not-yet")) == 0


def test_window_keeps_one_model_the_last_duration_and_the_last_rows(tmp_path):
    records = [record(s * 3600, model="cancer" if s % 2 else "wine", x=float(s)) for s in range(10)]
    write_lines(tmp_path / "worker-1.jsonl", records)
    frame = read_inference_log(tmp_path)
    now = START + timedelta(hours=9)
    assert select_window(frame, "cancer")["x"].tolist() == [1.0, 3.0, 5.0, 7.0, 9.0]
    [last_four_hours] = time_windows(select_window(frame, "cancer"), "4h", 1, now=now)
    assert last_four_hours.records["x"].tolist() == [5.0, 7.0, 9.0]
    assert select_window(frame, None, last_rows=2)["x"].tolist() == [8.0, 9.0]
    with pytest.raises(ForgeError, match="window_duration='soon'"):
        time_windows(frame, "soon", 1)


def test_current_data_from_csv_parquet_or_missing_path(tmp_path):
    table = pd.DataFrame({"x": [1.0, 2.0], "colour": ["red", "blue"]})
    table.to_csv(tmp_path / "t.csv", index=False)
    table.to_parquet(tmp_path / "t.parquet")
    pd.testing.assert_frame_equal(read_current(tmp_path / "t.csv"), table)
    pd.testing.assert_frame_equal(read_current(tmp_path / "t.parquet"), table)
    with pytest.raises(ForgeError, match=r"monitor.current"):
        read_current(tmp_path / "missing.csv")


def test_integer_labels_stay_integers_next_to_rejected_request_lines(tmp_path):
    lines = [{**record(0), "prediction": 1}, {**record(1), "prediction": 0}, {**record(2), "rejected": "x"}]
    del lines[2]["input"], lines[2]["prediction"]
    write_lines(tmp_path / "worker-1.jsonl", lines)
    frame = read_inference_log(tmp_path)
    assert frame["prediction"].dropna().astype(str).tolist() == ["1", "0"]


def parses_counted(monkeypatch) -> list[int]:
    """Calls of the JSON parse (their byte counts), so a test sees which files were parsed."""
    parsed: list[int] = []
    parse = logs.parse_table

    def counted(data: bytes):
        parsed.append(len(data))
        return parse(data)

    monkeypatch.setattr(logs, "parse_table", counted)
    return parsed


def cached_copies(log_dir: Path) -> list[Path]:
    return sorted((log_dir / logs.SEGMENT_CACHE).glob("*.arrow"))


def test_closed_segments_are_parsed_once_then_read_from_their_arrow_copy(tmp_path, monkeypatch):
    write_lines(tmp_path / "worker-1.2.jsonl", [record(1, x=1.0, colour="red")])
    write_lines(tmp_path / "worker-1.1.jsonl", [record(2, x=2.0)])
    write_lines(tmp_path / "worker-1.jsonl", [record(3, x=3.0)])
    parsed = parses_counted(monkeypatch)
    first = read_inference_log(tmp_path)
    assert len(parsed) == 3 and len(cached_copies(tmp_path)) == 2  # the live file: no copy
    second = read_inference_log(tmp_path)
    assert len(parsed) == 4  # only the live file again
    pd.testing.assert_frame_equal(first, second)
    assert second["x"].tolist() == [1.0, 2.0, 3.0] and second["colour"][0] == "red"


def test_a_rotation_reuses_the_copies_and_drops_those_of_removed_segments(tmp_path, monkeypatch):
    write_lines(tmp_path / "worker-1.2.jsonl", [record(1, x=1.0)])
    write_lines(tmp_path / "worker-1.1.jsonl", [record(2, x=2.0)])
    read_inference_log(tmp_path)
    # the handler rotates: .2 is dropped, .1 moves up to .2, a new .1 (formerly live) appears
    os.replace(tmp_path / "worker-1.1.jsonl", tmp_path / "worker-1.2.jsonl")
    write_lines(tmp_path / "worker-1.1.jsonl", [record(3, x=3.0)])
    parsed = parses_counted(monkeypatch)
    assert read_inference_log(tmp_path)["x"].tolist() == [2.0, 3.0]
    assert len(parsed) == 1 and len(cached_copies(tmp_path)) == 2


def test_a_changed_segment_is_parsed_again_even_with_its_size_and_mtime_kept(tmp_path):
    segment = tmp_path / "worker-1.1.jsonl"
    write_lines(segment, [record(1, x=1.0), record(2, x=2.0)])
    assert read_inference_log(tmp_path)["x"].tolist() == [1.0, 2.0]
    stat = segment.stat()
    segment.write_text(segment.read_text().replace('"x": 2.0', '"x": 7.0'))
    os.utime(segment, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert segment.stat().st_size == stat.st_size
    assert read_inference_log(tmp_path)["x"].tolist() == [1.0, 7.0]
    assert len(cached_copies(tmp_path)) == 1  # the stale copy is gone


def test_a_corrupt_copy_is_rebuilt_and_an_unwritable_cache_costs_only_speed(tmp_path, caplog):
    write_lines(tmp_path / "worker-1.1.jsonl", [record(1, x=1.0), record(2, x=2.0)])
    read_inference_log(tmp_path)
    [copy] = cached_copies(tmp_path)
    copy.write_bytes(copy.read_bytes()[:40])
    assert read_inference_log(tmp_path)["x"].tolist() == [1.0, 2.0]
    assert "does not read back" in caplog.text
    assert feather.read_table(copy).num_rows == 2
    shutil.rmtree(tmp_path / logs.SEGMENT_CACHE)
    (tmp_path / logs.SEGMENT_CACHE).write_text("not a directory")
    assert read_inference_log(tmp_path)["x"].tolist() == [1.0, 2.0]
    assert "cannot keep a copy" in caplog.text


def test_files_whose_fields_are_typed_differently_are_read_as_one_table(tmp_path):
    write_lines(tmp_path / "worker-1.jsonl", [{**record(1, x=1), "prediction": 1}, record(3, x=3.5)])
    write_lines(tmp_path / "worker-2.jsonl", [{**record(2, x=2.0, colour="red"), "prediction": 0}])
    write_lines(tmp_path / "worker-3.jsonl", [{**record(4, x=4.0), "prediction": 1}])
    frame = read_inference_log(tmp_path)
    assert frame["x"].tolist() == [1.0, 2.0, 3.5, 4.0] and frame["colour"].tolist()[1] == "red"
    assert frame["prediction"].astype(str).tolist() == ["1", "0", "benign", "1"]
