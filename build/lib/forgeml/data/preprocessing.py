"""Fitting the preprocessing on the train split only; the result is `preprocessor.json`.

JSON, never pickle: the spec is read by training, evaluation, batch prediction and the serving
handler (through transform.py), and a person can read it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from forgeml.data.checks import TableSchema
from forgeml.data.transform import category_column

FORMAT = "forgeml.preprocessor/1"


def fit_preprocessor(train: pd.DataFrame, schema: TableSchema) -> dict[str, Any]:
    """Medians, means, standard deviations, ranges, categories and labels from `train`."""
    features = [
        _fit_numeric(train[name]) if kind == "numeric" else _fit_categorical(train[name])
        for name, kind in schema.features.items()
    ]
    for spec, name in zip(features, schema.features, strict=True):
        spec["name"] = name
    spec: dict[str, Any] = {
        "format": FORMAT,
        "task": schema.task,
        "target": schema.target,
        "features": [{"name": f.pop("name"), **f} for f in features],
        "input_dim": sum(1 if f["type"] == "numeric" else len(f["categories"]) for f in features),
    }
    if schema.task == "classification":
        spec["labels"] = _sorted_labels(train[schema.target])
    else:
        target = train[schema.target].to_numpy(dtype=np.float64)
        spec["target_mean"] = float(target.mean())
        spec["target_std"] = float(target.std()) or 1.0
    return spec


def feature_columns(frame: pd.DataFrame, spec: dict[str, Any]) -> dict[str, np.ndarray]:
    """The columns transform.encode_features expects: floats with NaN, or objects with None."""
    columns = {}
    for feature in spec["features"]:
        column = frame[feature["name"]]
        if feature["type"] == "numeric":
            columns[feature["name"]] = pd.to_numeric(column, errors="coerce").to_numpy(np.float64)
        else:
            columns[feature["name"]] = column.astype(object).to_numpy(dtype=object, na_value=None)
    return columns


def output_dim(spec: dict[str, Any]) -> int:
    return len(spec["labels"]) if spec["task"] == "classification" else 1


def _fit_numeric(column: pd.Series) -> dict[str, Any]:
    values = column.to_numpy(dtype=np.float64)
    present = values[~np.isnan(values)]
    fill = float(np.median(present)) if len(present) else 0.0
    filled = np.where(np.isnan(values), fill, values)
    return {
        "type": "numeric",
        "fill": fill,
        "mean": float(filled.mean()),
        # a constant column (a blank pixel) keeps std 1 so it standardises to zero, not NaN
        "std": float(filled.std()) or 1.0,
        "min": float(present.min()) if len(present) else None,
        "max": float(present.max()) if len(present) else None,
    }


def _fit_categorical(column: pd.Series) -> dict[str, Any]:
    categories = np.unique(category_column(column.to_numpy(dtype=object, na_value=None)))
    return {"type": "categorical", "categories": categories.tolist()}


def _sorted_labels(target: pd.Series) -> list[Any]:
    """Distinct labels as JSON values, sorted by their string form (see transform.encode_labels)."""
    labels = pd.unique(target)
    native = [label.item() if hasattr(label, "item") else label for label in labels]
    if all(isinstance(label, float) and label.is_integer() for label in native):
        native = [int(label) for label in native]
    return sorted(native, key=str)
