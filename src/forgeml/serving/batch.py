"""Batch inference: a CSV or Parquet table in, the same table with predictions out.

The input is read and scored in chunks of rows, so a file larger than memory works; each chunk
is encoded by transform.py (the arithmetic training and the serving handler use) and scored by
the exported program in one call. A row that cannot be scored gets no prediction and is
reported by its row number (1-based, header excluded), never dropped: a numeric feature that is
not a number, or too extreme for the model (transform.overflowing_features), or a CSV row with
fewer fields than the header (its missing cells are not imputed), an image file that is
missing or does not decode. The output's `error` column says why ("age: not a number:
'unknown'"); it is empty for a scored row. An image column holds paths relative to the input file (or, in
Parquet, the images' bytes).

The input's columns are written as they were read, bad cells included: the model's features
are checked and converted into separate arrays for the model, never into the table. Their
types therefore come from the input file as a whole, not from each chunk (Parquet needs one
schema, and a chunk's inferred type differs from the next one's): CSV cells are read as text
(tables.read_frames), so a CSV output holds the input's text; a Parquet output takes a Parquet
input's own types, or for a CSV input the narrowest type that holds every cell of the column,
found by one extra pass over the file (input_types): integers stay integers, and a
column with a cell that is not a number is text. `prediction` has the labels' type,
probabilities are float32. An empty file, a row with more fields than the header and bytes
that are not UTF-8 are errors naming the file and row; the output is written atomically.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import torch

from forgeml.contract import probability_column
from forgeml.data.sources import read_image_file
from forgeml.data.transform import (
    decode_image,
    encode_features,
    overflowing_features,
    parses_as_datetime,
    predicted_classes,
)
from forgeml.errors import ForgeError
from forgeml.io import atomic_path
from forgeml.models.artifact import ModelArtifact
from forgeml.tables import PARQUET, TableWriter, narrowest_types, parquet_types, read_frames, table_format

CHUNK_ROWS = 65_536
MAX_REPORTED_ROWS = 100
# the output column saying why a row got no prediction
ERROR_COLUMN = "error"


class RowErrors:
    """Why each row of a chunk gets no prediction (None: it gets one): the field at fault (None
    for the model's own output) and the reason, the first found for the row."""

    def __init__(self, rows: int):
        self.fields = np.full(rows, None, dtype=object)
        self.reasons = np.full(rows, None, dtype=object)

    def valid(self) -> np.ndarray:
        """Rows without an error so far."""
        return np.equal(self.reasons, None)

    def add(self, positions: np.ndarray, field: str | None, reasons: list[str]) -> None:
        """Rows at `positions` of the chunk (without an error so far) cannot be scored."""
        self.fields[positions] = field
        self.reasons[positions] = reasons

    def column(self) -> np.ndarray:
        """The error column: "<field>: <reason>", or the reason alone, None for a scored row."""
        column = np.full(len(self.reasons), None, dtype=object)
        for at in np.flatnonzero(~self.valid()):
            field, reason = self.fields[at], self.reasons[at]
            column[at] = reason if field is None else f"{field}: {reason}"
        return column


@dataclass
class BadRows:
    """Rows that got no prediction: how many, and the first ones with their reason."""

    count: int = 0
    first: list[dict[str, Any]] = field(default_factory=list)

    def add(self, errors: RowErrors, first_row: int) -> None:
        """The chunk's rows with an error, its rows numbered from `first_row`."""
        positions = np.flatnonzero(~errors.valid())
        self.count += len(positions)
        room = MAX_REPORTED_ROWS - len(self.first)
        self.first += [
            {"row": first_row + int(at), "field": errors.fields[at], "error": errors.reasons[at]}
            for at in positions[:room]
        ]


def predict_file(
    artifact: ModelArtifact,
    source: str | Path,
    target: str | Path,
    chunk_rows: int = CHUNK_ROWS,
    decision: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Score every row of `source` into `target` (written atomically); returns a summary.
    `decision`: a binary model's decision threshold, which the predicted class follows."""
    source, target = Path(source), Path(target)
    table_format(source, key="input")  # a table by its suffix, or an error naming it
    table_format(target, key="output")
    if not source.is_file():
        raise ForgeError(f"input file {source} not found")
    bad, rows = BadRows(), 0
    # a CSV output holds text, whatever the types
    types = input_types(source, chunk_rows) if table_format(target) == PARQUET else {}
    with atomic_path(target) as tmp, TableWriter(tmp, types | output_types(artifact.spec)) as writer:
        for chunk, short in read_chunks(source, chunk_rows):
            check_columns(chunk, artifact.spec, source)
            errors = RowErrors(len(chunk))
            writer.write(predict_chunk(artifact, chunk, rows + 1, errors, short, decision, source.parent))
            bad.add(errors, rows + 1)
            rows += len(chunk)
    return {
        "input": str(source),
        "output": str(target),
        "rows": rows,
        "bad_rows": bad.count,
        "bad_row_examples": bad.first,
    }


def input_types(source: Path, chunk_rows: int) -> dict[str, pa.DataType]:
    """The input columns' types, for a Parquet output's one schema: a Parquet input's own; for
    a CSV input the narrowest type holding every cell of the column, found in a pass over the
    file before any is written (a file that cannot be read is refused naming its row)."""
    if table_format(source) == PARQUET:
        return parquet_types(source)
    try:
        return narrowest_types(read_frames(source, chunk_rows))
    except ForgeError:
        CsvShape(source).check_rest()
        raise


def predict_chunk(
    artifact: ModelArtifact,
    chunk: pd.DataFrame,
    first_row: int,
    errors: RowErrors,
    short: dict[int, str] | None = None,
    decision: dict[str, Any] | None = None,
    base: Path = Path(),
) -> pd.DataFrame:
    """The chunk as read plus its prediction columns and its error column; `errors` collects
    why rows get no prediction; `first_row`: the number of the chunk's first row; `short`:
    {row: first missing column} of CSV rows lacking fields; `base`: the folder image paths are
    relative to."""
    spec = artifact.spec
    for row, column in (short or {}).items():
        errors.add(np.array([row - first_row]), column, ["the row has fewer fields than the header"])
    columns = feature_columns(chunk, spec, errors, base)
    scores = np.full((len(chunk), *output_shape(artifact)), np.nan, dtype=np.float32)
    valid = errors.valid()
    if valid.any():
        rows = np.flatnonzero(valid)
        inputs = encode_features(spec, {n: c[valid] for n, c in columns.items()})
        with torch.inference_mode():
            scores[rows] = artifact.program(torch.from_numpy(inputs)).numpy()
        overflow = overflowing_features(spec, inputs)
        # overflow inside the model's arithmetic too: no NaN is ever written as a prediction
        not_finite = ~np.isfinite(scores[rows].reshape(len(rows), -1)).all(axis=1)
        report_incomputable(errors, chunk, spec, rows, overflow, not_finite)
        valid = errors.valid()
        scores[~valid] = np.nan
    outputs = prediction_columns(spec, scores, valid, decision)
    return with_columns(chunk, {**outputs, ERROR_COLUMN: errors.column()})


def with_columns(chunk: pd.DataFrame, columns: dict[str, Any]) -> pd.DataFrame:
    """`chunk` with `columns` in place of its own or appended, as DataFrame.assign orders them,
    built in one concatenation: assign inserts one column at a time, which pandas warns about
    (PerformanceWarning) on a wide table."""
    added = pd.DataFrame(columns, index=chunk.index)
    order = [*chunk.columns, *(name for name in added.columns if name not in chunk.columns)]
    kept = chunk.drop(columns=[name for name in added.columns if name in chunk.columns])
    return pd.concat([kept, added], axis=1)[order]


def feature_columns(
    chunk: pd.DataFrame, spec: dict[str, Any], errors: RowErrors, base: Path = Path()
) -> dict[str, np.ndarray]:
    """The columns encode_features expects, converted from the chunk's cells (which stay as
    they are); rows that cannot be scored are added to `errors`."""
    columns = {}
    for feature in spec["features"]:
        raw = chunk[feature["name"]]
        if feature["type"] == "numeric":
            numbers = pd.to_numeric(raw, errors="coerce").to_numpy(np.float64, na_value=np.nan)
            # present but not a (finite) number: a bad row, not a missing value to impute
            wrong = (np.isnan(numbers) & raw.notna().to_numpy()) | np.isinf(numbers)
            report(errors, wrong, feature["name"], raw, "not a number")
            columns[feature["name"]] = numbers
        elif feature["type"] == "image":
            columns[feature["name"]] = image_column(raw, base, errors, feature["name"])
        else:
            columns[feature["name"]] = raw.astype(object).to_numpy(dtype=object, na_value=None)
        if feature["type"] == "datetime":
            wrong = ~np.array(
                [parses_as_datetime(v, feature.get("format")) for v in columns[feature["name"]]], dtype=bool
            )
            report(errors, wrong, feature["name"], raw, "not a date")
    return columns


def image_column(raw: pd.Series, base: Path, errors: RowErrors, name: str) -> np.ndarray:
    """The images' bytes, read from the paths in `raw` (relative to `base`); a file that is
    missing or does not decode is a bad row."""
    images = np.full(len(raw), None, dtype=object)
    valid = errors.valid()
    for row, value in enumerate(raw.to_numpy(dtype=object)):
        if value is None or value != value or not valid[row]:
            continue
        try:
            if isinstance(value, bytes):
                images[row] = value if decode_image(value) else None
            else:
                images[row] = read_image_file(base / str(value))
        except (ForgeError, ValueError) as error:
            errors.add(np.array([row]), name, [str(error)])
    return images


def report_incomputable(
    errors: RowErrors,
    chunk: pd.DataFrame,
    spec: dict[str, Any],
    positions: np.ndarray,
    overflow: np.ndarray,
    not_finite: np.ndarray,
) -> None:
    """Report the scored rows (at `positions` of the chunk) the model could not compute:
    `overflow` is the feature each overflows at (transform.overflowing_features), or -1."""
    for index in np.unique(overflow[overflow >= 0]).tolist():
        name = spec["features"][index]["name"]
        at = positions[overflow == index]
        values = chunk[name].to_numpy(dtype=object)[at]
        errors.add(at, name, [f"too extreme for the model (overflows float32): {v!r}" for v in values])
    at = positions[not_finite & (overflow < 0)]
    if len(at):
        errors.add(at, None, ["the model's output is not finite"] * len(at))


def report(errors: RowErrors, wrong: np.ndarray, feature: str, raw: pd.Series, what: str) -> None:
    """Rows `wrong` in `feature` (those without an earlier error) cannot be scored: `what`."""
    rows = np.flatnonzero(wrong & errors.valid())
    if len(rows):
        values = raw.to_numpy(dtype=object)[rows]
        errors.add(rows, feature, [f"{what}: {value!r}" for value in values])


def output_types(spec: dict[str, Any]) -> dict[str, pa.DataType]:
    """The Arrow types of the columns predict adds, from the model alone."""
    if spec["task"] == "regression":
        return {"prediction": pa.float32(), ERROR_COLUMN: pa.string()}
    probabilities = {probability_column(label): pa.float32() for label in spec["labels"]}
    return {"prediction": pa.array(spec["labels"]).type, **probabilities, ERROR_COLUMN: pa.string()}


def output_shape(artifact: ModelArtifact) -> tuple[int, ...]:
    spec = artifact.spec
    return (len(spec["labels"]),) if spec["task"] == "classification" else ()


def prediction_columns(
    spec: dict[str, Any], scores: np.ndarray, valid: np.ndarray, decision: dict[str, Any] | None = None
) -> dict[str, Any]:
    if spec["task"] == "regression":
        return {"prediction": scores}
    labels = np.asarray(spec["labels"], dtype=object)
    decided = predicted_classes(np.nan_to_num(scores), decision)
    predicted = np.where(valid, labels[decided], None)
    probabilities = {probability_column(label): scores[:, i] for i, label in enumerate(spec["labels"])}
    return {"prediction": predicted, **probabilities}


def check_columns(chunk: pd.DataFrame, spec: dict[str, Any], source: Path) -> None:
    missing = [f["name"] for f in spec["features"] if f["name"] not in chunk.columns]
    if missing:
        raise ForgeError(f"{source} lacks the model's feature column(s): {', '.join(missing)}")


def read_chunks(source: Path, chunk_rows: int) -> Iterator[tuple[pd.DataFrame, dict[int, str]]]:
    """(chunk, {row: first missing column} of its rows with fewer fields than the header)."""
    if table_format(source) == PARQUET:
        for chunk in read_frames(source, chunk_rows):
            yield chunk, {}
        return
    shapes = CsvShape(source)
    try:
        for chunk in read_frames(source, chunk_rows):
            yield chunk, shapes.short_rows(len(chunk))
    except ForgeError:
        shapes.check_rest()
        raise
    finally:
        shapes.file.close()


class CsvShape:
    """A second reading of a CSV file with the standard library's (C) parser, in step with
    pandas' chunks: pandas fills a row with too few fields with missing values, which would
    be imputed, and its errors for a long row or bad bytes name no row."""

    def __init__(self, source: Path):
        self.source, self.row, self.counted = source, 0, 0
        # pandas reads fields of any length; the standard parser's default cap is 128 KiB
        csv.field_size_limit(max(csv.field_size_limit(), 2**31 - 1))
        self.file = open(source, "rb")  # noqa: SIM115 (closed by check_rest or read_chunks)
        # decoded line by line, so that bad bytes are found in their row, not in a buffer
        self.rows = csv.reader(line.decode("utf-8") for line in self.file)
        self.header = self.next_fields() or []

    def next_fields(self) -> list[str] | None:
        try:
            fields = next(self.rows, None)
            while fields == []:  # blank lines, which pandas skips as well
                fields = next(self.rows, None)
        except UnicodeDecodeError:
            raise ForgeError(f"{self.source}, row {self.row + 1}: not UTF-8 text") from None
        except csv.Error as error:
            raise ForgeError(f"{self.source}, row {self.row + 1}: {error}") from None
        if fields is None:
            self.file.close()
        return fields

    def short_rows(self, count: int | None) -> dict[int, str]:
        """The next `count` rows (None: all): {row: first missing column} of the short ones;
        ForgeError naming the first row with more fields than the header."""
        short = {}
        while count is None or self.row < self.counted + count:
            fields = self.next_fields()
            if fields is None:
                break
            self.row += 1
            if len(fields) > len(self.header):
                raise ForgeError(
                    f"{self.source}, row {self.row}: {len(fields)} fields, the header has {len(self.header)}"
                )
            if len(fields) < len(self.header):
                short[self.row] = self.header[len(fields)]
        self.counted = self.row
        return short

    def check_rest(self) -> None:
        """The rows not read yet, checked, then the file closed: where pandas could not read
        the file, this names the row, if the reason is a row's shape or bytes."""
        try:
            self.short_rows(None)
        finally:
            self.file.close()
