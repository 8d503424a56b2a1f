"""Batch inference: a CSV or Parquet table in, the same table with predictions out.

The input is read and scored in chunks of rows, so a file larger than memory works; each chunk
is encoded by transform.py (the arithmetic training and the serving handler use) and scored by
the exported program in one call. A row whose numeric feature is not a number gets no
prediction and is reported by its row number (1-based, header excluded); it is never dropped.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from forgeml.data.transform import encode_features
from forgeml.errors import ForgeError
from forgeml.io import atomic_path
from forgeml.models.artifact import ModelArtifact

CHUNK_ROWS = 65_536
MAX_REPORTED_ROWS = 100
TABLE_SUFFIXES = (".csv", ".parquet", ".pq")


@dataclass
class BadRows:
    """Rows that got no prediction: how many, and the first ones with their reason."""

    count: int = 0
    first: list[dict[str, Any]] = field(default_factory=list)

    def add(self, rows: np.ndarray, feature: str, values: np.ndarray) -> None:
        self.count += len(rows)
        room = MAX_REPORTED_ROWS - len(self.first)
        self.first += [
            {"row": int(row), "field": feature, "error": f"not a number: {value!r}"}
            for row, value in zip(rows[:room], values[:room], strict=True)
        ]


def predict_file(
    artifact: ModelArtifact, source: str | Path, target: str | Path, chunk_rows: int = CHUNK_ROWS
) -> dict[str, Any]:
    """Score every row of `source` into `target` (written atomically); returns a summary."""
    source, target = Path(source), Path(target)
    for path in (source, target):
        if path.suffix.lower() not in TABLE_SUFFIXES:
            raise ForgeError(f"{path}: expected a .csv or .parquet file")
    if not source.is_file():
        raise ForgeError(f"input file {source} not found")
    bad, rows = BadRows(), 0
    with atomic_path(target) as tmp, TableWriter(tmp) as writer:
        for chunk in read_chunks(source, chunk_rows):
            check_columns(chunk, artifact.spec, source)
            writer.write(predict_chunk(artifact, chunk, rows + 1, bad))
            rows += len(chunk)
    return {
        "input": str(source),
        "output": str(target),
        "rows": rows,
        "bad_rows": bad.count,
        "bad_row_examples": bad.first,
    }


def predict_chunk(artifact: ModelArtifact, chunk: pd.DataFrame, first_row: int, bad: BadRows) -> pd.DataFrame:
    """The chunk plus its prediction columns; rows numbered from `first_row`."""
    columns, valid = feature_columns(chunk, artifact.spec, first_row, bad)
    scores = np.full((len(chunk), *output_shape(artifact)), np.nan, dtype=np.float32)
    if valid.any():
        inputs = encode_features(artifact.spec, {n: c[valid] for n, c in columns.items()})
        with torch.inference_mode():
            scores[valid] = artifact.program(torch.from_numpy(inputs)).numpy()
    return chunk.assign(**prediction_columns(artifact.spec, scores, valid))


def feature_columns(
    chunk: pd.DataFrame, spec: dict[str, Any], first_row: int, bad: BadRows
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The columns encode_features expects, and which rows can be scored."""
    columns, valid = {}, np.ones(len(chunk), dtype=bool)
    for feature in spec["features"]:
        raw = chunk[feature["name"]]
        if feature["type"] == "numeric":
            numbers = pd.to_numeric(raw, errors="coerce").to_numpy(np.float64)
            # present but not a (finite) number: a bad row, not a missing value to impute
            wrong = (np.isnan(numbers) & raw.notna().to_numpy()) | np.isinf(numbers)
            newly_bad = wrong & valid
            if newly_bad.any():
                rows = first_row + np.flatnonzero(newly_bad)
                bad.add(rows, feature["name"], raw.to_numpy(dtype=object)[newly_bad])
                valid &= ~wrong
            columns[feature["name"]] = numbers
        else:
            columns[feature["name"]] = raw.astype(object).to_numpy(dtype=object, na_value=None)
    return columns, valid


def output_shape(artifact: ModelArtifact) -> tuple[int, ...]:
    spec = artifact.spec
    return (len(spec["labels"]),) if spec["task"] == "classification" else ()


def prediction_columns(spec: dict[str, Any], scores: np.ndarray, valid: np.ndarray) -> dict[str, Any]:
    if spec["task"] == "regression":
        return {"prediction": scores}
    labels = np.asarray(spec["labels"], dtype=object)
    predicted = np.where(valid, labels[scores.argmax(axis=1)], None)
    probabilities = {f"probability_{label}": scores[:, i] for i, label in enumerate(spec["labels"])}
    return {"prediction": predicted, **probabilities}


def check_columns(chunk: pd.DataFrame, spec: dict[str, Any], source: Path) -> None:
    missing = [f["name"] for f in spec["features"] if f["name"] not in chunk.columns]
    if missing:
        raise ForgeError(f"{source} lacks the model's feature column(s): {', '.join(missing)}")


def read_chunks(source: Path, chunk_rows: int) -> Iterator[pd.DataFrame]:
    if source.suffix.lower() == ".csv":
        yield from pd.read_csv(source, chunksize=chunk_rows)
        return
    for batch in pq.ParquetFile(source).iter_batches(batch_size=chunk_rows):
        yield batch.to_pandas()


class TableWriter:
    """Appends chunks to one CSV or Parquet file, keeping the first chunk's column types."""

    def __init__(self, path: Path):
        self.path, self.parquet, self.schema = path, path.suffix.lower() != ".csv", None
        self.writer: pq.ParquetWriter | None = None
        self.wrote_header = False

    def __enter__(self) -> TableWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.writer is not None:
            self.writer.close()

    def write(self, frame: pd.DataFrame) -> None:
        if not self.parquet:
            frame.to_csv(self.path, mode="a", header=not self.wrote_header, index=False)
            self.wrote_header = True
            return
        table = pa.Table.from_pandas(frame, preserve_index=False)
        if self.writer is None:
            self.schema = table.schema
            self.writer = pq.ParquetWriter(self.path, self.schema)
        try:
            self.writer.write_table(table.cast(self.schema))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as error:
            raise ForgeError(f"a column changes type between chunks of the input: {error}") from None
