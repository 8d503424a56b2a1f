"""The reference profile: per-feature distribution sketches of the train split.

Written by `prepare` as `reference_profile.json`; drift checks compare live traffic against it
without re-reading the training data. Numeric features keep decile bin edges with counts (for PSI
and binned distances) and summary statistics; categoricals keep their frequencies.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from forgeml.data.checks import TableSchema
from forgeml.data.transform import category_column
from forgeml.monitoring.signals import SIGNALS, derived_columns

FORMAT = "forgeml.reference_profile/1"
QUANTILES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)
BINS = 10


def build_profile(train: pd.DataFrame, schema: TableSchema) -> dict[str, Any]:
    """Sketches of each feature; a feature of a type in signals.SIGNALS (an image) is sketched
    through its numeric signals, listed under `signals` (feature -> type and columns)."""
    typed = {name: {"type": kind} for name, kind in schema.features.items() if kind in SIGNALS}
    derived = derived_columns(train[list(schema.features)], typed)
    features = {  # a signal is numeric
        name: _numeric_sketch(column)
        if schema.features.get(name, "numeric") == "numeric"
        else _categorical_sketch(column)
        for name, column in derived.items()
    }
    signals = {
        name: {**feature, "columns": [c for c in derived.columns if c.startswith(f"{name}.")]}
        for name, feature in typed.items()
    }
    target = train[schema.target]
    target_sketch = (
        _categorical_sketch(target) if schema.task == "classification" else _numeric_sketch(target)
    )
    return {
        "format": FORMAT,
        "rows": len(train),
        "task": schema.task,
        "features": features,
        "signals": signals,
        "target": {"name": schema.target, **target_sketch},
    }


def _numeric_sketch(column: pd.Series) -> dict[str, Any]:
    values = column.to_numpy(dtype=np.float64)
    present = values[~np.isnan(values)]
    if len(present) == 0:
        return {"type": "numeric", "count": 0, "missing": len(values)}
    edges = np.unique(np.quantile(present, np.linspace(0, 1, BINS + 1)))
    if len(edges) < 2:
        edges = np.array([present[0] - 0.5, present[0] + 0.5])
    counts, _ = np.histogram(present, bins=edges)
    return {
        "type": "numeric",
        "count": len(present),
        "missing": int(len(values) - len(present)),
        "mean": float(present.mean()),
        "std": float(present.std()),
        "min": float(present.min()),
        "max": float(present.max()),
        "quantiles": dict(zip(map(str, QUANTILES), np.quantile(present, QUANTILES).tolist(), strict=True)),
        "bin_edges": edges.tolist(),
        "bin_counts": counts.tolist(),
    }


def _categorical_sketch(column: pd.Series) -> dict[str, Any]:
    categories, counts = np.unique(
        category_column(column.to_numpy(dtype=object, na_value=None)), return_counts=True
    )
    return {
        "type": "categorical",
        "count": int(counts.sum()),
        "frequencies": dict(zip(categories.tolist(), counts.tolist(), strict=True)),
    }
