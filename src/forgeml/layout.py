"""The stage contract: the files that pass between stages, named in one place.

    prepare  -> <paths.processed_dir>/{train,val,test}.parquet, preprocessor.json, reference_profile.json,
                data_contract.json
    train    -> <paths.models_dir>/model.pt2, model.json, preprocessor.json, data_contract.json
                (+ checkpoints/)
    evaluate -> <paths.reports_dir>/metrics.json, evaluation.json,
                plots/{confusion_matrix,roc,predicted_vs_actual}.csv, figures/<figure>.png,
                reference_predictions.parquet, calibration.json (what monitor compares with),
                decision_threshold.json (a binary model's threshold; packaged into the archive)
    package  -> <serve.model_store>/<serve.model_name>.mar (+ registry.json)
    monitor  -> <paths.reports_dir>/drift.json, drift.html, monitoring.json, monitoring.html,
                plotly.min.js (what the pages draw their plots with), monitoring/{windows,feature_drift}.csv
    replay   -> <paths.reports_dir>/rollout/<version>/replay.json, replay.html

The directories come from the config; the names inside them are fixed here. Stages import these
names instead of spelling paths, and a test holds `stage_outputs` equal to dvc.yaml's outs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

SPLITS = ("train", "val", "test")
PREPROCESSOR = "preprocessor.json"
REFERENCE_PROFILE = "reference_profile.json"
# the train split's columns, kinds, categories, ranges and missing rates (data/contract.py); the
# model trained on it carries a copy, and so does its archive (contract.DATA_CONTRACT_FILE)
DATA_CONTRACT = "data_contract.json"
PROGRAM = "model.pt2"
MANIFEST = "model.json"
METRICS = "metrics.json"
EVALUATION = "evaluation.json"
PLOTS = "plots"
FIGURES = "figures"
DRIFT_REPORT = "drift.json"
DRIFT_PAGE = "drift.html"
REFERENCE_PREDICTIONS = "reference_predictions.parquet"
CALIBRATION = "calibration.json"
# evaluate.threshold_for's pick, stamped with the model's hash; the archive carries it (handler.py
# names the same file) and `forgeml predict` applies it
DECISION_THRESHOLD = "decision_threshold.json"
# evaluate's plot data under PLOTS (dvc.yaml's top-level plots draw them) and its pictures
# under FIGURES, one <figure>.png each
CONFUSION_PAIRS = "confusion_matrix.csv"
ROC_POINTS = "roc.csv"
PREDICTED_VS_ACTUAL = "predicted_vs_actual.csv"
MONITORING_REPORT = "monitoring.json"
MONITORING_PAGE = "monitoring.html"
# plotly.js, beside the pages that draw their plots with it (never fetched from the network)
PLOTLY_JS = "plotly.min.js"
# per-window tables for `dvc plots`
MONITORING_TABLES = "monitoring"
WINDOWS_TABLE = "windows.csv"
FEATURE_DRIFT_TABLE = "feature_drift.csv"
# `forgeml replay VERSION`: a candidate's answers to the logged traffic against production's,
# under ROLLOUT_REPORTS/<version>/
ROLLOUT_REPORTS = "rollout"
REPLAY_REPORT = "replay.json"
REPLAY_PAGE = "replay.html"
# `forgeml watch`, beside the monitor's reports: the last window judged, undelivered webhooks
WATCH_STATE = "watch_state.json"
WEBHOOK_OUTBOX = "webhook_outbox.json"
# a project's Kubernetes manifests (`forgeml init` writes them): KServe's InferenceService and,
# under ROLLOUT_MANIFESTS, the same service for each percentage step of serve.rollout.steps
KUBERNETES_DIR = "serve/k8s"
INFERENCE_SERVICE = "inferenceservice.yaml"
ROLLOUT_MANIFESTS = "rollout"


def split_file(processed_dir: str | Path, split: str) -> Path:
    return Path(processed_dir) / f"{split}.parquet"


def plot_file(reports_dir: str | Path, name: str) -> Path:
    """Plot data for `dvc plots`: CONFUSION_PAIRS, ROC_POINTS or PREDICTED_VS_ACTUAL."""
    return Path(reports_dir) / PLOTS / name


def figure_file(reports_dir: str | Path, figure: str) -> Path:
    return Path(reports_dir) / FIGURES / f"{figure}.png"


def monitoring_table(reports_dir: str | Path, name: str) -> Path:
    """A per-window table of `forgeml monitor`: WINDOWS_TABLE or FEATURE_DRIFT_TABLE."""
    return Path(reports_dir) / MONITORING_TABLES / name


def rollout_reports(reports_dir: str | Path, version: str) -> Path:
    """Where the evidence on a candidate version goes: REPLAY_REPORT, REPLAY_PAGE."""
    return Path(reports_dir) / ROLLOUT_REPORTS / version


def archive_file(model_store: str | Path, model_name: str) -> Path:
    return Path(model_store) / f"{model_name}.mar"


def rollout_manifest(kubernetes_dir: str | Path, position: int, percent: int) -> Path:
    """The InferenceService of step `position` (1-based, in serve.rollout.steps) sending `percent`
    of live traffic to the candidate."""
    return Path(kubernetes_dir) / ROLLOUT_MANIFESTS / f"step-{position}-{percent}.yaml"


def stage_outputs(cfg: Any) -> dict[str, list[Path]]:
    """What each pipeline stage writes: its outs, metrics and plots in dvc.yaml."""
    reports = Path(cfg.paths.reports_dir)
    return {
        "prepare": [Path(cfg.paths.processed_dir)],
        "train": [Path(cfg.paths.models_dir)],
        "evaluate": [
            reports / METRICS,
            reports / EVALUATION,
            reports / REFERENCE_PREDICTIONS,
            reports / CALIBRATION,
            reports / DECISION_THRESHOLD,
            reports / PLOTS,
            reports / FIGURES,
        ],
        "package": [archive_file(cfg.serve.model_store, cfg.serve.model_name)],
        "monitor": [
            reports / DRIFT_REPORT,
            reports / DRIFT_PAGE,
            reports / MONITORING_REPORT,
            reports / MONITORING_PAGE,
            reports / PLOTLY_JS,
            reports / MONITORING_TABLES,
        ],
    }
