"""Drift signals of the typed features: columns that the numeric and categorical tests can
compare, derived from a datetime or text feature's raw values.

    datetime  <name>:timestamp      numeric, seconds since 1970 (a value that does not parse
                                    counts as missing, which the missing-share test watches)
    text      <name>:length         numeric, tokens per text
              <name>:unknown_share  numeric, share of the tokens outside the vocabulary
              <name>:tokens         tokens: each row's vocabulary tokens (UNKNOWN_TOKEN for the
                                    others); the distribution of all of them (Jensen-Shannon)
    image     <name>:brightness     numeric, mean grey level in [0, 1]
              <name>:contrast       numeric, standard deviation of the grey levels
              <name>:width, :height numeric, the size as received
                                    (the inference log holds these, never the image's bytes)

`prepare` profiles them on the train split and `forgeml monitor` derives them again from the
train split and from the current data, with this one module. SIGNALS maps a feature type to
its derivation: (preprocessor.json entry, raw values) -> {column: (kind, values per row)}.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import pandas as pd

from forgeml.data.transform import MISSING_CATEGORY, image_signals, is_missing, parse_datetime, tokenize

# stands for every token outside the vocabulary; "<" is a token of its own, so no text holds it
UNKNOWN_TOKEN = "<unknown>"
EPOCH = pd.Timestamp("1970-01-01")

Signals = dict[str, tuple[str, np.ndarray]]


def datetime_signals(feature: Mapping[str, Any], raw: Any) -> Signals:
    return {f"{feature['name']}:timestamp": ("numeric", np.array([_seconds(feature, v) for v in raw]))}


def _seconds(feature: Mapping[str, Any], value: Any) -> float:
    try:
        moment = parse_datetime(value, feature.get("format"))
    except ValueError:
        return np.nan
    return np.nan if moment is None else (pd.Timestamp(moment) - EPOCH).total_seconds()


def text_signals(feature: Mapping[str, Any], raw: Any) -> Signals:
    vocabulary = frozenset(feature["vocabulary"])
    texts = [None if is_missing(v) else tokenize(v) for v in raw]
    lengths = np.array([np.nan if t is None else len(t) for t in texts], dtype=np.float64)
    unknown = np.array(
        [np.nan if not t else sum(token not in vocabulary for token in t) / len(t) for t in texts]
    )
    tokens = np.array(
        [None if t is None else " ".join(x if x in vocabulary else UNKNOWN_TOKEN for x in t) for t in texts],
        dtype=object,
    )
    name = feature["name"]
    return {
        f"{name}:length": ("numeric", lengths),
        f"{name}:unknown_share": ("numeric", unknown.astype(np.float64)),
        f"{name}:tokens": ("tokens", tokens),
    }


IMAGE_SIGNALS = ("brightness", "contrast", "width", "height")


def image_feature_signals(feature: Mapping[str, Any], raw: Any) -> Signals:
    """Brightness, contrast, width and height of each image (transform.image_signals): from its
    bytes (the train split) or as the handler logged them in its place (a dict); NaN where
    missing."""
    rows = [
        value if isinstance(value, Mapping) else {} if is_missing(value) else image_signals(value)
        for value in raw
    ]
    return {
        f"{feature['name']}:{signal}": (
            "numeric",
            np.array([row.get(signal, np.nan) for row in rows], dtype=np.float64),
        )
        for signal in IMAGE_SIGNALS
    }


SIGNALS: dict[str, Callable[[Mapping[str, Any], Any], Signals]] = {
    "datetime": datetime_signals,
    "text": text_signals,
    "image": image_feature_signals,
}


def with_signals(frame: pd.DataFrame, spec: Mapping[str, Any]) -> tuple[pd.DataFrame, dict[str, str]]:
    """`frame` plus the signal columns of its typed features (those it holds), and the kind of
    every column drift tests: plain features as they are, typed ones replaced by their signals."""
    kinds: dict[str, str] = {}
    added: dict[str, np.ndarray] = {}
    for feature in spec["features"]:
        derive = SIGNALS.get(feature["type"])
        if derive is None:
            kinds[feature["name"]] = feature["type"]
            continue
        # missing values (pandas' NA in a string column) as None, which every signal reads as missing
        name = feature["name"]
        raw = frame[name].to_numpy(dtype=object, na_value=None) if name in frame else None
        for column, (kind, values) in derive(feature, [] if raw is None else raw).items():
            kinds[column] = kind
            if raw is not None:
                added[column] = values
    return frame.assign(**added), kinds


def count_tokens(values: Any) -> pd.Series:
    """Counts per token over all rows of a `tokens` column; missing rows under MISSING_CATEGORY."""
    column = pd.Series(values, dtype=object)
    present = column.dropna()
    counts = present.str.split().explode().dropna().value_counts()
    return pd.concat([counts, pd.Series({MISSING_CATEGORY: int(column.isna().sum())})]).astype(np.int64)
