"""Fitting the preprocessing on the train split only; the result is `preprocessor.json`.

JSON, never pickle: the spec is read by training, evaluation, batch prediction and the serving
handler (through transform.py), and a person can read it.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np
import pandas as pd

from forgeml.data.checks import DEFAULT_RULES, TableSchema, TypeRules
from forgeml.data.transform import (
    category_column,
    decode_image,
    feature_width,
    image_pixels,
    parse_datetime,
    tokenize,
)

FORMAT = "forgeml.preprocessor/1"
# Pillow modes of single-channel images: a data set of them only is encoded in one channel
GREY_MODES = frozenset({"1", "L", "LA", "I", "I;16", "F"})


def fit_preprocessor(
    train: pd.DataFrame, schema: TableSchema, rules: TypeRules = DEFAULT_RULES
) -> dict[str, Any]:
    """Medians, means, standard deviations, ranges, categories, year scales, vocabularies, image
    statistics and labels from `train`."""
    features = {name: FITTERS[kind](train[name], rules) for name, kind in schema.features.items()}
    if schema.task == "classification":
        return make_spec(schema, features, {"labels": sorted_labels(train[schema.target])})
    target = train[schema.target].to_numpy(dtype=np.float64)
    return make_spec(schema, features, target_scale(float(target.mean()), float(target.std())))


def make_spec(
    schema: TableSchema, features: dict[str, dict[str, Any]], target: dict[str, Any]
) -> dict[str, Any]:
    """The preprocessor.json document from fitted feature entries (in column order) and the target's
    labels or scale: the one place its layout is written (the streaming prepare uses it too)."""
    entries = [{"name": name, **entry} for name, entry in features.items()]
    return {
        "format": FORMAT,
        "task": schema.task,
        "target": schema.target,
        "features": entries,
        "input_dim": sum(feature_width(f) for f in entries),
        **target,
    }


def numeric_entry(
    fill: float, mean: float, std: float, low: float | None, high: float | None
) -> dict[str, Any]:
    # a constant column (a blank pixel) keeps std 1 so it standardises to zero, not NaN
    return {"type": "numeric", "fill": fill, "mean": mean, "std": std or 1.0, "min": low, "max": high}


def categorical_entry(categories: list[str]) -> dict[str, Any]:
    return {"type": "categorical", "categories": categories}


def target_scale(mean: float, std: float) -> dict[str, float]:
    return {"target_mean": mean, "target_std": std or 1.0}


def feature_columns(frame: pd.DataFrame, spec: dict[str, Any]) -> dict[str, np.ndarray]:
    """The columns transform.encode_features expects: floats with NaN, or objects with None
    (datetime and text features: their text)."""
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


def _fit_image(column: pd.Series, rules: TypeRules) -> dict[str, Any]:
    """Size (`rules.image_size`, or the most common one), channels (1 when every image is grey,
    else 3) and per-channel pixel mean and std, summed image by image so that the decoded split
    is never held whole."""
    images = [decode_image(value) for value in column.dropna()]
    size = rules.image_size
    if size is None:
        size = Counter((image.height, image.width) for image in images).most_common(1)[0][0]
    channels = 1 if all(image.mode in GREY_MODES for image in images) else 3
    entry = {"type": "image", "size": [int(size[0]), int(size[1])], "channels": channels}
    total, squares = np.zeros(channels), np.zeros(channels)
    for image in images:
        pixels = image_pixels(entry, image).astype(np.float64)
        total += pixels.mean(axis=(1, 2))
        squares += (pixels**2).mean(axis=(1, 2))
    mean = total / len(images)
    std = np.sqrt(np.maximum(squares / len(images) - mean**2, 0.0))
    # a blank channel keeps std 1, as a constant numeric column does
    return {**entry, "mean": mean.tolist(), "std": [float(s) or 1.0 for s in std]}


def _fit_numeric(column: pd.Series, rules: TypeRules | None = None) -> dict[str, Any]:
    values = column.to_numpy(dtype=np.float64)
    present = values[~np.isnan(values)]
    fill = float(np.median(present)) if len(present) else 0.0
    filled = np.where(np.isnan(values), fill, values)
    low, high = (float(present.min()), float(present.max())) if len(present) else (None, None)
    return numeric_entry(fill, float(filled.mean()), float(filled.std()), low, high)


def _fit_categorical(column: pd.Series, rules: TypeRules | None = None) -> dict[str, Any]:
    return categorical_entry(
        np.unique(category_column(column.to_numpy(dtype=object, na_value=None))).tolist()
    )


def _fit_datetime(column: pd.Series, rules: TypeRules) -> dict[str, Any]:
    """The year's mean and spread (the cyclic features need no fitting) and the forced format."""
    times = [parse_datetime(v, rules.date_format) for v in column.to_numpy(dtype=object, na_value=None)]
    years = np.array([t.year for t in times if t is not None], dtype=np.float64)
    mean, std = (float(years.mean()), float(years.std())) if len(years) else (2000.0, 1.0)
    return {"type": "datetime", "format": rules.date_format, "year_mean": mean, "year_std": std or 1.0}


def _fit_text(column: pd.Series, rules: TypeRules) -> dict[str, Any]:
    """The `vocab_size` most frequent tokens of the train split (ties: alphabetical, so a
    refit on the same data gives the same ids)."""
    counts = Counter(t for v in column.to_numpy(dtype=object, na_value=None) for t in tokenize(v))
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))[: rules.vocab_size]
    return {"type": "text", "max_tokens": rules.max_tokens, "vocabulary": [token for token, _ in ranked]}


# feature type -> (train column, rules) -> its preprocessor.json entry (less the name)
FITTERS = {
    "numeric": _fit_numeric,
    "categorical": _fit_categorical,
    "datetime": _fit_datetime,
    "text": _fit_text,
    "image": _fit_image,
}


def sorted_labels(values: pd.Series | list[Any]) -> list[Any]:
    """Distinct labels as JSON values, sorted by their string form (see transform.encode_labels)."""
    labels = pd.unique(pd.Series(values))
    native = [label.item() if hasattr(label, "item") else label for label in labels]
    if all(isinstance(label, float) and label.is_integer() for label in native):
        native = [int(label) for label in native]
    return sorted(native, key=str)
