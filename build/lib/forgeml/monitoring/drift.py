"""Drift statistics: is the current data distributed like the training reference?

Per feature the test follows the column type and the reference size, with Evidently's defaults:

    reference rows <= small_reference_rows (1000)   numeric: KS            categorical: chi-squared
                                                    drift when p < p_value (0.05)
    larger reference                                numeric: Wasserstein / reference std
                                                    categorical: Jensen-Shannon distance
                                                    drift when distance >= distance_threshold (0.1)

PSI (reference decile bins for numerics) is reported for every feature. The dataset drifts when
the share of drifted features reaches share_threshold (0.5). Predictions are tested like a feature.

Speed: the reference is summarised once on a grid (its distinct values, or GRID_SIZE quantiles of
a large reference, each followed by the next float so that ties are resolved); each current
column is sorted once (numpy's vectorised sort) and located on that grid, so a feature costs one
sort plus O(grid) work, never per-row Python. The KS statistic is exact whenever the grid holds
every reference value. The Wasserstein distance integrates |F_ref - F_cur| cell by cell from the
count and sum of values in each cell, after splitting each cell where the current CDF crosses the
reference's at the crossing value: exact when the grid holds every reference value, otherwise a
lower bound that is off by far less than the cell widths (GRID_SIZE quantile cells).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import pandas as pd
from scipy import spatial, stats

from forgeml.config import MonitorConfig, plain
from forgeml.data.transform import MISSING_CATEGORY

GRID_SIZE = 4096
PSI_BINS = 10
# an empty bin counts as this share in PSI (as in Evidently), so the logarithm stays finite
PSI_EPSILON = 1e-4
# a constant reference feature normalises its Wasserstein distance by this (as in Evidently)
MIN_STD = 1e-3

P_VALUE_TESTS = frozenset({"ks", "chi2"})
TESTS = {
    "numeric": frozenset({"ks", "wasserstein", "chi2", "jensenshannon", "psi"}),
    "categorical": frozenset({"chi2", "jensenshannon", "psi"}),
}


@dataclass(frozen=True)
class DriftSettings:
    """The knobs of `monitor` that decide tests and verdicts; defaults are MonitorConfig's."""

    numeric_method: str = MonitorConfig.numeric_method.value
    categorical_method: str = MonitorConfig.categorical_method.value
    small_reference_rows: int = MonitorConfig.small_reference_rows
    p_value: float = MonitorConfig.p_value
    distance_threshold: float = MonitorConfig.distance_threshold
    psi_threshold: float = MonitorConfig.psi_threshold
    share_threshold: float = MonitorConfig.share_threshold
    min_samples: int = MonitorConfig.min_samples

    @classmethod
    def from_monitor(cls, monitor: Any) -> DriftSettings:
        """The settings of a `monitor` config node (enum fields as their names)."""
        return cls(**{field.name: plain(monitor[field.name]) for field in fields(cls)})

    def test_for(self, kind: str, reference_rows: int) -> str:
        configured = self.numeric_method if kind == "numeric" else self.categorical_method
        if configured != "auto":
            return configured
        small = reference_rows <= self.small_reference_rows
        if kind == "numeric":
            return "ks" if small else "wasserstein"
        return "chi2" if small else "jensenshannon"

    def threshold_for(self, test: str) -> float:
        if test in P_VALUE_TESTS:
            return self.p_value
        return self.psi_threshold if test == "psi" else self.distance_threshold


@dataclass(frozen=True)
class SortedSample:
    """Finite values of a numeric column, sorted once, with prefix sums for cell sums."""

    values: np.ndarray
    prefix_sums: np.ndarray

    @classmethod
    def of(cls, values: Any) -> SortedSample:
        present = sorted_present(numeric_values(values))
        return cls(present, np.concatenate(([0.0], np.cumsum(present))))

    @property
    def rows(self) -> int:
        return len(self.values)

    def on(self, grid: np.ndarray) -> GridSummary:
        below = np.searchsorted(self.values, grid, side="left")
        return GridSummary(below, self.prefix_sums[below], self.rows, float(self.prefix_sums[-1]))


@dataclass(frozen=True)
class GridSummary:
    """A sample seen from a grid of edges: how many values, and their sum, lie below each edge."""

    below: np.ndarray
    below_sum: np.ndarray
    rows: int
    total: float

    def cdf_integrals(self, grid: np.ndarray) -> tuple[float, np.ndarray, float]:
        """Integral of F over (-inf, e_0), over each cell [e_j-1, e_j); of 1-F over [e_last, inf).

        Within a cell, F rises by 1/n at each value x, so its integral is
        F(e_j-1) * width + sum(e_j - x) / n: the cell's count and sum are enough.
        """
        n = self.rows
        counts, sums = np.diff(self.below), np.diff(self.below_sum)
        cells = (self.below[:-1] * np.diff(grid) + counts * grid[1:] - sums) / n
        left_tail = (self.below[0] * grid[0] - self.below_sum[0]) / n
        right_tail = ((self.total - self.below_sum[-1]) - (n - self.below[-1]) * grid[-1]) / n
        return float(left_tail), cells, float(right_tail)


@dataclass(frozen=True)
class NumericReference:
    """The reference side of a numeric feature, computed once per monitor run."""

    sample: SortedSample
    grid: np.ndarray
    summary: GridSummary
    psi_edges: np.ndarray
    psi_counts: np.ndarray
    std: float

    kind = "numeric"

    @classmethod
    def from_values(cls, values: Any, psi_edges: Any = None) -> NumericReference:
        """`psi_edges`: the decile edges of the reference profile (min and max included)."""
        sample = SortedSample.of(values)
        present = sample.values
        support = np.unique(present)
        if len(support) > GRID_SIZE:
            support = np.unique(np.quantile(present, np.linspace(0, 1, GRID_SIZE)))
        grid = np.unique(np.concatenate([support, np.nextafter(support, np.inf)]))
        if psi_edges is None:
            psi_edges = np.quantile(present, np.linspace(0, 1, PSI_BINS + 1)) if len(present) else []
        inner_edges = np.unique(np.asarray(psi_edges, dtype=np.float64)[1:-1])
        return cls(
            sample=sample,
            grid=grid,
            summary=sample.on(grid),
            psi_edges=inner_edges,
            psi_counts=binned_counts(present, inner_edges),
            std=float(present.std()) if len(present) else 0.0,
        )

    @property
    def rows(self) -> int:
        return self.sample.rows


@dataclass(frozen=True)
class CategoricalReference:
    """The reference side of a categorical feature: its categories and their counts."""

    frequencies: pd.Series

    kind = "categorical"

    @classmethod
    def from_values(cls, values: Any) -> CategoricalReference:
        return cls(count_categories(values))

    @classmethod
    def from_frequencies(cls, frequencies: Mapping[str, int]) -> CategoricalReference:
        return cls(pd.Series(dict(frequencies), dtype=np.int64))

    @property
    def rows(self) -> int:
        return int(self.frequencies.sum())


Reference = NumericReference | CategoricalReference


def sorted_present(values: Any) -> np.ndarray:
    """Finite values, sorted: NaN and infinities count as missing (NaN sorts after +inf)."""
    ordered = np.sort(np.asarray(values, dtype=np.float64))
    first = np.searchsorted(ordered, -np.inf, side="right")
    end = np.searchsorted(ordered, np.inf, side="left")
    return ordered[first:end]


def numeric_values(values: Any) -> np.ndarray:
    """float64 values; text that is not a number (a raw value as received) becomes NaN."""
    values = np.asarray(values)
    if values.dtype.kind in "biuf":
        return values.astype(np.float64, copy=False)
    return pd.to_numeric(pd.Series(values, dtype=object), errors="coerce").to_numpy(np.float64)


def binned_counts(sorted_values: np.ndarray, inner_edges: np.ndarray) -> np.ndarray:
    """Counts in (-inf, e_1), [e_1, e_2), ..., [e_k, inf): values outside the range still count."""
    below = np.searchsorted(sorted_values, inner_edges, side="left")
    return np.diff(np.concatenate(([0], below, [len(sorted_values)])))


def count_categories(values: Any) -> pd.Series:
    """Counts per category as strings, missing values as their own category (as in training)."""
    counts = pd.Series(values, dtype=object).value_counts(dropna=False)
    names = [MISSING_CATEGORY if pd.isna(key) else str(key) for key in counts.index]
    return pd.Series(counts.to_numpy(), index=names).groupby(level=0).sum()


def ks_test(reference: GridSummary, current: GridSummary) -> tuple[float, float]:
    """Two-sample KS statistic and scipy.stats.ks_2samp's asymptotic two-sided p-value."""
    gaps = np.abs(reference.below / reference.rows - current.below / current.rows)
    statistic = float(gaps.max(initial=0.0))
    n, m = reference.rows, current.rows
    return statistic, float(stats.kstwo.sf(statistic, np.round(n * m / (n + m))))


def wasserstein_distance(reference: NumericReference, current: SortedSample) -> float:
    """W1 = integral of |F_ref - F_cur|, summed cell by cell (see the module docstring)."""
    grid, reference_summary = reference.grid, reference.summary
    crossings = crossing_values(reference_summary, current.on(grid), current)
    if len(crossings):
        grid = np.union1d(grid, crossings)
        reference_summary = reference.sample.on(grid)
    ref_left, ref_cells, ref_right = reference_summary.cdf_integrals(grid)
    cur_left, cur_cells, cur_right = current.on(grid).cdf_integrals(grid)
    inner = np.abs(ref_cells - cur_cells).sum()
    return float(abs(ref_left - cur_left) + inner + abs(ref_right - cur_right))


def crossing_values(reference: GridSummary, current: GridSummary, sample: SortedSample) -> np.ndarray:
    """Current values at which F_cur rises past F_ref inside a grid cell.

    Splitting a cell there leaves |F_ref - F_cur| of one sign on each side, so its integral
    follows from counts and sums alone.
    """
    # in integers: F_cur rises from low/m to high/m across a cell where F_ref = b/n; it passes
    # b/n strictly inside when low * n < b * m < high * n, at its k-th value, k = ceil(b * m / n)
    level = reference.below[1:] * current.rows
    low, high = current.below[:-1] * reference.rows, current.below[1:] * reference.rows
    inside = (low < level) & (level < high)
    ranks = -(-level[inside] // reference.rows)
    return sample.values[ranks - 1]


def psi(reference_counts: np.ndarray, current_counts: np.ndarray) -> float:
    reference_share = np.maximum(reference_counts / reference_counts.sum(), PSI_EPSILON)
    current_share = np.maximum(current_counts / current_counts.sum(), PSI_EPSILON)
    return float(np.sum((current_share - reference_share) * np.log(current_share / reference_share)))


def chi2_test(reference_counts: np.ndarray, current_counts: np.ndarray) -> tuple[float, float]:
    """Chi-squared test of homogeneity: a category new in the current data counts, not crashes."""
    table = np.vstack([reference_counts, current_counts])
    table = table[:, table.sum(axis=0) > 0]
    if table.shape[1] < 2:
        return 0.0, 1.0
    result = stats.chi2_contingency(table, correction=False)
    return float(result.statistic), float(result.pvalue)


def jensen_shannon(reference_counts: np.ndarray, current_counts: np.ndarray) -> float:
    return float(spatial.distance.jensenshannon(reference_counts, current_counts))


def feature_drift(reference: Reference, values: Any, settings: DriftSettings) -> dict[str, Any]:
    """One feature's test, statistic, p-value (KS, chi-squared), threshold, PSI and verdict."""
    if reference.kind == "numeric":
        current = SortedSample.of(values)
        missing = len(values) - current.rows
    else:
        current = count_categories(values)
        missing = int(current.get(MISSING_CATEGORY, 0))
    entry: dict[str, Any] = {"type": reference.kind, "rows": len(values), "missing": int(missing)}
    present = current.rows if reference.kind == "numeric" else int(current.sum())
    if present < settings.min_samples or reference.rows == 0:
        side = "reference" if reference.rows == 0 else "current data"
        return {**entry, "test": None, "drifted": None, "note": f"too few values in the {side}"}
    test = settings.test_for(reference.kind, reference.rows)
    if reference.kind == "numeric":
        statistic, p_value, psi_value = numeric_statistics(test, reference, current)
    else:
        statistic, p_value, psi_value = categorical_statistics(test, reference, current)
    threshold = settings.threshold_for(test)
    drifted = p_value < threshold if test in P_VALUE_TESTS else statistic >= threshold
    return {
        **entry,
        "test": test,
        "statistic": statistic,
        "p_value": p_value,
        "threshold": threshold,
        "psi": psi_value,
        "drifted": bool(drifted),
    }


def numeric_statistics(
    test: str, reference: NumericReference, current: SortedSample
) -> tuple[float, float | None, float]:
    current_bins = binned_counts(current.values, reference.psi_edges)
    psi_value = psi(reference.psi_counts, current_bins)
    if test == "ks":
        statistic, p_value = ks_test(reference.summary, current.on(reference.grid))
        return statistic, p_value, psi_value
    if test == "wasserstein":
        distance = wasserstein_distance(reference, current)
        return distance / max(reference.std, MIN_STD), None, psi_value
    return binned_statistics(test, reference.psi_counts, current_bins, psi_value)


def categorical_statistics(
    test: str, reference: CategoricalReference, current: pd.Series
) -> tuple[float, float | None, float]:
    categories = reference.frequencies.index.union(current.index)
    reference_counts = reference.frequencies.reindex(categories, fill_value=0).to_numpy()
    current_counts = current.reindex(categories, fill_value=0).to_numpy()
    psi_value = psi(reference_counts, current_counts)
    return binned_statistics(test, reference_counts, current_counts, psi_value)


def binned_statistics(
    test: str, reference_counts: np.ndarray, current_counts: np.ndarray, psi_value: float
) -> tuple[float, float | None, float]:
    if test == "chi2":
        return (*chi2_test(reference_counts, current_counts), psi_value)
    if test == "jensenshannon":
        return jensen_shannon(reference_counts, current_counts), None, psi_value
    return psi_value, None, psi_value


def dataset_drift(
    references: Mapping[str, Reference], current: pd.DataFrame, settings: DriftSettings
) -> dict[str, Any]:
    """Every feature's drift and the share of tested features that drifted.

    A feature absent from `current` is tested as all missing (too few values: not tested).
    """
    features = {
        name: feature_drift(reference, column_values(current, name), settings)
        for name, reference in references.items()
    }
    tested = [name for name, entry in features.items() if entry["drifted"] is not None]
    drifted = [name for name in tested if features[name]["drifted"]]
    share = len(drifted) / len(tested) if tested else 0.0
    return {
        "features": features,
        "tested_features": len(tested),
        "drifted_features": drifted,
        "share_drifted": share,
        "share_threshold": settings.share_threshold,
        "dataset_drift": bool(tested) and share >= settings.share_threshold,
    }


def column_values(frame: pd.DataFrame, name: str) -> np.ndarray:
    if name not in frame.columns:
        return np.full(len(frame), None, dtype=object)
    return frame[name].to_numpy()
