"""The reference profile: per-feature distribution sketches of the train split.

Written by `prepare` as `reference_profile.json`; drift checks compare live traffic against it
without re-reading the training data. Numeric features keep decile bin edges with counts (for PSI
and binned distances) and summary statistics; categoricals keep their frequencies. Datetime and
text features are profiled through their drift signals (monitoring/signals.py); a `tokens`
signal keeps the frequency of each token over all rows.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from forgeml.data.checks import TableSchema
from forgeml.data.transform import category_column
from forgeml.monitoring.signals import count_tokens

if TYPE_CHECKING:
    from forgeml.data.streaming import TrainStatistics

FORMAT = "forgeml.reference_profile/1"
QUANTILES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)
BINS = 10


def build_profile(train: pd.DataFrame, schema: TableSchema) -> dict[str, Any]:
    """`schema.features`: every drift-tested column and its kind (signals.with_signals)."""
    features = {name: SKETCHES[kind](train[name]) for name, kind in schema.features.items()}
    target = train[schema.target]
    target_sketch = (
        _categorical_sketch(target) if schema.task == "classification" else _numeric_sketch(target)
    )
    return {
        "format": FORMAT,
        "rows": len(train),
        "task": schema.task,
        "features": features,
        "target": {"name": schema.target, **target_sketch},
    }


def streamed_profile(statistics: TrainStatistics) -> dict[str, Any]:
    """The profile of a train split read in batches: quantiles and bins of its sample; counts,
    frequencies and moments exact over all its rows."""
    sample = statistics.sample.table.to_pandas()
    schema = statistics.schema
    profile = build_profile(sample, schema)
    profile["rows"] = statistics.rows
    profile["sample_rows"] = len(sample)
    for name, sketch in profile["features"].items():
        if name in statistics.counts:
            sketch.update(statistics.frequencies(name))
        else:
            _exact_moments(sketch, statistics.summary(name))
    if schema.task == "classification":
        profile["target"].update(statistics.frequencies(schema.target))
    else:
        _exact_moments(profile["target"], statistics.summary(schema.target))
    return profile


def _exact_moments(sketch: dict[str, Any], summary: dict[str, Any]) -> None:
    """A numeric sketch's count and missing count, and its moments where the sample had values
    to sketch (a column missing from the whole sample has none to replace)."""
    sketch.update(summary if "mean" in sketch else {key: summary[key] for key in ("count", "missing")})


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


def _tokens_sketch(column: pd.Series) -> dict[str, Any]:
    counts = count_tokens(column.to_numpy(dtype=object))
    return {"type": "tokens", "count": int(counts.sum()), "frequencies": counts.to_dict()}


SKETCHES = {"numeric": _numeric_sketch, "categorical": _categorical_sketch, "tokens": _tokens_sketch}
