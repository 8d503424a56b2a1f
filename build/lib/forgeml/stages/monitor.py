"""monitor: is the live traffic still distributed like the training data? Retrain or not?

Compares the current data with the training reference (data/processed/train.parquet and
reference_profile.json), feature by feature and on the model's predictions, and writes
reports/drift.json, reports/drift.html (summary table + a plot per drifted feature) and a wandb
run under paths.log_dir (offline unless WANDB_MODE says otherwise).

Exit code of `forgeml monitor`, for cron and CI to act on:
    0  no drift
    3  drift: the share of drifted features reached monitor.share_threshold, or the predictions
       drifted -> retraining recommended
    4  not enough data for a verdict: fewer than monitor.min_samples rows (e.g. nothing logged yet)
(2 remains a usage or config error, as for every stage.)

Features and the flags that control them:
- current data: the inference log under `monitor.log_dir` (JSONL, every worker, rotated files),
  or `monitor.current=<file.csv|file.parquet|dir of jsonl>`
- window: `monitor.model_name`, `monitor.window_duration` (e.g. 24h), `monitor.window_rows`
- tests: `monitor.numeric_method`, `monitor.categorical_method` (auto|ks|wasserstein|chi2|
  jensenshannon|psi), `monitor.small_reference_rows`, `monitor.p_value`,
  `monitor.distance_threshold`, `monitor.psi_threshold`
- verdict: `monitor.share_threshold`, `monitor.min_samples`
- tracking: `monitor.wandb=false` skips the wandb run
- predictions: taken from the log; for a table without a `prediction` column, the model in
  models/ predicts them. Reference predictions are the model's on the train split.
"""

from __future__ import annotations

import logging
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from omegaconf import DictConfig

from forgeml.config import check_ranges, plain
from forgeml.errors import ForgeError
from forgeml.io import read_json, write_json, write_text
from forgeml.layout import DRIFT_PAGE, DRIFT_REPORT, REFERENCE_PROFILE, split_file
from forgeml.monitoring.drift import (
    TESTS,
    CategoricalReference,
    DriftSettings,
    NumericReference,
    Reference,
    dataset_drift,
    feature_drift,
)
from forgeml.monitoring.logs import read_current, read_inference_log, select_window
from forgeml.monitoring.report import distribution_png, log_to_wandb, render_html

log = logging.getLogger(__name__)

EXIT_NO_DRIFT, EXIT_DRIFT, EXIT_INSUFFICIENT_DATA = 0, 3, 4
REPORT_FORMAT = "forgeml.drift_report/1"


def run(cfg: DictConfig) -> dict[str, Any]:
    monitor = cfg.monitor
    settings = drift_settings(monitor)
    processed = Path(cfg.paths.processed_dir)
    profile = read_json(processed / REFERENCE_PROFILE)
    train = pd.read_parquet(split_file(processed, "train"))
    current, source = load_current(monitor)
    references = feature_references(profile, train)
    model = load_model(cfg.paths.models_dir)
    report, predictions = drift_report(references, train, current, settings, model, source)
    figures = drifted_figures(report, train, current, predictions)
    reports = Path(cfg.paths.reports_dir)
    write_json(reports / DRIFT_REPORT, report)
    write_text(reports / DRIFT_PAGE, render_html(report, figures))
    wandb_run = None
    if monitor.wandb:
        wandb_config = {"source": source, "settings": asdict(settings), "model": report["model"]}
        wandb_run = str(log_to_wandb(report, figures, cfg.paths.log_dir, wandb_config))
    log.info("%s (report: %s)", report["message"], reports / "drift.html")
    return {
        "verdict": report["verdict"],
        "exit_code": report["exit_code"],
        "message": report["message"],
        "rows": report["rows"]["current"],
        "share_drifted": report["share_drifted"],
        "drifted_features": report["drifted_features"],
        "prediction_drifted": (report["prediction"] or {}).get("drifted"),
        "report": str(reports / DRIFT_REPORT),
        "wandb_run": wandb_run,
    }


def drift_settings(monitor: DictConfig) -> DriftSettings:
    """Check the monitor config before any work; every message names the key to change."""
    check_ranges("monitor", monitor)
    for kind in ("numeric", "categorical"):
        method = plain(monitor[f"{kind}_method"])
        if method != "auto" and method not in TESTS[kind]:
            choices = ", ".join(["auto", *sorted(TESTS[kind])])
            raise ForgeError(
                f"monitor.{kind}_method={method} does not apply to {kind} features; choose {choices}"
            )
    return DriftSettings.from_monitor(monitor)


def load_current(monitor: DictConfig) -> tuple[pd.DataFrame, str]:
    """`monitor.current` if given (it must exist); else the inference log, empty before traffic."""
    if monitor.current:
        frame, source = read_current(monitor.current), str(monitor.current)
    else:
        frame, source = read_inference_log(monitor.log_dir), str(monitor.log_dir)
    window = select_window(frame, monitor.model_name, monitor.window_rows, monitor.window_duration)
    return window, source


def feature_references(profile: dict[str, Any], train: pd.DataFrame) -> dict[str, Reference]:
    """Numerics from the train split's values (KS and Wasserstein need them) with the profile's
    decile edges for PSI; categoricals from the profile's frequencies."""
    return {
        name: NumericReference.from_values(train[name].to_numpy(np.float64), sketch.get("bin_edges"))
        if sketch["type"] == "numeric"
        else CategoricalReference.from_frequencies(sketch["frequencies"])
        for name, sketch in profile["features"].items()
    }


def load_model(models_dir: str) -> Any:
    """The model artifact, or None: drift of the inputs can be checked without one."""
    from forgeml.models.artifact import ModelArtifact

    try:
        return ModelArtifact.load(models_dir)
    except ForgeError as error:
        log.warning("no prediction drift: %s", error)
        return None


def drift_report(
    references: dict[str, Reference],
    train: pd.DataFrame,
    current: pd.DataFrame,
    settings: DriftSettings,
    model: Any,
    source: str,
) -> tuple[dict[str, Any], tuple[str, np.ndarray, np.ndarray] | None]:
    """The report's content, plus the prediction arrays (for plotting) when there is a model."""
    rows = len(current)
    enough = rows >= settings.min_samples
    drift = dataset_drift(references, current, settings) if enough else no_test(settings)
    predictions = model_predictions(model, train, current) if enough and model is not None else None
    prediction = None
    if predictions:
        kind, reference_values, current_values = predictions
        prediction_reference = (
            NumericReference.from_values(reference_values)
            if kind == "numeric"
            else CategoricalReference.from_values(reference_values)
        )
        prediction = feature_drift(prediction_reference, current_values, settings)
    verdict, exit_code, message = decide(drift, prediction, rows, settings, source)
    report = {
        "format": REPORT_FORMAT,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "verdict": verdict,
        "exit_code": exit_code,
        "message": message,
        "source": source,
        "rows": {"reference": len(train), "current": rows},
        "min_samples": settings.min_samples,
        **drift,
        "prediction": prediction,
        "model": {"config_hash": model.manifest["config_hash"]} if model else None,
        "settings": asdict(settings),
    }
    return report, predictions


def no_test(settings: DriftSettings) -> dict[str, Any]:
    return {
        "features": {},
        "tested_features": 0,
        "drifted_features": [],
        "share_drifted": None,
        "share_threshold": settings.share_threshold,
        "dataset_drift": None,
    }


def model_predictions(
    model: Any, train: pd.DataFrame, current: pd.DataFrame
) -> tuple[str, np.ndarray, np.ndarray] | None:
    """(kind, reference predictions, current predictions): labels as text or values.

    The log carries the served predictions; a table without them is predicted by the model,
    as is the train split (the reference)."""
    classification = model.spec["task"] == "classification"
    logged = current["prediction"].dropna() if "prediction" in current.columns else pd.Series()
    if len(logged):
        current_values = logged.to_numpy()
    elif all(feature["name"] in current.columns for feature in model.spec["features"]):
        current_values = predicted(model, current, classification)
    else:
        log.warning("no prediction drift: the current data has neither predictions nor every feature")
        return None
    reference_values = predicted(model, train, classification)
    if classification:
        return "categorical", reference_values, current_values.astype(str)
    return "numeric", reference_values, current_values


def predicted(model: Any, frame: pd.DataFrame, classification: bool) -> np.ndarray:
    outputs = model.predict(frame)
    if not classification:
        return outputs.reshape(-1)
    labels = np.asarray([str(label) for label in model.spec["labels"]])
    return labels[outputs.argmax(axis=-1)]


def decide(
    drift: dict[str, Any],
    prediction: dict[str, Any] | None,
    rows: int,
    settings: DriftSettings,
    source: str,
) -> tuple[str, int, str]:
    """(verdict, exit code, what to do) from the feature share and the prediction drift."""
    if rows < settings.min_samples:
        found = "no inference records" if rows == 0 else f"only {rows} rows"
        return (
            "insufficient_data",
            EXIT_INSUFFICIENT_DATA,
            f"{found} in {source}; at least monitor.min_samples={settings.min_samples} are needed "
            "for a verdict",
        )
    drifted, tested = len(drift["drifted_features"]), drift["tested_features"]
    share = f"{drifted} of {tested} features drifted ({drift['share_drifted']:.0%}, threshold "
    share += f"{settings.share_threshold:.0%})"
    prediction_drifted = bool(prediction and prediction["drifted"])
    predictions = "the predictions drifted" if prediction_drifted else "the predictions did not"
    if drift["dataset_drift"] or prediction_drifted:
        return "drift", EXIT_DRIFT, f"drift: {share}; {predictions}. Retraining recommended."
    return "no_drift", EXIT_NO_DRIFT, f"no drift: {share}; {predictions}."


def drifted_figures(
    report: dict[str, Any],
    train: pd.DataFrame,
    current: pd.DataFrame,
    predictions: tuple[str, np.ndarray, np.ndarray] | None,
) -> dict[str, bytes]:
    """One reference-vs-current plot per drifted feature (and for drifted predictions)."""
    figures = {
        name: distribution_png(
            name, report["features"][name]["type"], train[name].to_numpy(), current[name].to_numpy()
        )
        for name in report["drifted_features"]
    }
    if predictions and report["prediction"]["drifted"]:
        kind, reference_values, current_values = predictions
        figures["prediction"] = distribution_png("prediction", kind, reference_values, current_values)
    return figures
