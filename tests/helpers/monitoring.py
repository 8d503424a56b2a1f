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


def synthetic_monitoring() -> tuple[dict, dict, pd.DataFrame]:
    """Six daily windows of `traffic` assessed against a reference of the early days' model:
    (the monitoring result, its last window, the logged frame with its labels)."""
    rng = np.random.default_rng(0)
    train = rng.normal(size=(2000, 2))
    evaluation_x = rng.normal(size=3000)
    model = sigmoid(4.0 * evaluation_x)
    evaluation_y = (rng.random(3000) < sigmoid(2.5 * evaluation_x)).astype(int)
    baseline = Baseline(
        features={f"x{i}": NumericReference.from_values(train[:, i]) for i in range(2)},
        rows=2000,
        task="classification",
        predictions=np.where(sigmoid(4.0 * train[:, 0]) > 0.5, "yes", "no"),
        calibration=fit_calibration(np.column_stack([1 - model, model]), evaluation_y, LABELS),
        evaluation={"test/accuracy": float(np.mean((model > 0.5) == evaluation_y)), "test/f1_macro": 0.8},
    )
    frame = traffic(rng, 6, 400)
    labels = frame.loc[frame["actual"].notna(), ["id", "actual"]].rename(columns={"actual": "label"})
    windows = time_windows(frame.drop(columns="actual"), "1d", 6, now=NOW)
    # KS for this reference; dataset drift when both features drift
    settings = DriftSettings(small_reference_rows=5000, share_threshold=1.0)
    monitoring, last = assess(baseline, windows, settings, DecaySettings(0.05, 0.7), labels, "log")
    return monitoring, last, frame
