"""Numeric signals derived from typed features: drift is tested on them where the raw value
cannot be compared as it is (an image's bytes).

`SIGNALS` maps a feature type to its function (feature spec, raw values) -> {signal: float
array}. `prepare` profiles the train split's signals as numeric features named
`<feature>.<signal>` and records which feature they come from in the reference profile's
`signals`; `forgeml monitor` derives the same columns from the inference log and tests them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import pandas as pd

from forgeml.data.transform import image_signals

IMAGE_SIGNALS = ("brightness", "contrast", "width", "height")


def image_feature_signals(feature: Mapping[str, Any], values: Any) -> dict[str, np.ndarray]:
    """Brightness, contrast, width and height of each image (transform.image_signals): from its
    bytes (the train split) or as the handler logged them in its place (a dict); NaN where
    missing."""
    rows = [
        value if isinstance(value, Mapping) else image_signals(value) if value is not None else {}
        for value in values
    ]
    return {
        signal: np.array([row.get(signal, np.nan) for row in rows], dtype=np.float64)
        for signal in IMAGE_SIGNALS
    }


SIGNALS: dict[str, Callable[[Mapping[str, Any], Any], dict[str, np.ndarray]]] = {
    "image": image_feature_signals
}


def derived_columns(frame: pd.DataFrame, features: Mapping[str, Mapping[str, Any]]) -> pd.DataFrame:
    """`frame` with each feature in `features` (name -> spec with its `type`) replaced by its
    signal columns `<name>.<signal>`; a feature absent from `frame` is all missing."""
    derived = {}
    for name, feature in features.items():
        values = frame[name].to_numpy(dtype=object) if name in frame.columns else [None] * len(frame)
        for signal, column in SIGNALS[feature["type"]](feature, values).items():
            derived[f"{name}.{signal}"] = column
    return frame.drop(columns=[n for n in features if n in frame.columns]).assign(**derived)
