"""Monitoring over time: drift, estimated and measured performance per window, and the verdict.

The current data (the inference log, or a table) is cut into `monitor.windows` consecutive
windows of `monitor.window_duration`, the last one ending now (one window of everything when no
duration is set). Each window gets its request volume and rejections, the drift of every feature
(distribution and missing share) and of the predictions, the CBPE estimate of accuracy and F1
from the logged probabilities, and the measured metrics of its labelled records. The most recent
window decides the verdict:

    exit 3  drift: the share of drifted features reached share_threshold, a drifted feature's
            effect size reached a `severe` threshold (drift.py), the predictions drifted, or a
            feature's missing share moved; or decay: a measured score fell more
            than max_metric_drop below the evaluation's, or the estimated accuracy fell below
            min_estimated_accuracy
    exit 4  fewer than min_samples records in the window: no verdict
    exit 0  none of these

Per version: where several versions answered (a rollout's canary beside production, a shadow
candidate's answers logged under production's request ids), each window also judges each
version's records alone, against the same reference and thresholds, with the calibration fitted
for that version's model (`versions`: rows, rejections, latency, drift, estimate, measured
metrics and the verdict these alone would give). These never change the window's own verdict.
With one version the window's numbers are that version's: nothing is computed twice.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from typing import Any

import numpy as np
import pandas as pd

from forgeml.contract import probability_column
from forgeml.errors import EXIT_DRIFT, EXIT_INSUFFICIENT_DATA, EXIT_OK, ForgeError
from forgeml.monitoring.drift import (
    CategoricalReference,
    DriftSettings,
    NumericReference,
    Reference,
    dataset_drift,
    feature_drift,
)
from forgeml.monitoring.performance import (
    estimate_classification,
    join_labels,
    measured_metrics,
    metric_drops,
)

REPORT_FORMAT = "forgeml.drift_report/1"
# the severe rule's effect sizes as a message names them
EFFECT_NAMES = {"psi": "PSI", "wasserstein": "Wasserstein/std"}
MONITORING_FORMAT = "forgeml.monitoring/1"


@dataclass(frozen=True)
class DecaySettings:
    """When performance alone asks for retraining; None switches a check off."""

    max_metric_drop: float | None = None
    min_estimated_accuracy: float | None = None


@dataclass
class Baseline:
    """What the current data is compared with: the train split's features and the model's
    predictions on it, the calibration for CBPE and the evaluation's test metrics."""

    features: dict[str, Reference]
    rows: int
    task: str | None = None
    predictions: np.ndarray | None = None
    calibration: dict[str, Any] | None = None
    evaluation: dict[str, float] | None = None
    model: dict[str, Any] | None = None


@dataclass(frozen=True)
class Window:
    start: pd.Timestamp | None
    end: pd.Timestamp | None
    records: pd.DataFrame


def time_windows(
    frame: pd.DataFrame, duration: str | None, count: int, now: datetime | None = None
) -> list[Window]:
    """`count` consecutive windows of `duration`, the last ending at `now` (default: the current
    time; it also takes records stamped later, a clock ahead); without a duration, one window
    of every record."""
    if duration is None:
        if count > 1:
            raise ForgeError(f"monitor.windows={count} needs monitor.window_duration (e.g. 1d)")
        stamps = frame["ts"] if "ts" in frame.columns and len(frame) else None
        return [
            Window(None if stamps is None else stamps.min(), None if stamps is None else stamps.max(), frame)
        ]
    if "ts" not in frame.columns:
        raise ForgeError("monitor.window_duration is set but the current data has no `ts` column")
    span = parse_duration(duration)
    end = pd.Timestamp(now or datetime.now(timezone.utc))
    edges = [end - span * (count - i) for i in range(count + 1)]
    stamps = pd.to_datetime(frame["ts"], utc=True, errors="coerce", format="ISO8601")
    windows = []
    for i in range(count):
        inside = stamps >= edges[i]
        if i < count - 1:
            inside &= stamps < edges[i + 1]
        windows.append(Window(edges[i], edges[i + 1], frame[inside.to_numpy()]))
    return windows


def parse_duration(duration: str) -> pd.Timedelta:
    try:
        span = pd.Timedelta(duration)
    except ValueError as error:
        raise ForgeError(
            f"monitor.window_duration={duration!r} is not a duration (e.g. 30min, 24h, 1d)"
        ) from error
    if span <= pd.Timedelta(0):
        raise ForgeError(f"monitor.window_duration={duration!r} must be positive")
    return span


def assess(
    reference: Baseline,
    windows: list[Window],
    settings: DriftSettings,
    decay: DecaySettings,
    labels: pd.DataFrame | None,
    source: str,
    versions: dict[str, Baseline] | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(monitoring report over every window, drift report of the last window). `versions`: the
    baseline of each version that answered (answering_versions), keyed as the records name it."""
    reports = []
    for window in windows:
        report = window_report(reference, window, settings, decay, labels, source)
        report["versions"] = version_reports(versions or {}, window, report, settings, decay, labels, source)
        reports.append(report)
    last = reports[-1]
    monitoring = {
        "format": MONITORING_FORMAT,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "verdict": last["verdict"],
        "exit_code": last["exit_code"],
        "message": last["message"],
        "source": source,
        "model": reference.model,
        "evaluation": reference.evaluation,
        "settings": {**asdict(settings), **asdict(decay)},
        "windows": [summary(report) for report in reports],
    }
    return monitoring, last


def window_report(
    reference: Baseline,
    window: Window,
    settings: DriftSettings,
    decay: DecaySettings,
    labels: pd.DataFrame | None,
    source: str,
) -> dict[str, Any]:
    """The drift report of one window (REPORT_FORMAT) with its performance."""
    frame = window.records
    rejected = frame["rejected"].notna() if "rejected" in frame.columns else pd.Series(False, frame.index)
    # a mask that keeps every row would still copy the whole window
    records = frame[~rejected.to_numpy()] if rejected.any() else frame
    rows = len(records)
    served = traffic(records)
    enough = rows >= settings.min_samples
    drift = dataset_drift(reference.features, records, settings) if enough else no_test(settings)
    prediction = prediction_drift(reference, records, settings) if enough else None
    estimated = estimate(reference, records) if enough else None
    measured = measure(reference, records, labels)
    verdict, exit_code, message = decide(
        drift, prediction, estimated, measured, rows, settings, decay, source, served
    )
    return {
        "format": REPORT_FORMAT,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "verdict": verdict,
        "exit_code": exit_code,
        "message": message,
        "source": source,
        "window": {"start": stamp(window.start), "end": stamp(window.end)},
        "rows": {
            "reference": reference.rows,
            "current": rows,
            "rejected": int(rejected.sum()),
            "served": served and served["records"],
        },
        "sample_rates": served and served["sample_rates"],
        "latency": latency(frame),
        "min_samples": settings.min_samples,
        **drift,
        "prediction": prediction,
        "estimated": estimated,
        "measured": measured,
        "model": reference.model,
        "settings": asdict(settings),
    }


def answering_versions(records: pd.DataFrame) -> list[str]:
    """The versions the records name (answered or refused), as text, in order of appearance;
    none for data without a `version` column."""
    if "version" not in records.columns:
        return []
    return [str(version) for version in records["version"].unique() if not pd.isna(version)]


def version_reports(
    versions: dict[str, Baseline],
    window: Window,
    overall: dict[str, Any],
    settings: DriftSettings,
    decay: DecaySettings,
    labels: pd.DataFrame | None,
    source: str,
) -> dict[str, dict[str, Any]]:
    """Each version with records in the window, judged on them alone (version_summary). One
    version: the window's own report is its (no second pass over the rows); none (data
    without a version): nothing."""
    if len(versions) <= 1:
        empty = not len(window.records)
        return (
            {} if empty else {version: version_summary(overall, base) for version, base in versions.items()}
        )
    judged = {}
    for version, records in window.records.groupby("version", sort=False):
        baseline = versions[str(version)]
        part = Window(window.start, window.end, records)
        report = window_report(baseline, part, settings, decay, labels, source)
        judged[str(version)] = version_summary(report, baseline)
    return judged


def version_summary(report: dict[str, Any], baseline: Baseline) -> dict[str, Any]:
    """A version's entry in a window's `versions`: its volume, latency, drift, performance and
    the verdict its records alone give (insufficient_data below monitor.min_samples)."""
    return {
        "verdict": report["verdict"],
        "rows": report["rows"]["current"],
        "rejected": report["rows"]["rejected"],
        "latency": report["latency"],
        "share_drifted": report["share_drifted"],
        "drifted_features": report["drifted_features"],
        "prediction_drifted": (report["prediction"] or {}).get("drifted"),
        "estimated": report["estimated"],
        "calibration": (baseline.calibration or {}).get("method"),
        "measured": report["measured"],
    }


def traffic(records: pd.DataFrame) -> dict[str, Any] | None:
    """About how many records the window served, logged or not, and the rates the logged ones
    were drawn at: the sum of their `seen` (each counts the records its worker answered since
    its previous logged one; the first may count some from before the window, the records
    answered after a worker's last logged one are not counted yet). None where a record lacks
    them (a log written before they were, a table)."""
    if not len(records) or not {"seen", "sample_rate"} <= set(records.columns):
        return None
    seen = pd.to_numeric(records["seen"], errors="coerce")
    rates = pd.to_numeric(records["sample_rate"], errors="coerce")
    if seen.isna().any() or rates.isna().any():
        return None
    return {"records": int(seen.sum()), "sample_rates": sorted(set(rates.tolist()))}


def latency(frame: pd.DataFrame) -> dict[str, Any] | None:
    """The window's served latency (what the p99_latency alert reads); None without any."""
    if "latency_ms" not in frame.columns:
        return None
    values = pd.to_numeric(frame["latency_ms"], errors="coerce").dropna()
    if not len(values):
        return None
    p50, p99 = values.quantile([0.5, 0.99]).tolist()
    return {"requests": len(values), "p50_ms": p50, "p99_ms": p99}


def no_test(settings: DriftSettings) -> dict[str, Any]:
    return {
        "features": {},
        "tested_features": 0,
        "drifted_features": [],
        "missing_drifted_features": [],
        "share_drifted": None,
        "share_threshold": settings.share_threshold,
        "severe_features": {},
        "severe_thresholds": settings.severe_thresholds(),
        "rule": None,
        "dataset_drift": None,
    }


def prediction_drift(
    reference: Baseline, records: pd.DataFrame, settings: DriftSettings
) -> dict[str, Any] | None:
    """The served predictions against the model's on the train split, tested like a feature."""
    if reference.predictions is None or "prediction" not in records.columns:
        return None
    current = records["prediction"].dropna()
    if not len(current):
        return None
    if reference.task == "classification":
        # both sides counted as text (count_categories names categories by str), 1 and "1" alike
        prediction_reference = CategoricalReference.from_values(reference.predictions)
        return feature_drift(prediction_reference, current, settings)
    return feature_drift(NumericReference.from_values(reference.predictions), current, settings)


def probability_columns(records: pd.DataFrame, labels: list[str]) -> list[str] | None:
    columns = [probability_column(label) for label in labels]
    return columns if all(column in records.columns for column in columns) else None


def estimate(reference: Baseline, records: pd.DataFrame) -> dict[str, Any] | None:
    """CBPE from the logged probabilities of the records that have them."""
    if reference.calibration is None:
        return None
    columns = probability_columns(records, reference.calibration["labels"])
    if columns is None:
        return None
    probabilities = records[columns].to_numpy(np.float64)
    probabilities = probabilities[np.isfinite(probabilities).all(axis=1)]
    return estimate_classification(probabilities, reference.calibration) if len(probabilities) else None


def measure(reference: Baseline, records: pd.DataFrame, labels: pd.DataFrame | None) -> dict[str, Any] | None:
    """Metrics of the records whose label has arrived, and their drop from the evaluation's."""
    if labels is None or reference.task is None or "prediction" not in records.columns:
        return None
    actual = join_labels(records, labels)
    labelled = actual.notna().to_numpy() & records["prediction"].notna().to_numpy()
    result: dict[str, Any] = {"labelled_rows": int(labelled.sum())}
    if not labelled.any():
        return result
    metrics = measured_metrics(
        reference.task, actual.to_numpy()[labelled], records["prediction"].to_numpy()[labelled]
    )
    drops = metric_drops(metrics, reference.evaluation or {})
    return {**result, "metrics": metrics, "drops": drops}


def decide(
    drift: dict[str, Any],
    prediction: dict[str, Any] | None,
    estimated: dict[str, Any] | None,
    measured: dict[str, Any] | None,
    rows: int,
    settings: DriftSettings,
    decay: DecaySettings,
    source: str,
    served: dict[str, Any] | None = None,
) -> tuple[str, int, str]:
    """(verdict, exit code, what to do): see the module docstring."""
    if rows < settings.min_samples:
        return "insufficient_data", EXIT_INSUFFICIENT_DATA, insufficient_data(rows, settings, source, served)
    drifted, tested = len(drift["drifted_features"]), drift["tested_features"]
    share = f"{drifted} of {tested} features drifted ({drift['share_drifted']:.0%}, threshold "
    share += f"{settings.share_threshold:.0%})"
    prediction_drifted = bool(prediction and prediction["drifted"])
    findings = [*severe_findings(drift["severe_features"], drift["severe_thresholds"]), share]
    findings.append("the predictions drifted" if prediction_drifted else "the predictions did not")
    if drift["missing_drifted_features"]:
        findings.append(f"the missing share moved in {', '.join(drift['missing_drifted_features'])}")
    decayed = performance_findings(estimated, measured, settings, decay)
    findings += decayed
    if decayed:
        return "decay", EXIT_DRIFT, f"decay: {'; '.join(findings)}. Retraining recommended."
    if drift["dataset_drift"] or prediction_drifted or drift["missing_drifted_features"]:
        return "drift", EXIT_DRIFT, f"drift: {'; '.join(findings)}. Retraining recommended."
    return "no_drift", EXIT_OK, f"no drift: {'; '.join(findings)}."


def insufficient_data(rows: int, settings: DriftSettings, source: str, served: dict[str, Any] | None) -> str:
    """Why there is no verdict, and, where the log says how many records the window served
    (traffic), at what rate they were logged: the cure may be a higher rate, not more traffic."""
    found = "no inference records" if rows == 0 else f"only {rows} rows"
    needed = f"at least monitor.min_samples={settings.min_samples} are needed for a verdict"
    if served is None:
        return f"{found} in {source}; {needed}"
    rates = served["sample_rates"]
    rate = f"sample rate {rates[0]:g}" if len(rates) == 1 else f"sample rates {rates[0]:g} to {rates[-1]:g}"
    return (
        f"only {rows} rows in {source}: the window served ~{served['records']} records and logged "
        f"{rows} at {rate}; {needed} (raise the rate on the running server: `forgeml serve "
        "configure monitor.sample_rate=auto` logs every request until the window has them)"
    )


def severe_findings(severe: dict[str, dict[str, float]], thresholds: dict[str, float]) -> list[str]:
    """One finding per effect size, e.g. "age, income severely shifted (PSI 2.71, 2.93 >=
    monitor.severe.psi=1.0)", each feature under the first of its effect sizes that reached its
    threshold: what fired, and the key to change."""
    findings = []
    for effect, threshold in thresholds.items():
        names = [name for name, effects in severe.items() if next(iter(effects)) == effect]
        if names:
            values = ", ".join(f"{severe[name][effect]:.2f}" for name in names)
            findings.append(
                f"{', '.join(names)} severely shifted ({EFFECT_NAMES[effect]} {values} "
                f">= monitor.severe.{effect}={threshold})"
            )
    return findings


def performance_findings(
    estimated: dict[str, Any] | None,
    measured: dict[str, Any] | None,
    settings: DriftSettings,
    decay: DecaySettings,
) -> list[str]:
    """What the scores say against the configured limits (empty when they are met)."""
    findings = []
    low = decay.min_estimated_accuracy
    if estimated and low is not None and estimated["accuracy"] < low:
        findings.append(
            f"estimated accuracy {estimated['accuracy']:.3f} is below monitor.min_estimated_accuracy={low}"
        )
    enough_labels = measured and measured["labelled_rows"] >= settings.min_samples
    if enough_labels and decay.max_metric_drop is not None:
        for name, drop in measured["drops"].items():
            if drop > decay.max_metric_drop:
                findings.append(
                    f"measured {name} {measured['metrics'][name]:.3f} is {drop:.3f} below the "
                    f"evaluation's (monitor.max_metric_drop={decay.max_metric_drop})"
                )
    return findings


def summary(report: dict[str, Any]) -> dict[str, Any]:
    """A window's line in monitoring.json: its numbers, per feature only the statistics."""
    features = {
        name: {
            key: entry.get(key)
            for key in ("test", "statistic", "drifted", "missing_share", "missing_drifted")
        }
        for name, entry in report["features"].items()
    }
    keys = ("verdict", "exit_code", "message", "window", "rows", "share_drifted", "drifted_features", "rule")
    return {
        **{key: report[key] for key in keys},
        "severe_features": report["severe_features"],
        "missing_drifted_features": report["missing_drifted_features"],
        "prediction_drifted": (report["prediction"] or {}).get("drifted"),
        "estimated": report["estimated"],
        "measured": report["measured"],
        "versions": report["versions"],
        "features": features,
    }


def stamp(value: pd.Timestamp | None) -> str | None:
    return None if value is None or pd.isna(value) else value.isoformat()
