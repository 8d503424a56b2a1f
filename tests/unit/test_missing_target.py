"""Rows without a target: refused naming the row (the default), or left out with
`data.on_missing_target=drop`, in memory and streamed alike; and `forgeml init`'s view of a table."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from forgeml.data.checks import check_table, describe_table
from forgeml.data.streaming import prepare_streaming
from forgeml.errors import ForgeError

STREAMED = {"target": "label", "task": "auto", "features": {}, "drop": [], "val_size": 0.2, "test_size": 0.2}


def labelled(rows: int, empty: list[int], seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({"x": rng.normal(size=rows), "city": rng.choice(["a", "b"], rows)})
    frame["label"] = np.where(frame["x"] > 0, "yes", "no").astype(object)
    frame.loc[empty, "label"] = None
    return frame


def test_empty_target_is_refused_naming_the_row_and_the_option():
    with pytest.raises(ForgeError, match=r"empty in row 4 \(2 rows in all\).*data.on_missing_target=drop"):
        check_table(labelled(10, [3, 8]), "label")


def test_drop_leaves_out_exactly_the_rows_without_a_target():
    frame = labelled(50, [3, 8, 20])
    kept, _ = check_table(frame, "label", on_missing_target="drop")
    assert len(kept) == 47
    assert kept["x"].tolist() == frame.drop(index=[3, 8, 20])["x"].tolist()


def test_drop_refuses_a_table_without_any_target():
    with pytest.raises(ForgeError, match="empty in every row"):
        check_table(labelled(5, [0, 1, 2, 3, 4]), "label", on_missing_target="drop")


def test_streamed_drop_keeps_every_other_row_in_the_split_it_had(tmp_path):
    """A row's split is a hash of its number in the file, so leaving rows out moves no other row."""
    full, holed = labelled(3000, []), labelled(3000, [5, 1500, 2999])
    splits = {}
    for name, frame in (("full", full), ("holed", holed)):
        source = tmp_path / f"{name}.parquet"
        pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), source)
        data = {**STREAMED, "on_missing_target": "drop"}
        rows, *_ = prepare_streaming(source, tmp_path / name, data, seed=0, batch_rows=700)
        splits[name] = {split: pd.read_parquet(tmp_path / name / f"{split}.parquet") for split in rows}
    assert sum(len(split) for split in splits["holed"].values()) == 2997
    for split, table in splits["holed"].items():
        expected = splits["full"][split]
        expected = expected[~expected["x"].isin(full.loc[[5, 1500, 2999], "x"])]
        assert table["x"].tolist() == expected["x"].tolist()


def test_streamed_bad_cell_after_dropped_rows_is_named_by_its_row_in_the_file(tmp_path):
    frame = labelled(3000, [10, 11, 12]).astype({"x": object})
    frame.loc[2500, "x"] = "twelve"
    source = tmp_path / "data.csv"
    frame.to_csv(source, index=False)
    with pytest.raises(ForgeError, match=r"column 'x' is numeric but row 2501 holds 'twelve'"):
        prepare_streaming(source, tmp_path / "out", {**STREAMED, "on_missing_target": "drop"}, 0, 700)


def test_describe_table_reports_types_classes_empty_targets_and_constant_columns():
    frame = labelled(40, [1, 2]).assign(constant=7)
    summary = describe_table(frame, "label")
    assert summary["rows"] == 40 and summary["columns"] == 4
    assert summary["types"] == {"x": "numeric", "city": "categorical", "constant": "numeric"}
    assert summary["task"] == "classification"
    assert summary["empty_targets"] == 2
    assert summary["constant_columns"] == ["constant"]
    assert sum(summary["classes"].values()) == 38
