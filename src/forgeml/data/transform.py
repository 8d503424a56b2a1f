"""The fitted preprocessing, applied: raw feature columns -> the model's float32 input matrix.

This module imports numpy and the standard library only. It is used by training, evaluation and
batch prediction, and ships unchanged inside every model archive so the serving handler applies
exactly the same arithmetic. The spec it reads is `preprocessor.json` (see preprocessing.py).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping, Sequence
from itertools import groupby
from typing import Any

import numpy as np

MISSING_CATEGORY = "__missing__"
# the largest magnitude a standardised value may have: beyond it, float32 holds inf
FLOAT32_MAX = float(np.finfo(np.float32).max)


def numeric_column(values: Sequence[Any] | np.ndarray) -> np.ndarray:
    """float64 column with NaN for missing (None) values; raises ValueError on non-numbers."""
    return np.asarray(values, dtype=np.float64)


def category_column(values: Sequence[Any] | np.ndarray) -> np.ndarray:
    """str column with missing values (None, NaN) as their own category."""
    column = np.asarray(values, dtype=object)
    missing = np.equal(column, None) | np.not_equal(column, column)
    column = column.copy()
    column[missing] = MISSING_CATEGORY
    return column.astype(str)


def lookup(sorted_values: np.ndarray, column: np.ndarray) -> np.ndarray:
    """Index of each value in `sorted_values`, -1 where absent (vectorised binary search)."""
    if len(sorted_values) == 0:
        return np.full(len(column), -1, dtype=np.int64)
    position = np.searchsorted(sorted_values, column).clip(0, len(sorted_values) - 1)
    return np.where(sorted_values[position] == column, position, -1)


def standardise(feature: Mapping[str, Any], column: np.ndarray) -> np.ndarray:
    """A numeric column, imputed and standardised, in float64 (float32 happens at the end)."""
    column = np.where(np.isnan(column), feature["fill"], column)
    return (column - feature["mean"]) / feature["std"]


def overflowing_features(spec: Mapping[str, Any], inputs: np.ndarray) -> np.ndarray:
    """Per row of `inputs` (encode_features' output), the index in `spec['features']` of its
    first feature that is not finite there, or -1: a finite extreme like 1e300 passes every
    type check, then overflows float32 once standardised and would come out of the model as
    NaN, so the endpoint refuses it and batch prediction reports the row."""
    overflow = np.full(len(inputs), -1, dtype=np.int64)
    beyond = ~np.isfinite(inputs)
    if beyond.any():  # rare: the common case costs one pass over the matrix
        widths = [feature_width(f) for f in spec["features"]]
        owner = np.repeat(np.arange(len(widths)), widths)
        rows = beyond.any(axis=1)
        overflow[rows] = owner[beyond[rows].argmax(axis=1)]
    return overflow


def keyed_hashes(key: bytes, values: Sequence[Any]) -> list[str | None]:
    """HMAC-SHA256 (hex) of each value's text as training's categories spell it (str(value));
    a missing value (None, NaN) stays None. The inference log writes these for `monitor.hash` columns, and
    `forgeml monitor` hashes the reference categories alike, so drift compares hashes."""
    return [
        None
        if value is None or value != value
        else hmac.new(key, str(value).encode("utf-8"), hashlib.sha256).hexdigest()
        for value in values
    ]


def feature_width(feature: Mapping[str, Any]) -> int:
    """How many columns of the model's input matrix one feature fills: every feature type
    encodes to a fixed number of float32 columns, so one matrix stays the contract between
    preprocessing, training, the exported model and the handler."""
    return 1 if feature["type"] == "numeric" else len(feature["categories"])


def encode_numeric(feature: Mapping[str, Any], raw: Any) -> np.ndarray:
    return standardise(feature, numeric_column(raw))[:, None]


def encode_categorical(feature: Mapping[str, Any], raw: Any) -> np.ndarray:
    """One-hot; a value never seen in training is all zeros (the unknown bucket), never an error."""
    categories = np.asarray(feature["categories"], dtype=str)
    index = lookup(categories, category_column(raw))
    one_hot = np.zeros((len(index), len(categories)), dtype=np.float32)
    known = index >= 0
    one_hot[np.flatnonzero(known), index[known]] = 1.0
    return one_hot


# feature type -> its encoder: (feature spec, raw column) -> (rows, feature_width) block
ENCODERS = {"numeric": encode_numeric, "categorical": encode_categorical}


def encode_features(spec: Mapping[str, Any], columns: Mapping[str, Any]) -> np.ndarray:
    """Each feature encoded by its type's encoder, side by side: one row per input row,
    `spec['input_dim']` columns. Missing numerics take the training median.

    Each run of adjacent numeric features is standardised in one vectorised pass, with the
    arithmetic of `standardise`: numpy calls per feature would cost a one-record prediction
    at the endpoint more than the model's forward pass."""
    blocks = []
    for numeric, run in groupby(spec["features"], key=lambda feature: feature["type"] == "numeric"):
        run = list(run)
        if numeric:
            blocks.append(standardise_run(run, columns))
        else:
            blocks += [ENCODERS[f["type"]](f, columns[f["name"]]) for f in run]
    with np.errstate(over="ignore"):  # beyond float32 is inf, which overflowing_features finds
        return np.concatenate(blocks, axis=1).astype(np.float32)


def standardise_run(features: Sequence[Mapping[str, Any]], columns: Mapping[str, Any]) -> np.ndarray:
    """Numeric features side by side, each imputed and standardised as `standardise` does it."""
    matrix = np.stack([numeric_column(columns[f["name"]]) for f in features], axis=1)
    fill, mean, std = (
        np.array([f[key] for f in features], dtype=np.float64) for key in ("fill", "mean", "std")
    )
    return standardise({"fill": fill, "mean": mean, "std": std}, matrix)


def encode_labels(spec: Mapping[str, Any], values: Sequence[Any] | np.ndarray) -> np.ndarray:
    """Class indices for classification targets (-1 for labels unseen in training).

    `spec['labels']` is sorted by its string form, which makes it searchable here.
    """
    return lookup(np.asarray(spec["labels"]).astype(str), np.asarray(values).astype(str))


def label_names(spec: Mapping[str, Any], indices: np.ndarray) -> list[Any]:
    """Back from class indices to the original label values."""
    labels = spec["labels"]
    return [labels[i] for i in indices.tolist()]
