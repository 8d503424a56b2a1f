"""Drift statistics: is the current data distributed like the training reference?

Per feature the test follows the column type and the reference size, with Evidently's defaults:

    reference rows <= small_reference_rows (1000)   numeric: KS            categorical: chi-squared
                                                    drift when p < p_value (0.05)
    larger reference                                numeric: Wasserstein / reference std
                                                    categorical: Jensen-Shannon distance
                                                    drift when distance >= distance_threshold (0.1)

PSI (reference decile bins for numerics) is reported for every feature. Predictions are tested
like a feature. The dataset drifts by either of two rules, and the report names the one that fired
(`rule`: "share" first, else "severe"):

    share   the share of drifted features reaches share_threshold (0.5), as in Evidently
    severe  a drifted feature's effect size reaches a `monitor.severe` threshold (null: off):
            PSI >= severe.psi (1.0) or, numeric only, Wasserstein / reference std >=
            severe.wasserstein (1.0)

The share rule alone misses a few strongly moved features in a wide table (age +25 years and
income x3 are 2 of 7 features, under half); the severe rule catches them however many features
the table has. Its PSI pools the bins (deciles, categories) expected to hold fewer than
SEVERE_MIN_EXPECTED values of the current sample into one bin: PSI's sampling noise grows with
the number of sparsely filled bins (a category seen by chance or not at all), so a small window
of a many-valued column (a hashed id, text tokens) would otherwise look severe by chance alone;
pooled, it stays near its few well-filled bins' noise (a chi-squared over the current rows).
The price: a window too small to expect any of a column's values 10 times pools them all, and
that column cannot be severe in it (the share rule still counts it). The defaults are four times
PSI's customary "major shift" (0.25) and a shift by one reference standard deviation, far beyond
what a window of min_samples rows drawn from the reference reaches by chance (a test checks).
Both effect sizes come from what the feature's test already has: the PSI bins' counts, and the
sorted sample and grid of the Wasserstein distance (computed for the severe rule where the test
is another, at O(grid) cost, not a pass over the data).

Where Evidently is right, so is this module: a column's test and threshold can be set per column
(`monitor.columns.<name>.method/threshold`); a numeric column with at most
categorical_max_distinct (5) distinct reference values (a 0/1 flag, a rating) is tested as
categorical; KS p-values are exact for samples of at most KS_EXACT_MAX_ROWS values (scipy's
`method="auto"`, computed by scipy), asymptotic above. Missing values are their own signal: the
distribution tests see present values only, and the missing share is compared separately
(two-sample chi-squared on missing/present counts, drift when p < p_value and the share moved by
at least missing_share_threshold), so a broken upstream field reads as "missing values rose", not
as a distribution shift. Where Evidently is not right, this module differs on purpose: its
chi-squared treats the reference shares as exact (a goodness-of-fit test), which ignores the
reference's own sampling noise and raised false alarms on 28.6% of unshifted 4-level columns in a
side-by-side run; the two-sample test of homogeneity here stays at the nominal 5% (4.6% measured).

Speed: the reference is summarised once on a grid (its distinct values, or GRID_SIZE quantiles of
a large reference, each followed by the next float so that ties are resolved); each current
column is sorted once (numpy's vectorised sort) and located on that grid, so a feature costs one
sort plus O(grid) work, never per-row Python. The KS statistic is exact whenever the grid holds
every reference value. The Wasserstein distance integrates |F_ref - F_cur| cell by cell from the
count and sum of values in each cell, after splitting each cell where the current CDF crosses the
reference's at the crossing value: exact when the grid holds every reference value, otherwise a
lower bound that is off by far less than the cell widths (GRID_SIZE quantile cells).
scipy is imported by the tests that call it (KS p-values, a chi-squared on two or more
categories): importing scipy.stats costs more than testing a million rows by distances.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import numpy as np
import pandas as pd

from forgeml.config import MonitorConfig, SevereConfig, plain
from forgeml.data.transform import MISSING_CATEGORY
from forgeml.monitoring.signals import count_tokens

GRID_SIZE = 4096
PSI_BINS = 10
# equal-width bins of the reference-vs-current density a numeric feature's entry carries
HISTOGRAM_BINS = 40
# an empty bin counts as this share in PSI (as in Evidently), so the logarithm stays finite
PSI_EPSILON = 1e-4
# a constant reference feature normalises its Wasserstein distance by this (as in Evidently)
MIN_STD = 1e-3
# the severe rule's PSI pools bins expected to hold fewer current values than this
SEVERE_MIN_EXPECTED = 10

# below this many current rows a thread pool costs more than it saves
PARALLEL_MIN_ROWS = 50_000
# scipy.stats.ks_2samp(method="auto") is exact when both samples are at most this large
KS_EXACT_MAX_ROWS = 10_000

P_VALUE_TESTS = frozenset({"ks", "chi2"})
NUMERIC_ONLY_TESTS = frozenset({"ks", "wasserstein"})


@dataclass(frozen=True)
class ColumnTest:
    """One column's own test and threshold (`monitor.columns.<name>`); None: the global choice."""

    method: str | None = None
    threshold: float | None = None


@dataclass(frozen=True)
class DriftSettings:
    """The knobs of `monitor` that decide tests and verdicts; defaults are MonitorConfig's."""

    numeric_method: str = MonitorConfig.numeric_method.value
    categorical_method: str = MonitorConfig.categorical_method.value
    small_reference_rows: int = MonitorConfig.small_reference_rows
    categorical_max_distinct: int = MonitorConfig.categorical_max_distinct
    p_value: float = MonitorConfig.p_value
    distance_threshold: float = MonitorConfig.distance_threshold
    psi_threshold: float = MonitorConfig.psi_threshold
    missing_share_threshold: float = MonitorConfig.missing_share_threshold
    share_threshold: float = MonitorConfig.share_threshold
    severe: SevereConfig | None = field(default_factory=SevereConfig)
    min_samples: int = MonitorConfig.min_samples
    columns: Mapping[str, ColumnTest] = field(default_factory=dict)

    @classmethod
    def from_monitor(cls, monitor: Any) -> DriftSettings:
        """The settings of a `monitor` config node (enum fields as their names)."""
        nested = ("columns", "severe")
        values = {f.name: plain(monitor[f.name]) for f in fields(cls) if f.name not in nested}
        columns = {
            name: ColumnTest(plain(column.get("method")), column.get("threshold"))
            for name, column in (monitor.get("columns") or {}).items()
        }
        severe = monitor.get("severe")
        severe = None if severe is None else SevereConfig(**severe)
        return cls(**values, severe=severe, columns=columns)

    def severe_thresholds(self) -> dict[str, float]:
        """The severe rule's effect sizes and their thresholds; empty: the rule is off."""
        thresholds = {} if self.severe is None else asdict(self.severe)
        return {name: value for name, value in thresholds.items() if value is not None}

    def test_for(self, kind: str, reference_rows: int, column: str | None = None) -> str:
        configured = self.columns.get(column, ColumnTest()).method if column else None
        if configured is None:
            configured = self.numeric_method if kind == "numeric" else self.categorical_method
        if configured != "auto":
            return configured
        small = reference_rows <= self.small_reference_rows
        if kind == "numeric":
            return "ks" if small else "wasserstein"
        return "chi2" if small else "jensenshannon"

    def threshold_for(self, test: str, column: str | None = None) -> float:
        configured = self.columns.get(column, ColumnTest()).threshold if column else None
        if configured is not None:
            return configured
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
        prefix_sums = np.zeros(len(present) + 1)
        np.cumsum(present, out=prefix_sums[1:])
        return cls(present, prefix_sums)

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
    missing: int = 0

    kind = "numeric"

    @classmethod
    def from_values(cls, values: Any, psi_edges: Any = None) -> NumericReference:
        """`psi_edges`: the decile edges of the reference profile (min and max included)."""
        values = numeric_values(values)
        sample = SortedSample.of(values)
        return cls.from_sample(sample, len(values) - sample.rows, psi_edges)

    @classmethod
    def from_sample(cls, sample: SortedSample, missing: int, psi_edges: Any = None) -> NumericReference:
        """From the sorted present values (sorting is most of the cost: done once per column)."""
        present = sample.values
        support = distinct_sorted(present)
        if len(support) > GRID_SIZE:
            support = distinct_sorted(sorted_quantiles(present, np.linspace(0, 1, GRID_SIZE)))
        grid = np.unique(np.concatenate([support, np.nextafter(support, np.inf)]))
        if psi_edges is None:
            psi_edges = sorted_quantiles(present, np.linspace(0, 1, PSI_BINS + 1)) if len(present) else []
        inner_edges = np.unique(np.asarray(psi_edges, dtype=np.float64)[1:-1])
        return cls(
            sample=sample,
            grid=grid,
            summary=sample.on(grid),
            psi_edges=inner_edges,
            psi_counts=binned_counts(present, inner_edges),
            std=float(present.std()) if len(present) else 0.0,
            missing=missing,
        )

    @property
    def rows(self) -> int:
        return self.sample.rows


@dataclass(frozen=True)
class CategoricalReference:
    """The reference side of a categorical feature: its present categories and their counts,
    and how many values were missing. `numeric`: a low-cardinality numeric column, whose values
    are compared as numbers (1 and 1.0 are one category)."""

    frequencies: pd.Series
    missing: int = 0
    numeric: bool = False

    kind = "categorical"

    @classmethod
    def from_values(cls, values: Any, numeric: bool = False) -> CategoricalReference:
        counts = count_numeric_categories(values) if numeric else count_categories(values)
        return cls.from_counts(counts, numeric)

    @classmethod
    def from_frequencies(cls, frequencies: Mapping[str, int]) -> CategoricalReference:
        return cls.from_counts(pd.Series(dict(frequencies), dtype=np.int64))

    @classmethod
    def from_counts(cls, counts: pd.Series, numeric: bool = False) -> CategoricalReference:
        missing = int(counts.get(MISSING_CATEGORY, 0))
        return cls(counts.drop(MISSING_CATEGORY, errors="ignore"), missing, numeric)

    @property
    def rows(self) -> int:
        return int(self.frequencies.sum())

    def count(self, values: Any) -> pd.Series:
        """The current values' counts, categorised as the reference's were (missing included)."""
        return count_numeric_categories(values) if self.numeric else count_categories(values)


class TokenReference(CategoricalReference):
    """The reference side of a text feature's `tokens` signal (monitoring/signals.py): a row
    holds several tokens, and the distribution compared is that of all tokens."""

    def count(self, values: Any) -> pd.Series:
        return count_tokens(values)


Reference = NumericReference | CategoricalReference


def sorted_present(values: Any) -> np.ndarray:
    """Finite values, sorted: NaN and infinities count as missing (NaN sorts after +inf)."""
    ordered = np.sort(np.asarray(values, dtype=np.float64))
    first = np.searchsorted(ordered, -np.inf, side="right")
    end = np.searchsorted(ordered, np.inf, side="left")
    return ordered[first:end]


def distinct_sorted(ordered: np.ndarray) -> np.ndarray:
    """np.unique of values already sorted, in one pass instead of a second sort."""
    if len(ordered) < 2:
        return ordered.copy()
    return ordered[np.concatenate(([True], ordered[1:] != ordered[:-1]))]


def sorted_quantiles(ordered: np.ndarray, q: Any) -> np.ndarray:
    """np.quantile(values, q) (its default, linear method, to the bit) of values already sorted:
    an index and a blend per quantile, where np.quantile partitions the values again."""
    q = np.asarray(q, dtype=np.float64)
    position = (len(ordered) - 1) * q
    low = np.floor(position).astype(np.intp)
    high = np.minimum(low + 1, len(ordered) - 1)
    fraction = position - low
    below, above = ordered[low], ordered[high]
    step = above - below
    # numpy's lerp: from the upper end where the fraction is at least one half
    return np.where(fraction >= 0.5, above - step * (1 - fraction), below + step * fraction)


def density_histogram(reference: np.ndarray, current: np.ndarray, bins: int = HISTOGRAM_BINS) -> dict:
    """Both sorted samples' densities on common equal-width bins (np.histogram(density=True) on
    a range without either side's extreme 0.5%, so one outlier cannot flatten the plot), from
    the sorted values by binary search: what drift.html plots, without another pass over them."""
    (reference_low, reference_high), (current_low, current_high) = (
        sorted_quantiles(values, [0.005, 0.995]) for values in (reference, current)
    )
    low, high = min(reference_low, current_low), max(reference_high, current_high)
    if not high > low:
        bins, low, high = 10, low - 0.5, low + 0.5
    edges = np.linspace(low, high, bins + 1)
    width = (high - low) / bins

    def density(ordered: np.ndarray) -> list[float]:
        # bins [e_i, e_i+1), the last one closed, as np.histogram counts them
        cuts = np.searchsorted(ordered, edges, side="left")
        cuts[-1] = np.searchsorted(ordered, edges[-1], side="right")
        counts = np.diff(cuts)
        total = counts.sum()
        return (counts / (total * width) if total else counts.astype(float)).tolist()

    return {"edges": edges.tolist(), "reference": density(reference), "current": density(current)}


def numeric_values(values: Any) -> np.ndarray:
    """float64 values; text that is not a number (a raw value as received) becomes NaN."""
    values = np.asarray(values)
    if values.dtype.kind in "biuf":
        return values.astype(np.float64, copy=False)
    return pd.to_numeric(pd.Series(values, dtype=object), errors="coerce").to_numpy(np.float64)


def count_numeric_categories(values: Any) -> pd.Series:
    """Counts per distinct number (named by its float repr), non-finite values as missing."""
    numbers = numeric_values(values)
    finite = numbers[np.isfinite(numbers)]
    distinct, counts = np.unique(finite, return_counts=True)
    names = [repr(float(number)) for number in distinct]
    missing = len(numbers) - len(finite)
    return pd.Series([*counts.tolist(), missing], index=[*names, MISSING_CATEGORY], dtype=np.int64)


def binned_counts(sorted_values: np.ndarray, inner_edges: np.ndarray) -> np.ndarray:
    """Counts in (-inf, e_1), [e_1, e_2), ..., [e_k, inf): values outside the range still count."""
    below = np.searchsorted(sorted_values, inner_edges, side="left")
    return np.diff(np.concatenate(([0], below, [len(sorted_values)])))


def count_categories(values: Any) -> pd.Series:
    """Counts per category as strings, missing values as their own category (as in training)."""
    # a text column is counted by pandas' string engine, without a Python object per row
    text = isinstance(values, pd.Series) and isinstance(values.dtype, pd.StringDtype)
    counts = (values if text else pd.Series(values, dtype=object)).value_counts(dropna=False)
    names = [MISSING_CATEGORY if pd.isna(key) else str(key) for key in counts.index]
    return pd.Series(counts.to_numpy(), index=names).groupby(level=0).sum()


def ks_test(reference: NumericReference, current: SortedSample) -> tuple[float, float]:
    """Two-sample KS statistic and p-value as scipy.stats.ks_2samp(method="auto") gives them:
    scipy's exact distribution when both samples hold at most KS_EXACT_MAX_ROWS values, else
    its asymptotic one (the statistic, exact either way, comes from the grid)."""
    gaps = np.abs(reference.summary.below / reference.rows - current.on(reference.grid).below / current.rows)
    statistic = float(gaps.max(initial=0.0))
    n, m = reference.rows, current.rows
    from scipy import stats

    if max(n, m) <= KS_EXACT_MAX_ROWS:
        return statistic, float(stats.ks_2samp(reference.sample.values, current.values).pvalue)
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
    from scipy import stats

    result = stats.chi2_contingency(table, correction=False)
    return float(result.statistic), float(result.pvalue)


def jensen_shannon(reference_counts: np.ndarray, current_counts: np.ndarray) -> float:
    """scipy.spatial.distance.jensenshannon (natural log), in numpy: importing scipy.spatial
    costs a monitor run more than every test it computes."""
    p, q = reference_counts / reference_counts.sum(), current_counts / current_counts.sum()
    middle = (p + q) / 2.0
    with np.errstate(divide="ignore", invalid="ignore"):
        divergence = np.where(p > 0, p * np.log(p / middle), 0.0).sum()
        divergence += np.where(q > 0, q * np.log(q / middle), 0.0).sum()
    return float(np.sqrt(divergence / 2.0))


def feature_drift(
    reference: Reference, values: Any, settings: DriftSettings, column: str | None = None
) -> dict[str, Any]:
    """One feature's distribution test (on present values: test, statistic, p-value, threshold,
    PSI, drifted) and its missing-value test (shares, p-value, missing_drifted)."""
    if reference.kind == "numeric":
        current = SortedSample.of(values)
        present = current.rows
    else:
        counts = reference.count(values)
        current = counts.drop(MISSING_CATEGORY, errors="ignore")
        present = int(current.sum())
    # a row of tokens counts once when missing but holds several tokens when present
    missing = int(counts.get(MISSING_CATEGORY, 0)) if reference.kind != "numeric" else len(values) - present
    entry: dict[str, Any] = {"type": reference.kind, "rows": len(values)}
    entry |= missing_test(reference.missing, reference.rows, missing, present, settings)
    if present < settings.min_samples or reference.rows == 0:
        side = "reference" if reference.rows == 0 else "current data"
        return {**entry, "test": None, "drifted": None, "note": f"too few values in the {side}"}
    test = settings.test_for(reference.kind, reference.rows, column)
    wanted = settings.severe_thresholds()
    if reference.kind == "numeric":
        statistic, p_value, psi_value, effect = numeric_statistics(test, reference, current, wanted)
        entry["histogram"] = density_histogram(reference.sample.values, current.values)
    else:
        statistic, p_value, psi_value, effect = categorical_statistics(test, reference, current)
    threshold = settings.threshold_for(test, column)
    drifted = p_value < threshold if test in P_VALUE_TESTS else statistic >= threshold
    return {
        **entry,
        "test": test,
        "statistic": statistic,
        "p_value": p_value,
        "threshold": threshold,
        "psi": psi_value,
        "effect": effect,
        "drifted": bool(drifted),
    }


def missing_test(
    reference_missing: int, reference_present: int, missing: int, present: int, settings: DriftSettings
) -> dict[str, Any]:
    """The missing share as its own signal: two-sample chi-squared on (missing, present) counts,
    drifted when significant and moved by at least missing_share_threshold."""
    reference_share = reference_missing / max(reference_missing + reference_present, 1)
    share = missing / max(missing + present, 1)
    counts = np.array([[reference_missing, reference_present], [missing, present]])
    _, p_value = chi2_test(counts[0], counts[1])
    enough = missing + present >= settings.min_samples
    moved = abs(share - reference_share) >= settings.missing_share_threshold
    return {
        "missing": int(missing),
        "missing_share": share,
        "reference_missing_share": reference_share,
        "missing_p_value": p_value,
        "missing_drifted": bool(enough and moved and p_value < settings.p_value),
    }


def numeric_statistics(
    test: str, reference: NumericReference, current: SortedSample, effects: Mapping[str, float]
) -> tuple[float, float | None, float, dict[str, float]]:
    """(statistic, p-value, PSI, effect sizes for the severe rule): `effects` names those wanted
    (the Wasserstein distance is computed for them only where the test is another)."""
    current_bins = binned_counts(current.values, reference.psi_edges)
    psi_value = psi(reference.psi_counts, current_bins)
    if test == "ks":
        statistic, p_value = ks_test(reference, current)
    elif test == "wasserstein":
        statistic, p_value = normalised_wasserstein(reference, current), None
    else:
        statistic, p_value = binned_statistics(test, reference.psi_counts, current_bins, psi_value)
    effect = {"psi": pooled_psi(reference.psi_counts, current_bins)}
    if "wasserstein" in effects:
        effect["wasserstein"] = (
            statistic if test == "wasserstein" else normalised_wasserstein(reference, current)
        )
    return statistic, p_value, psi_value, effect


def categorical_statistics(
    test: str, reference: CategoricalReference, current: pd.Series
) -> tuple[float, float | None, float, dict[str, float]]:
    """(statistic, p-value, PSI, effect sizes for the severe rule) on the category counts."""
    categories = reference.frequencies.index.union(current.index)
    reference_counts = reference.frequencies.reindex(categories, fill_value=0).to_numpy()
    current_counts = current.reindex(categories, fill_value=0).to_numpy()
    psi_value = psi(reference_counts, current_counts)
    statistic, p_value = binned_statistics(test, reference_counts, current_counts, psi_value)
    return statistic, p_value, psi_value, {"psi": pooled_psi(reference_counts, current_counts)}


def binned_statistics(
    test: str, reference_counts: np.ndarray, current_counts: np.ndarray, psi_value: float
) -> tuple[float, float | None]:
    if test == "chi2":
        return chi2_test(reference_counts, current_counts)
    if test == "jensenshannon":
        return jensen_shannon(reference_counts, current_counts), None
    return psi_value, None


def normalised_wasserstein(reference: NumericReference, current: SortedSample) -> float:
    """The Wasserstein distance in reference standard deviations."""
    return wasserstein_distance(reference, current) / max(reference.std, MIN_STD)


def pooled_psi(reference_counts: np.ndarray, current_counts: np.ndarray) -> float:
    """PSI after pooling the bins expected to hold fewer than SEVERE_MIN_EXPECTED current values
    (new categories too: none expected) into one: the severe rule's PSI (module docstring)."""
    expected = reference_counts / reference_counts.sum() * current_counts.sum()
    rare = expected < SEVERE_MIN_EXPECTED
    if not rare.any():
        return psi(reference_counts, current_counts)
    reference_pooled = np.append(reference_counts[~rare], reference_counts[rare].sum())
    current_pooled = np.append(current_counts[~rare], current_counts[rare].sum())
    return psi(reference_pooled, current_pooled)


def dataset_drift(
    references: Mapping[str, Reference], current: pd.DataFrame, settings: DriftSettings
) -> dict[str, Any]:
    """Every feature's drift, the share of tested features whose distribution drifted, the
    severely shifted ones (with the effect sizes that reached their thresholds), the features
    whose missing share moved, and the dataset's verdict with the rule that gave it.

    A feature absent from `current` is tested as all missing (its distribution: not tested).
    Features are tested on a thread per core: the sorts and searches release the GIL.
    """

    def test(name: str) -> dict[str, Any]:
        return feature_drift(references[name], column_values(current, name), settings, name)

    workers = min(os.cpu_count() or 1, len(references)) if len(current) >= PARALLEL_MIN_ROWS else 1
    with ThreadPoolExecutor(max(workers, 1)) as pool:
        features = dict(zip(references, pool.map(test, references), strict=True))
    tested = [name for name, entry in features.items() if entry["drifted"] is not None]
    drifted = [name for name in tested if features[name]["drifted"]]
    share = len(drifted) / len(tested) if tested else 0.0
    thresholds = settings.severe_thresholds()
    severe = {name: severe_effects(features[name]["effect"], thresholds) for name in drifted}
    severe = {name: effects for name, effects in severe.items() if effects}
    rule = "share" if tested and share >= settings.share_threshold else "severe" if severe else None
    return {
        "features": features,
        "tested_features": len(tested),
        "drifted_features": drifted,
        "missing_drifted_features": [name for name, entry in features.items() if entry["missing_drifted"]],
        "share_drifted": share,
        "share_threshold": settings.share_threshold,
        "severe_features": severe,
        "severe_thresholds": thresholds,
        "rule": rule,
        "dataset_drift": rule is not None,
    }


def severe_effects(effect: Mapping[str, float], thresholds: Mapping[str, float]) -> dict[str, float]:
    """The effect sizes that reached their severe thresholds (in the thresholds' order)."""
    return {name: effect[name] for name, limit in thresholds.items() if effect.get(name, 0.0) >= limit}


def column_values(frame: pd.DataFrame, name: str) -> np.ndarray:
    if name not in frame.columns:
        return np.full(len(frame), None, dtype=object)
    return frame[name].to_numpy()


def feature_references(
    profile: dict[str, Any], train: pd.DataFrame, settings: DriftSettings
) -> dict[str, Reference]:
    """Numerics from the train split's values (KS and Wasserstein need them) with the profile's
    decile edges for PSI, or, with at most categorical_max_distinct distinct values (and no
    numeric-only test configured for the column), as categories; categoricals from the
    profile's frequencies."""
    references: dict[str, Reference] = {}
    for name, sketch in profile["features"].items():
        if sketch["type"] != "numeric":
            kind = TokenReference if sketch["type"] == "tokens" else CategoricalReference
            references[name] = kind.from_frequencies(sketch["frequencies"])
            continue
        values = numeric_values(train[name].to_numpy())
        sample = SortedSample.of(values)
        method = settings.columns.get(name, ColumnTest()).method
        # a few distinct values (a 0/1 flag, a rating) are categories, not a continuum
        distinct = len(distinct_sorted(sample.values))
        if method not in NUMERIC_ONLY_TESTS and 0 < distinct <= settings.categorical_max_distinct:
            references[name] = CategoricalReference.from_values(values, numeric=True)
        else:
            missing = len(values) - sample.rows
            references[name] = NumericReference.from_sample(sample, missing, sketch.get("bin_edges"))
    return references
