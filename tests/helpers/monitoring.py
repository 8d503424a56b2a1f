"""Six days of synthetic monitored traffic and their assessment, for the tests of the windows and
of the monitoring page a browser renders."""

from __future__ import annotations

from datetime import datetime, timezone

import numpy as np
import pandas as pd

from forgeml.contract import probability_column
from forgeml.monitoring.decay import Baseline, DecaySettings, assess, time_windows
from forgeml.monitoring.drift import DriftSettings, NumericReference
from forgeml.monitoring.performance import fit_calibration

NOW = datetime(2026, 6, 15, 12, 0, tzinfo=timezone.utc)
LABELS = ["no", "yes"]


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def traffic(rng: np.random.Generator, days: int, per_day: int) -> pd.DataFrame:
    """`days` days of logged records ending at NOW; from day 4 on, x0 crowds the boundary and
    x1 moves (the model gets worse), and a few requests a day are rejected."""
    frames = []
    for day in range(days):
        start = pd.Timestamp(NOW) - pd.Timedelta(days=days - day)
        ts = start + pd.to_timedelta(np.sort(rng.uniform(0, 86_000, per_day)), unit="s")
        late = day >= 4
        x0 = rng.normal(0.0, 0.35 if late else 1.0, per_day)
        x1 = rng.normal(1.5 if late else 0.0, 1.0, per_day)
        p = sigmoid(4.0 * x0)
        frames.append(
            pd.DataFrame(
                {
                    "ts": ts,
                    "id": [f"d{day}-{i}" for i in range(per_day)],
                    "x0": x0,
                    "x1": x1,
                    "prediction": np.where(p > 0.5, "yes", "no"),
                    probability_column("no"): 1 - p,
                    probability_column("yes"): p,
                    "actual": np.where(rng.random(per_day) < sigmoid(2.5 * x0), "yes", "no"),
                }
            )
        )
        rejected = pd.DataFrame({"ts": ts[: day + 1], "rejected": ["wrong_type"] * (day + 1)})
        frames.append(rejected)
    return pd.concat(frames, ignore_index=True).sort_values("ts", ignore_index=True)


def synthetic_baseline(rng: np.random.Generator) -> Baseline:
    """The reference of a model that scores sigmoid(4 x0) on traffic labelled "yes" with
    probability sigmoid(2.5 x0), x0 and x1 standard normal, with its calibration and scores."""
    train = rng.normal(size=(2000, 2))
    evaluation_x = rng.normal(size=3000)
    model = sigmoid(4.0 * evaluation_x)
    evaluation_y = (rng.random(3000) < sigmoid(2.5 * evaluation_x)).astype(int)
    return Baseline(
        features={f"x{i}": NumericReference.from_values(train[:, i]) for i in range(2)},
        rows=2000,
        task="classification",
        predictions=np.where(sigmoid(4.0 * train[:, 0]) > 0.5, "yes", "no"),
        calibration=fit_calibration(np.column_stack([1 - model, model]), evaluation_y, LABELS),
        evaluation={"test/accuracy": float(np.mean((model > 0.5) == evaluation_y)), "test/f1_macro": 0.8},
    )


def synthetic_monitoring() -> tuple[dict, dict, pd.DataFrame]:
    """Six daily windows of `traffic` assessed against a reference of the early days' model:
    (the monitoring result, its last window, the logged frame with its labels)."""
    rng = np.random.default_rng(0)
    baseline = synthetic_baseline(rng)
    frame = traffic(rng, 6, 400)
    labels = labels_of(frame)
    windows = time_windows(frame.drop(columns="actual"), "1d", 6, now=NOW)
    # KS for this reference; dataset drift when both features drift
    settings = DriftSettings(small_reference_rows=5000, share_threshold=1.0)
    monitoring, last = assess(baseline, windows, settings, DecaySettings(0.05, 0.7), labels, "log")
    return monitoring, last, frame


def answered(
    rng: np.random.Generator,
    version: str,
    rows: int,
    rejected: int,
    x1_mean: float,
    slope: float,
    latency: float,
) -> pd.DataFrame:
    """`rows` records of the last day answered by `version`, whose model scores sigmoid(slope
    x0) (the baseline's: 4), each `latency` ms, and `rejected` refused requests."""
    ts = pd.Timestamp(NOW) - pd.to_timedelta(np.sort(rng.uniform(60, 86_000, rows + rejected)), unit="s")
    x0, x1 = rng.normal(0.0, 1.0, rows), rng.normal(x1_mean, 1.0, rows)
    p = sigmoid(slope * x0)
    answers = pd.DataFrame(
        {
            "ts": ts[:rows],
            "version": version,
            "latency_ms": rng.normal(latency, latency / 10, rows),
            "id": [f"{version}-{i}" for i in range(rows)],
            "x0": x0,
            "x1": x1,
            "prediction": np.where(p > 0.5, "yes", "no"),
            probability_column("no"): 1 - p,
            probability_column("yes"): p,
            "actual": np.where(rng.random(rows) < sigmoid(2.5 * x0), "yes", "no"),
        }
    )
    refused = pd.DataFrame(
        {"ts": ts[rows:], "version": version, "latency_ms": latency, "rejected": "wrong_type"}
    )
    return pd.concat([answers, refused], ignore_index=True)


def two_versions(candidate_rows: int = 600) -> tuple[Baseline, pd.DataFrame]:
    """A day of a canary: version "1" answers as the baseline's model (no drift, fast, 2
    refusals), version "2" answers callers whose x1 moved, with a model that is less sure and
    wrong (sigmoid(-0.7 x0)), ten times slower, with 12 refusals. (baseline, the logged frame
    with an `actual` label per answer)"""
    rng = np.random.default_rng(1)
    baseline = synthetic_baseline(rng)
    production = answered(rng, "1", 600, 2, x1_mean=0.0, slope=4.0, latency=2.0)
    candidate = answered(rng, "2", candidate_rows, 12, x1_mean=1.5, slope=-0.7, latency=20.0)
    return baseline, pd.concat([production, candidate], ignore_index=True).sort_values(
        "ts", ignore_index=True
    )


def labels_of(frame: pd.DataFrame) -> pd.DataFrame:
    """The delayed labels of `frame`'s answers, as monitor.labels holds them."""
    return frame.loc[frame["actual"].notna(), ["id", "actual"]].rename(columns={"actual": "label"})
