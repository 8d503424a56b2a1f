"""Batch prediction on a small artifact: chunked reading gives the same answers as one pass,
bad rows are kept and reported by row number, CSV and Parquet both ways."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from forgeml.data.transform import encode_features
from forgeml.errors import ForgeError
from forgeml.models.artifact import ModelArtifact
from forgeml.serving.batch import predict_file
from tests.helpers.data import TOY_SPEC

SPEC = TOY_SPEC  # the shared toy preprocessing spec


@pytest.fixture
def artifact() -> ModelArtifact:
    torch.manual_seed(0)
    program = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.Softmax(-1)).eval()
    return ModelArtifact({"task": "classification"}, SPEC, program)


@pytest.fixture
def table() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame(
        {
            "id": np.arange(50),
            "age": rng.uniform(18, 90, 50).round(1),
            "city": rng.choice(["berlin", "paris", "tokyo"], 50),
        }
    )


def reference(artifact: ModelArtifact, table: pd.DataFrame) -> np.ndarray:
    columns = {"age": table["age"].to_numpy(np.float64), "city": table["city"].to_numpy(object)}
    with torch.inference_mode():
        return artifact.program(torch.from_numpy(encode_features(SPEC, columns))).numpy()


@pytest.mark.parametrize(("source", "target"), [("csv", "parquet"), ("parquet", "csv")])
def test_chunked_prediction_equals_one_pass_and_keeps_input_columns(
    tmp_path, artifact, table, source, target
):
    src, dst = tmp_path / f"in.{source}", tmp_path / f"out.{target}"
    table.to_csv(src, index=False) if source == "csv" else table.to_parquet(src, index=False)
    summary = predict_file(artifact, src, dst, chunk_rows=7)
    out = pd.read_csv(dst) if target == "csv" else pd.read_parquet(dst)
    probabilities = reference(artifact, table)
    assert summary["rows"] == 50 and summary["bad_rows"] == 0
    assert out["id"].tolist() == table["id"].tolist()
    np.testing.assert_allclose(out[["probability_no", "probability_yes"]], probabilities, atol=1e-6)
    assert out["prediction"].tolist() == [SPEC["labels"][i] for i in probabilities.argmax(1)]


def test_bad_rows_are_kept_without_prediction_and_reported_by_row_number(tmp_path, artifact, table):
    table["age"] = table["age"].astype(object)
    table.loc[[3, 20], "age"] = "unknown"
    table.to_csv(tmp_path / "in.csv", index=False)
    summary = predict_file(artifact, tmp_path / "in.csv", tmp_path / "out.csv", chunk_rows=8)
    out = pd.read_csv(tmp_path / "out.csv")
    assert summary["bad_rows"] == 2
    assert [(e["row"], e["field"]) for e in summary["bad_row_examples"]] == [(4, "age"), (21, "age")]
    assert "not a number: 'unknown'" in summary["bad_row_examples"][0]["error"]
    assert len(out) == 50
    assert out["prediction"].isna().tolist() == [i in (3, 20) for i in range(50)]


def test_missing_feature_column_is_named(tmp_path, artifact, table):
    table.drop(columns=["city"]).to_csv(tmp_path / "in.csv", index=False)
    with pytest.raises(ForgeError, match="city"):
        predict_file(artifact, tmp_path / "in.csv", tmp_path / "out.csv")
    assert not (tmp_path / "out.csv").exists()


def test_non_numeric_cell_in_a_later_chunk_keeps_its_text_in_parquet(tmp_path, artifact, table):
    table["age"] = table["age"].astype(object)
    table.loc[45, "age"] = "unknown"  # chunk 8 of 9: the column is numbers in the chunks before
    table.to_csv(tmp_path / "in.csv", index=False)
    summary = predict_file(artifact, tmp_path / "in.csv", tmp_path / "out.parquet", chunk_rows=6)
    out = pd.read_parquet(tmp_path / "out.parquet")
    assert summary["bad_rows"] == 1 and summary["bad_row_examples"][0]["row"] == 46
    assert len(out) == 50 and out["prediction"].isna().sum() == 1
    assert out.loc[45, "age"] == "unknown" and out.loc[44, "age"] == str(table.loc[44, "age"])


@pytest.mark.parametrize("target", ["csv", "parquet"])
def test_a_bad_cell_keeps_its_text_and_its_row_names_the_column_and_the_problem(
    tmp_path, artifact, table, target
):
    good = reference(artifact, table)
    table["age"] = table["age"].astype(object)
    table.loc[[3, 20], "age"] = ["unknown", "42 years"]
    table.to_csv(tmp_path / "in.csv", index=False)
    predict_file(artifact, tmp_path / "in.csv", tmp_path / f"out.{target}", chunk_rows=8)
    out = pd.read_csv(tmp_path / "out.csv") if target == "csv" else pd.read_parquet(tmp_path / "out.parquet")
    assert out.loc[[3, 20], "age"].tolist() == ["unknown", "42 years"]
    assert out.loc[[3, 20], "error"].tolist() == [
        "age: not a number: 'unknown'",
        "age: not a number: '42 years'",
    ]
    scored = [i for i in range(50) if i not in (3, 20)]
    assert out.loc[scored, "error"].isna().all()
    np.testing.assert_allclose(
        out.loc[scored, ["probability_no", "probability_yes"]], good[scored], atol=1e-6
    )
    assert out.loc[scored, "city"].tolist() == table.loc[scored, "city"].tolist()


@pytest.mark.parametrize(
    ("source", "target"), [("csv", "csv"), ("csv", "parquet"), ("parquet", "csv"), ("parquet", "parquet")]
)
def test_integer_columns_stay_integers_with_a_gap_in_a_later_chunk(tmp_path, artifact, table, source, target):
    table["age"] = table["age"].round().astype("Int64")  # an integer feature ...
    table["visits"] = pd.array(range(50), dtype="Int64")  # ... and a column the model does not read
    table.loc[[33, 47], ["age", "visits"]] = None  # in a later chunk only: there pandas would read floats
    src = tmp_path / f"in.{source}"
    table.to_csv(src, index=False) if source == "csv" else table.to_parquet(src, index=False)
    summary = predict_file(artifact, src, tmp_path / f"out.{target}", chunk_rows=8)
    assert summary["bad_rows"] == 0
    if target == "csv":
        lines = (tmp_path / "out.csv").read_text().splitlines()
        assert lines[0].split(",")[:4] == ["id", "age", "city", "visits"]
        assert [line.split(",")[3] for line in lines[1:]] == [
            "" if i in (33, 47) else str(i) for i in range(50)
        ]
        assert lines[1].split(",")[1] == str(table.loc[0, "age"])
        return
    out = pq.read_table(tmp_path / "out.parquet")
    assert [out.schema.field(name).type for name in ("id", "age", "visits")] == [pa.int64()] * 3
    assert out.column("visits").to_pylist() == [None if i in (33, 47) else i for i in range(50)]


def test_a_chunk_without_any_prediction_keeps_the_output_schema(tmp_path, artifact, table):
    table["age"] = table["age"].astype(object)
    table.loc[:5, "age"] = "unknown"  # the whole first chunk is bad: no label to infer a type from
    table.to_csv(tmp_path / "in.csv", index=False)
    summary = predict_file(artifact, tmp_path / "in.csv", tmp_path / "out.parquet", chunk_rows=6)
    out = pd.read_parquet(tmp_path / "out.parquet")
    assert summary["bad_rows"] == 6
    assert out["prediction"].isna().tolist() == [i < 6 for i in range(50)]
    assert set(out["prediction"].dropna()) <= {"no", "yes"}


@pytest.mark.parametrize("value", [1e300, -1e300])
def test_value_that_overflows_float32_is_a_bad_row_not_a_nan_prediction(tmp_path, artifact, table, value):
    table.loc[7, "age"] = value
    table.to_csv(tmp_path / "in.csv", index=False)
    summary = predict_file(artifact, tmp_path / "in.csv", tmp_path / "out.csv", chunk_rows=8)
    out = pd.read_csv(tmp_path / "out.csv")
    [example] = summary["bad_row_examples"]
    assert (example["row"], example["field"]) == (8, "age")
    assert "too extreme for the model" in example["error"]
    assert out["prediction"].isna().tolist() == [i == 7 for i in range(50)]
    assert not out.drop(index=7)[["probability_no", "probability_yes"]].isna().any().any()


def test_truncated_row_is_a_bad_row_not_imputed(tmp_path, artifact, table):
    lines = table.to_csv(index=False).splitlines()
    lines[10] = lines[10].rsplit(",", 1)[0]  # row 10 lacks its city
    (tmp_path / "in.csv").write_text("\n".join(lines) + "\n")
    summary = predict_file(artifact, tmp_path / "in.csv", tmp_path / "out.csv", chunk_rows=4)
    [example] = summary["bad_row_examples"]
    assert (example["row"], example["field"]) == (10, "city")
    assert "fewer fields" in example["error"]
    assert pd.read_csv(tmp_path / "out.csv")["prediction"].isna().tolist() == [i == 9 for i in range(50)]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", r"in.csv is empty"),
        (b"id,age,city\n1,30,paris\n2,40,paris,extra\n", r"in.csv, row 2: 4 fields, the header has 3"),
        (b"id,age,city\n1,30,paris\n2,40,p\xe4ris\n", r"in.csv, row 2: not UTF-8 text"),
    ],
)
def test_unreadable_csv_is_refused_naming_file_and_row_and_keeps_the_old_output(
    tmp_path, artifact, content, message
):
    (tmp_path / "in.csv").write_bytes(content)
    (tmp_path / "out.parquet").write_bytes(b"an earlier output")
    with pytest.raises(ForgeError, match=message):
        predict_file(artifact, tmp_path / "in.csv", tmp_path / "out.parquet")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.csv", "out.parquet"]
    assert (tmp_path / "out.parquet").read_bytes() == b"an earlier output"


def test_header_only_csv_writes_an_empty_table(tmp_path, artifact):
    (tmp_path / "in.csv").write_text("id,age,city\n")
    summary = predict_file(artifact, tmp_path / "in.csv", tmp_path / "out.parquet")
    out = pd.read_parquet(tmp_path / "out.parquet")
    assert summary["rows"] == 0 and len(out) == 0
    assert "prediction" in out.columns


def test_a_bad_cell_deep_in_a_wide_csv_warns_nothing(tmp_path, artifact):
    """pandas parses a wide CSV chunk in smaller pieces and warns of a column typed differently
    in two of them (DtypeWarning); a bad cell is a bad row, reported, not a console warning."""
    rows = 6000
    rng = np.random.default_rng(0)
    wide = {f"extra{i}": np.zeros(rows, dtype=np.int64) for i in range(200)}
    ages = rng.uniform(18, 90, rows).round(1).astype(object)
    ages[5000] = "unknown"
    pd.DataFrame({"age": ages, "city": "paris", **wide}).to_csv(tmp_path / "in.csv", index=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        summary = predict_file(artifact, tmp_path / "in.csv", tmp_path / "out.parquet")
    assert [str(warning.message) for warning in caught] == []
    assert summary["bad_rows"] == 1 and summary["bad_row_examples"][0]["row"] == 5001
