"""forgeml.tables: CSV or Parquet by suffix, whole and in batches, the same rows either way;
any other suffix, or a file that is not what its suffix says, is refused naming the file."""

from __future__ import annotations

import pandas as pd
import pyarrow as pa
import pytest

from forgeml.errors import ForgeError
from forgeml.tables import (
    TableWriter,
    leading_rows,
    narrowest_types,
    parquet_types,
    read_batches,
    read_frames,
    read_header,
    read_table,
    write_table,
)

FRAME = pd.DataFrame({"age": [31.5, 40.0, None, 22.0, 58.5], "city": ["oslo", "rome", "lima", None, "rome"]})


@pytest.mark.parametrize("suffix", [".csv", ".parquet", ".pq"])
def test_a_table_reads_back_whole_in_frames_and_in_batches(tmp_path, suffix):
    path = tmp_path / f"people{suffix}"
    write_table(FRAME, path)
    pd.testing.assert_frame_equal(read_table(path), FRAME)
    as_written = read_table(path, csv_types=str)  # read_frames gives CSV cells as text
    pd.testing.assert_frame_equal(pd.concat(read_frames(path, batch_rows=2), ignore_index=True), as_written)
    pd.testing.assert_frame_equal(leading_rows(path, 3), FRAME.head(3))
    assert read_header(path) == ["age", "city"]
    batches = list(read_batches(path, batch_rows=2))
    assert sum(batch.num_rows for batch in batches) == len(FRAME)
    assert batches[0].column_names == ["age", "city"]


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_appended_frames_are_one_table(tmp_path, suffix):
    path = tmp_path / f"out{suffix}"
    with TableWriter(path) as writer:
        writer.write(FRAME.head(2))
        writer.write(FRAME.tail(3))
    pd.testing.assert_frame_equal(read_table(path), FRAME)


def test_integers_with_a_gap_stay_integers_in_frames_of_either_format(tmp_path):
    counts = pd.DataFrame({"count": pd.array([3, None, 5], dtype="Int64")})
    write_table(counts, tmp_path / "counts.csv")
    write_table(counts, tmp_path / "counts.parquet")
    [text] = read_frames(tmp_path / "counts.csv")
    [typed] = read_frames(tmp_path / "counts.parquet")
    assert text["count"].tolist()[::2] == ["3", "5"] and pd.isna(text["count"][1])
    assert typed["count"].dtype == "Int64"
    assert narrowest_types(read_frames(tmp_path / "counts.csv")) == parquet_types(tmp_path / "counts.parquet")


def test_each_csv_column_gets_the_narrowest_type_holding_every_cell_of_every_frame():
    frames = [
        pd.DataFrame(
            {"n": ["1", "2"], "x": ["1", None], "flag": ["true", "False"], "s": ["1", "a"], "e": [None, None]}
        ),
        pd.DataFrame(
            {
                "n": ["3", None],
                "x": ["2.5", "1e3"],
                "flag": ["TRUE", None],
                "s": ["2", "3"],
                "e": [None, None],
            }
        ),
    ]
    types = narrowest_types(frames)
    assert types == {
        "n": pa.int64(),
        "x": pa.float64(),
        "flag": pa.bool_(),
        "s": pa.string(),
        "e": pa.string(),
    }


def test_another_suffix_is_refused_naming_the_key_and_the_file(tmp_path):
    with pytest.raises(ForgeError, match=r"^monitor.labels: .*labels.xlsx: expected a CSV or Parquet file"):
        read_table(tmp_path / "labels.xlsx", key="monitor.labels")
    with pytest.raises(ForgeError, match=r"out.txt: expected a CSV or Parquet file"):
        write_table(FRAME, tmp_path / "out.txt")


def test_a_file_that_is_not_what_its_suffix_says_is_named(tmp_path):
    (tmp_path / "broken.parquet").write_text("age,city\n1,oslo\n")
    with pytest.raises(ForgeError, match=r"broken.parquet: not a readable Parquet file"):
        read_table(tmp_path / "broken.parquet")
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(ForgeError, match=r"empty.csv is empty"):
        read_table(tmp_path / "empty.csv")
