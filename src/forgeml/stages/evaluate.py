"""evaluate: test metrics of the model artifact in models/ on the held-out test split.

Rebuilds from the artifact (exported program + its preprocessor.json), never from today's conf/.
Writes reports/metrics.json (flat keys, DVC metrics), reports/evaluation.json (confusion matrix,
labels, config hash), plot data under reports/plots/ for `dvc plots` and PNGs under
reports/figures/.

For `forgeml monitor`, which then needs no torch: reports/reference_predictions.parquet (the
model's predictions on the train split, the reference of prediction drift) and, for
classification, reports/calibration.json (isotonic curves fitted on the test split, for the
label-free accuracy estimate; without curves for regression), both stamped with the model's hash.

Classification: test/accuracy, test/f1_macro, test/auroc, test/average_precision (PR-AUC, macro)
and per class test/precision/<class>, test/recall/<class>, test/average_precision/<class>
(+ confusion matrix; ROC for binary).

Rare classes: `evaluate.threshold_for` (f1, recall@precision=0.9, precision@recall=0.8) picks a
binary model's decision threshold on the validation split, for its rarer class; the test
metrics then measure the decisions that threshold makes, as the endpoint and `forgeml predict`
make them. reports/decision_threshold.json holds it (threshold null without one), stamped with
the model's hash; `forgeml package` puts it into the archive.
Regression: test/mae, test/rmse, test/r2 (+ predicted vs actual).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from omegaconf import DictConfig

from forgeml.data.sources import streaming_enabled
from forgeml.data.transform import encode_labels, predicted_classes
from forgeml.errors import ForgeError
from forgeml.io import atomic_path, write_json
from forgeml.layout import (
    CALIBRATION,
    DECISION_THRESHOLD,
    EVALUATION,
    METRICS,
    REFERENCE_PREDICTIONS,
    split_file,
)
from forgeml.models.artifact import ModelArtifact
from forgeml.models.metrics import classification_report, regression_report
from forgeml.models.rare_classes import decision_threshold
from forgeml.models.streamed_evaluation import streamed_report
from forgeml.monitoring.performance import CALIBRATION_FORMAT, fit_calibration
from forgeml.tables import leading_rows, read_table

log = logging.getLogger(__name__)
# rows of the streamed splits that the monitoring reference (predictions, calibration) is made of
MONITORING_SAMPLE_ROWS = 200_000


def run(cfg: DictConfig) -> dict[str, Any]:
    artifact = ModelArtifact.load(cfg.paths.models_dir)
    test_path = split_file(cfg.paths.processed_dir, "test")
    reports = Path(cfg.paths.reports_dir)
    streaming = streaming_enabled(cfg.data, test_path)
    # on the leading rows of a streamed split (in hashed order), like monitor's reference
    decision = pick_decision(artifact, cfg, MONITORING_SAMPLE_ROWS if streaming else None)
    if streaming:  # larger than memory: metrics over batches
        rows, metrics, details = streamed_report(artifact, test_path, reports, decision)
        sample = leading_rows(test_path, MONITORING_SAMPLE_ROWS)
        processed = Path(cfg.paths.processed_dir)
        outputs = artifact.predict(sample)
        write_monitoring_reference(
            artifact, outputs, sample, processed, reports, MONITORING_SAMPLE_ROWS, decision
        )
        return write_reports(artifact, reports, rows, metrics, details, decision)
    test = read_table(test_path)
    outputs = torch.from_numpy(artifact.predict(test))
    if artifact.spec["task"] == "classification":
        targets = torch.from_numpy(encode_labels(artifact.spec, test[artifact.spec["target"]].to_numpy()))
        metrics, details = classification_report(outputs, targets, artifact.spec["labels"], reports, decision)
    else:
        targets = torch.from_numpy(test[artifact.spec["target"]].to_numpy(np.float32))
        metrics, details = regression_report(outputs, targets, reports)
    write_monitoring_reference(
        artifact, outputs.numpy(), test, Path(cfg.paths.processed_dir), reports, decision=decision
    )
    return write_reports(artifact, reports, len(test), metrics, details, decision)


def pick_decision(artifact: ModelArtifact, cfg: DictConfig, rows: int | None) -> dict[str, Any]:
    """`evaluate.threshold_for`'s threshold, from the model's probabilities on the validation
    split (its first `rows` rows; None: all), stamped with the model's hash."""
    decision: dict[str, Any] = {"target": None, "threshold": None}
    if cfg.evaluate.threshold_for is not None:
        if artifact.spec["task"] != "classification":
            raise ForgeError(
                "evaluate.threshold_for picks a classifier's threshold; this model is a regression"
            )
        val = leading_rows(split_file(cfg.paths.processed_dir, "val"), rows)
        targets = encode_labels(artifact.spec, val[artifact.spec["target"]].to_numpy())
        decision = decision_threshold(
            artifact.predict(val), targets, artifact.spec, cfg.evaluate.threshold_for
        )
    return {**decision, "model_hash": artifact.manifest.get("model_hash")}


def write_reports(
    artifact: ModelArtifact,
    reports: Path,
    rows: int,
    metrics: dict[str, float],
    details: dict[str, Any],
    decision: dict[str, Any],
) -> dict[str, Any]:
    """The report files; returns the metrics, and the decision threshold when one was picked."""
    write_json(reports / DECISION_THRESHOLD, decision)
    write_json(reports / METRICS, metrics)
    write_json(
        reports / EVALUATION,
        {
            "config_hash": artifact.manifest["config_hash"],
            "rows": rows,
            **details,
            "metrics": metrics,
        },
    )
    log.info("test metrics: %s", metrics)
    if decision["threshold"] is None:
        return metrics
    return {
        **metrics,
        "decision/threshold": decision["threshold"],
        "decision/positive_class": decision["positive_class"],
    }


def write_monitoring_reference(
    artifact: ModelArtifact,
    test_outputs: np.ndarray,
    test: pd.DataFrame,
    processed: Path,
    reports: Path,
    train_rows: int | None = None,
    decision: dict[str, Any] | None = None,
) -> None:
    """What `monitor` compares with, computed once here: reference predictions (on the train
    split, or its first `train_rows` rows) and calibration, which carries the decision threshold
    (if one was picked) so that the estimate counts the classes the model serves."""
    spec, model_hash = artifact.spec, artifact.manifest["model_hash"]
    outputs = artifact.predict(leading_rows(split_file(processed, "train"), train_rows))
    if spec["task"] == "classification":
        labels = np.asarray([str(label) for label in spec["labels"]])
        predictions = pa.array(labels[predicted_classes(outputs, decision)])
        targets = encode_labels(spec, test[spec["target"]].to_numpy())
        calibration = fit_calibration(test_outputs, targets, spec["labels"])
        if decision and decision.get("threshold") is not None:
            calibration["decision"] = {key: decision[key] for key in ("positive_index", "threshold")}
    else:
        predictions = pa.array(outputs.reshape(-1).astype(np.float64))
        calibration = {"format": CALIBRATION_FORMAT, "method": None, "curves": None}  # nothing to estimate
    write_json(reports / CALIBRATION, {**calibration, "model_hash": model_hash})
    table = pa.table({"prediction": predictions}).replace_schema_metadata({"model_hash": model_hash})
    with atomic_path(reports / REFERENCE_PREDICTIONS) as tmp:
        pq.write_table(table, tmp)
