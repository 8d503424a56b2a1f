"""Reading the inference log back: every worker's files, rotated ones, cut-off and odd lines."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pandas as pd
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
