"""The stage contract: the files that pass between stages, named in one place.

    prepare  -> <paths.processed_dir>/{train,val,test}.parquet, preprocessor.json, reference_profile.json
    train    -> <paths.models_dir>/model.pt2, model.json, preprocessor.json (+ checkpoints/)
    evaluate -> <paths.reports_dir>/metrics.json, evaluation.json, plots/, figures/,
                reference_predictions.parquet, calibration.json (what monitor compares with),
                decision_threshold.json (a binary model's threshold; packaged into the archive)
    package  -> <serve.model_store>/<serve.model_name>.mar (+ registry.json)
    monitor  -> <paths.reports_dir>/drift.json, drift.html, monitoring.json, monitoring.html, monitoring/

The directories come from the config; the names inside them are fixed here. Stages import these
names instead of spelling paths, and a test holds `stage_outputs` equal to dvc.yaml's outs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

SPLITS = ("train", "val", "test")
PREPROCESSOR = "preprocessor.json"
REFERENCE_PROFILE = "reference_profile.json"
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
MONITORING_REPORT = "monitoring.json"
MONITORING_PAGE = "monitoring.html"
# per-window tables for `dvc plots`
MONITORING_TABLES = "monitoring"
# `forgeml watch`, beside the monitor's reports: the last window judged, undelivered webhooks
WATCH_STATE = "watch_state.json"
WEBHOOK_OUTBOX = "webhook_outbox.json"


def split_file(processed_dir: str | Path, split: str) -> Path:
    return Path(processed_dir) / f"{split}.parquet"


def archive_file(model_store: str | Path, model_name: str) -> Path:
    return Path(model_store) / f"{model_name}.mar"


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
            reports / MONITORING_TABLES,
        ],
    }
