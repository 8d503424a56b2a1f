"""monitor: is the live traffic still like the training data, and is the model still good?

Compares the current data with the training reference (data/processed/train.parquet and
reference_profile.json) feature by feature and on the model's predictions, estimates accuracy
from the logged probabilities (CBPE) and measures it where delayed labels arrived, over one or
more time windows. Writes reports/drift.json and reports/drift.html (the last window: summary,
table, a plot per drifted feature), reports/monitoring.json and reports/monitoring.html (every
window, as time series), both with interactive plots drawn by reports/plotly.min.js,
reports/monitoring/*.csv for `dvc plots`, and a wandb run under paths.log_dir (offline unless
WANDB_MODE says otherwise). The tests and the verdict live in
forgeml/monitoring/ (drift.py, performance.py, decay.py); this stage loads, reports and writes.

Exit code of `forgeml monitor`, for cron and CI to act on:
    0  no drift
    3  drift or decay in the last window -> retraining recommended
    4  not enough data for a verdict: fewer than monitor.min_samples rows (e.g. nothing logged yet)
(2 remains a usage or config error, as for every stage.)

Features and the flags that control them:
- current data: the inference log under `monitor.log_dir` (JSONL, every worker, rotated files),
  or `monitor.current=<file.csv|file.parquet|dir of jsonl>`
- window: `monitor.model_name`, `monitor.window_rows`, `monitor.window_duration` (e.g. 1d) and
  `monitor.windows` (e.g. 14: one result per window, the last ending now)
- tests: `monitor.numeric_method`, `monitor.categorical_method` (auto|ks|wasserstein|chi2|
  jensenshannon|psi), `monitor.columns.<name>.method/threshold`, `monitor.small_reference_rows`,
  `monitor.categorical_max_distinct`, `monitor.p_value`, `monitor.distance_threshold`,
  `monitor.psi_threshold`, `monitor.missing_share_threshold`
- performance: `monitor.labels=<csv|parquet with id,label>` (measured, joined by request id),
  `monitor.max_metric_drop`, `monitor.min_estimated_accuracy` (CBPE)
- verdict: `monitor.share_threshold` (the share of drifted features), `monitor.severe.psi` and
  `monitor.severe.wasserstein` (one severely shifted feature; `monitor.severe=null`: off),
  `monitor.min_samples`
- per version: where several versions answered in a window (a rollout), each one's records are
  also judged alone (`versions` in drift.json and monitoring.json, decay.version_reports), CBPE
  with the calibration fitted for that version's model (version_calibration)
- tracking: `monitor.wandb=false` skips the wandb run
- predictions: taken from the log; the reference predictions and the calibration come from
  `evaluate` (reports/), so this stage imports no torch. Only a table without a `prediction`
  column is predicted by the model in models/.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
from omegaconf import DictConfig

from forgeml.config import DRIFT_TESTS, check_monitor
from forgeml.contract import probability_column
from forgeml.data.transform import predicted_classes
from forgeml.errors import ForgeError
from forgeml.io import read_json, write_json, write_text
from forgeml.layout import (
    CALIBRATION,
    DRIFT_PAGE,
    DRIFT_REPORT,
    FEATURE_DRIFT_TABLE,
    MANIFEST,
    METRICS,
    MONITORING_PAGE,
    MONITORING_REPORT,
    PREPROCESSOR,
    REFERENCE_PREDICTIONS,
    REFERENCE_PROFILE,
    WINDOWS_TABLE,
    monitoring_table,
    split_file,
)
from forgeml.monitoring.decay import Baseline, DecaySettings, answering_versions, assess, time_windows
from forgeml.monitoring.drift import DriftSettings, feature_references
from forgeml.monitoring.logs import read_current, read_inference_log, select_window
from forgeml.monitoring.performance import read_labels, uncalibrated
from forgeml.monitoring.privacy import private_profile
from forgeml.monitoring.report import (
    drifted_figures,
    feature_statistics_table,
    log_to_wandb,
    render_html,
    render_monitoring_html,
    windows_table,
    write_plotly_js,
)
from forgeml.monitoring.signals import with_signals
from forgeml.serving.registry import Registry
from forgeml.tables import read_table, write_table

log = logging.getLogger(__name__)


def run(cfg: DictConfig) -> dict[str, Any]:
    monitor = cfg.monitor
    settings, decay = drift_settings(monitor), decay_settings(monitor)
    current, source = load_current(monitor)
    baseline, train = load_baseline(cfg, settings, logged=len(current) > 0)
    current = with_predictions(current, cfg.paths.models_dir, cfg.paths.reports_dir)
    spec = read_json(Path(cfg.paths.processed_dir) / PREPROCESSOR)
    current, _ = with_signals(current, spec)
    labels = read_labels(monitor.labels, baseline.task) if monitor.labels and baseline.task else None
    windows = time_windows(current, monitor.window_duration, monitor.windows, window_end(monitor))
    versions = version_baselines(cfg, baseline, answering_versions(current), spec.get("labels"))
    monitoring, report = assess(baseline, windows, settings, decay, labels, source, versions)
    reports = Path(cfg.paths.reports_dir)
    # a plot per drifted feature and perhaps one of the predictions
    figures = drifted_figures(report, train, windows[-1].records, baseline)
    write_json(reports / DRIFT_REPORT, report)
    write_text(reports / DRIFT_PAGE, render_html(report, figures))
    write_json(reports / MONITORING_REPORT, monitoring)
    write_text(reports / MONITORING_PAGE, render_monitoring_html(monitoring))
    write_plotly_js(reports)
    write_table(windows_table(monitoring), monitoring_table(reports, WINDOWS_TABLE))
    write_table(feature_statistics_table(monitoring), monitoring_table(reports, FEATURE_DRIFT_TABLE))
    wandb_run = None
    if monitor.wandb:
        wandb_config = {"source": source, "settings": monitoring["settings"], "model": report["model"]}
        wandb_run = str(log_to_wandb(report, figures, cfg.paths.log_dir, wandb_config))
    # the command prints the verdict itself (report.drift): the log file keeps it, the console once
    log.debug("%s (reports: %s, %s)", report["message"], reports / DRIFT_PAGE, reports / MONITORING_PAGE)
    return {
        "verdict": report["verdict"],
        "exit_code": report["exit_code"],
        "message": report["message"],
        "rows": report["rows"]["current"],
        "windows": len(windows),
        "share_drifted": report["share_drifted"],
        "drifted_features": report["drifted_features"],
        "rule": report["rule"],
        "severe_features": report["severe_features"],
        "missing_drifted_features": report["missing_drifted_features"],
        "prediction_drifted": (report["prediction"] or {}).get("drifted"),
        "estimated_accuracy": (report["estimated"] or {}).get("accuracy"),
        "measured": (report["measured"] or {}).get("metrics"),
        "versions": {version: version_numbers(entry) for version, entry in report["versions"].items()},
        "report": str(reports / DRIFT_REPORT),
        "wandb_run": wandb_run,
    }


def drift_settings(monitor: DictConfig) -> DriftSettings:
    """The monitor config, checked before any work (config.check_monitor)."""
    check_monitor(monitor)
    return DriftSettings.from_monitor(monitor)


def decay_settings(monitor: DictConfig) -> DecaySettings:
    return DecaySettings(monitor.max_metric_drop, monitor.min_estimated_accuracy)


def check_columns(settings: DriftSettings, references: dict[str, Any]) -> None:
    """Per-column settings name a feature, with a test for that feature's kind."""
    for name, column in settings.columns.items():
        if name not in references:
            raise ForgeError(f"monitor.columns.{name}: no such feature; features: {', '.join(references)}")
        kind = references[name].kind
        if column.method not in (None, "auto") and column.method not in DRIFT_TESTS[kind]:
            choices = ", ".join(["auto", *sorted(DRIFT_TESTS[kind])])
            raise ForgeError(
                f"monitor.columns.{name}.method={column.method} does not apply to {kind} feature "
                f"'{name}'; choose {choices}"
            )


def load_baseline(cfg: DictConfig, settings: DriftSettings, logged: bool) -> tuple[Baseline, pd.DataFrame]:
    """The reference side, from files only (no torch): the train split and its profile, the
    model's manifest, and what `evaluate` computed for monitoring. `logged`: whether there are
    current records; without any, no hash of `monitor.hash` is compared, so none is keyed: a
    fresh project has no key until `forgeml serve start` makes one, and reports "no data"."""
    processed, reports = Path(cfg.paths.processed_dir), Path(cfg.paths.reports_dir)
    profile, spec = read_json(processed / REFERENCE_PROFILE), read_json(processed / PREPROCESSOR)
    if not cfg.monitor.current:  # the inference log leaves out monitor.redact, hashes monitor.hash
        # a redacted datetime or text feature takes its drift signals out with it
        redacted = {"features": [f for f in spec["features"] if f["name"] in cfg.monitor.redact]}
        signals = list(with_signals(pd.DataFrame(), redacted)[1])
        hashed = list(cfg.monitor.hash) if logged else []
        profile = private_profile(profile, signals, hashed, cfg.serve.runtime_dir)
    train = read_table(split_file(processed, "train"), columns=[f["name"] for f in spec["features"]])
    train = with_signals(train, spec)[0][list(profile["features"])]
    references = feature_references(profile, train, settings)
    check_columns(settings, references)
    manifest = model_manifest(cfg.paths.models_dir)
    model_hash = manifest and manifest.get("model_hash")
    calibration = model_calibration(reports / CALIBRATION, model_hash)
    metrics = reports / METRICS
    baseline = Baseline(
        features=references,
        rows=len(train),
        task=profile.get("task"),
        predictions=reference_predictions(reports / REFERENCE_PREDICTIONS, model_hash),
        calibration=calibration,
        evaluation=read_json(metrics) if metrics.is_file() else None,
        model={key: manifest[key] for key in ("config_hash", "model_hash") if key in manifest}
        if manifest
        else None,
    )
    return baseline, train


def version_baselines(
    cfg: DictConfig, baseline: Baseline, versions: list[str], classes: list[Any] | None
) -> dict[str, Baseline]:
    """The baseline each answering version is judged against: the same reference, with the
    calibration `evaluate` fitted where it was fitted for that version's model, else the
    version's probabilities as they are (version_calibration, as `forgeml replay` does). With
    one version, the baseline itself: nothing is looked up."""
    if len(versions) <= 1 or baseline.task != "classification" or not classes:
        return dict.fromkeys(versions, baseline)
    registry = Registry(cfg.serve.model_store)
    model = cfg.monitor.model_name or cfg.serve.model_name
    calibrations = {
        version: version_calibration(cfg.paths.reports_dir, registry, model, version, classes)
        for version in versions
    }
    return {version: replace(baseline, calibration=fitted) for version, fitted in calibrations.items()}


def version_calibration(
    reports_dir: str, registry: Registry, model: str, version: str | None, classes: list[Any]
) -> dict[str, Any]:
    """The calibration CBPE uses on `version`'s probabilities: `evaluate`'s (reports/
    calibration.json) where it was fitted for the model the registry holds as that version, else
    the probabilities as they are: a calibration fits one model only."""
    entries = {entry["version"]: entry for entry in registry.versions(model)}
    path = Path(reports_dir) / CALIBRATION
    content = read_json(path) if path.is_file() else None
    return fitted_for(content, (entries.get(version) or {}).get("model_hash")) or uncalibrated(classes)


def version_numbers(entry: dict[str, Any]) -> dict[str, Any]:
    """What the command's result keeps of a version's entry in the last window."""
    return {
        "verdict": entry["verdict"],
        "rows": entry["rows"],
        "rejected": entry["rejected"],
        "p99_ms": (entry["latency"] or {}).get("p99_ms"),
        "estimated_accuracy": (entry["estimated"] or {}).get("accuracy"),
        "measured": (entry["measured"] or {}).get("metrics"),
    }


def model_manifest(models_dir: str) -> dict[str, Any] | None:
    path = Path(models_dir) / MANIFEST
    if not path.is_file():
        log.warning("no model in %s: no prediction drift, no performance estimate", models_dir)
        return None
    return read_json(path)


def reference_predictions(path: Path, model_hash: str | None) -> np.ndarray | None:
    """The model's predictions on the train split, written by `evaluate` for this model."""
    if model_hash is None:
        return None
    if not path.is_file():
        log.warning("no prediction drift: %s is missing (run `forgeml evaluate`)", path)
        return None
    table = pq.read_table(path)
    stamp = (table.schema.metadata or {}).get(b"model_hash", b"").decode()
    if stamp != model_hash:
        log.warning("no prediction drift: %s is of another model (run `forgeml evaluate`)", path)
        return None
    return table.column("prediction").to_numpy()


def model_calibration(path: Path, model_hash: str | None) -> dict[str, Any] | None:
    """The calibration `evaluate` wrote for this model (None for a regression model)."""
    content = read_json(path) if model_hash is not None and path.is_file() else None
    if content is not None and content.get("model_hash") != model_hash:
        log.warning("no performance estimate: %s is of another model (run `forgeml evaluate`)", path)
    return fitted_for(content, model_hash)


def fitted_for(content: dict[str, Any] | None, model_hash: str | None) -> dict[str, Any] | None:
    """`content` (a calibration file's) if it was fitted for the model `model_hash` names."""
    fitted = content and model_hash is not None and content.get("model_hash") == model_hash
    return content if fitted and content.get("curves") else None


def load_current(monitor: DictConfig) -> tuple[pd.DataFrame, str]:
    """`monitor.current` if given (it must exist); else the inference log, empty before traffic."""
    if monitor.current:
        frame, source = read_current(monitor.current), str(monitor.current)
    else:
        frame, source = read_inference_log(monitor.log_dir), str(monitor.log_dir)
    return select_window(frame, monitor.model_name, monitor.window_rows), source


def with_predictions(current: pd.DataFrame, models_dir: str, reports_dir: str) -> pd.DataFrame:
    """A table without served predictions gets the model's (the one case that loads torch), its
    classes decided as the endpoint decides them (the decision threshold evaluate picked)."""
    has_predictions = "prediction" in current.columns and current["prediction"].notna().any()
    if has_predictions or not len(current) or not Path(models_dir, MANIFEST).is_file():
        return current
    from forgeml.models.artifact import ModelArtifact
    from forgeml.models.rare_classes import read_decision

    model = ModelArtifact.load(models_dir)
    if not all(feature["name"] in current.columns for feature in model.spec["features"]):
        log.warning("no prediction drift: the current data has neither predictions nor every feature")
        return current
    outputs = model.predict(current)
    if model.spec["task"] != "classification":
        return current.assign(prediction=outputs.reshape(-1))
    labels = [str(label) for label in model.spec["labels"]]
    probabilities = {probability_column(label): outputs[:, k] for k, label in enumerate(labels)}
    decided = predicted_classes(outputs, read_decision(reports_dir, model.manifest["model_hash"]))
    return current.assign(prediction=np.asarray(labels)[decided], **probabilities)


def window_end(monitor: DictConfig) -> pd.Timestamp | None:
    """`monitor.window_end` as a UTC time (a time without zone is UTC); None: now."""
    if monitor.window_end is None:
        return None
    try:
        end = pd.Timestamp(monitor.window_end)
    except ValueError as error:
        raise ForgeError(
            f"monitor.window_end={monitor.window_end!r} is not a time (e.g. 2025-06-02T00:00Z)"
        ) from error
    return end.tz_localize("UTC") if end.tzinfo is None else end.tz_convert("UTC")
