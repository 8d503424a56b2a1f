"""Drift statistics on 1,000,000 current rows x 32 numeric features, forgeml vs naive scipy.

Two cases, as `forgeml monitor` picks them (monitor.small_reference_rows = 1000):
- large reference (50,000 rows): Wasserstein distance / reference std (+ PSI)
  naive: scipy.stats.wasserstein_distance(reference, current) per feature on the raw arrays
- small reference (1,000 rows): KS test (+ PSI)
  naive: scipy.stats.ks_2samp(reference, current) per feature on the raw arrays

forgeml's time includes summarising the reference. Both run in this process on the same data;
the largest difference between the two answers is printed as a check. Ends with the line
`ratio: <naive time / forgeml time>` over both cases.

    python bench/drift_speed.py [--rows 1000000] [--features 32]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np
import pandas as pd
from scipy import stats

from forgeml.monitoring.drift import DriftSettings, NumericReference, dataset_drift


def make_data(
    rows: int, features: int, reference_rows: int, seed: int = 0
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Reference and current tables; every fourth current feature is shifted and widened."""
    rng = np.random.default_rng(seed)
    names = [f"f{i:02d}" for i in range(features)]
    scales = rng.uniform(0.5, 20.0, features)
    reference = pd.DataFrame(rng.normal(0.0, scales, (reference_rows, features)), columns=names)
    current = rng.normal(0.0, scales, (rows, features))
    current[:, ::4] = current[:, ::4] * 1.3 + 0.2 * scales[::4]
    return reference, pd.DataFrame(current, columns=names)


def timed(function: Callable[[], dict[str, float]]) -> tuple[float, dict[str, float]]:
    start = time.perf_counter()
    result = function()
    return time.perf_counter() - start, result


def forgeml_drift(reference: pd.DataFrame, current: pd.DataFrame) -> dict[str, float]:
    references = {name: NumericReference.from_values(reference[name].to_numpy()) for name in reference}
    drift = dataset_drift(references, current, DriftSettings())
    return {name: entry["statistic"] for name, entry in drift["features"].items()}


def naive_wasserstein(reference: pd.DataFrame, current: pd.DataFrame) -> dict[str, float]:
    return {
        name: stats.wasserstein_distance(reference[name], current[name]) / reference[name].std(ddof=0)
        for name in reference
    }


def naive_ks(reference: pd.DataFrame, current: pd.DataFrame) -> dict[str, float]:
    return {name: stats.ks_2samp(reference[name], current[name]).statistic for name in reference}


def run_case(
    label: str, reference: pd.DataFrame, current: pd.DataFrame, naive: Callable
) -> tuple[float, float]:
    forgeml_seconds, ours = timed(lambda: forgeml_drift(reference, current))
    naive_seconds, theirs = timed(lambda: naive(reference, current))
    difference = max(abs(ours[name] - theirs[name]) for name in ours)
    rows, features = current.shape
    print(f"{label}: {rows:,} rows x {features} features, reference {len(reference):,} rows")
    print(f"  forgeml: {forgeml_seconds:.2f} s ({rows / forgeml_seconds:,.0f} rows/s)")
    print(f"  naive:   {naive_seconds:.2f} s ({rows / naive_seconds:,.0f} rows/s)")
    print(f"  largest difference in the statistic: {difference:.2e}")
    return forgeml_seconds, naive_seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--features", type=int, default=32)
    args = parser.parse_args()
    large_reference, current = make_data(args.rows, args.features, reference_rows=50_000)
    small_reference = large_reference.head(1_000)
    ours_large, naive_large = run_case(
        "wasserstein (large reference)", large_reference, current, naive_wasserstein
    )
    ours_small, naive_small = run_case("ks (small reference)", small_reference, current, naive_ks)
    total_ours, total_naive = ours_large + ours_small, naive_large + naive_small
    print(f"total: forgeml {total_ours:.2f} s, naive {total_naive:.2f} s")
    print(f"ratio: {total_naive / total_ours:.2f}")


if __name__ == "__main__":
    main()
