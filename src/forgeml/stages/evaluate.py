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
from torchmetrics import functional as M

from forgeml.data.sources import streaming_enabled
from forgeml.data.transform import encode_labels, predicted_classes
from forgeml.errors import ForgeError
from forgeml.io import atomic_path, write_json
from forgeml.layout import (
    CALIBRATION,
    DECISION_THRESHOLD,
    EVALUATION,
    FIGURES,
    METRICS,
    PLOTS,
    REFERENCE_PREDICTIONS,
    split_file,
)
from forgeml.models.artifact import ModelArtifact
from forgeml.models.rare_classes import decision_threshold
from forgeml.models.streamed_evaluation import streamed_report
from forgeml.monitoring.performance import CALIBRATION_FORMAT, fit_calibration

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
    test = pd.read_parquet(test_path)
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


def classification_report(
    probabilities: torch.Tensor,
    targets: torch.Tensor,
    labels: list[Any],
    reports: Path,
    decision: dict[str, Any] | None = None,
) -> tuple[dict[str, float], dict[str, Any]]:
    classes = len(labels)
    predictions = torch.from_numpy(predicted_classes(probabilities.numpy(), decision))
    common = {"task": "multiclass", "num_classes": classes}
    if classes == 2:
        auroc = M.auroc(probabilities[:, 1], targets, task="binary")
    else:
        auroc = M.auroc(probabilities, targets, average="macro", **common)
    metrics = {
        "test/accuracy": M.accuracy(predictions, targets, **common).item(),
        "test/f1_macro": M.f1_score(predictions, targets, average="macro", **common).item(),
        "test/auroc": auroc.item(),
    }
    confusion = M.confusion_matrix(predictions, targets, **common)
    names = [str(label) for label in labels]
    precision = M.average_precision(probabilities, targets, average=None, **common)
    metrics |= per_class_metrics(confusion.numpy(), names, precision.numpy())
    pairs = pd.DataFrame(
        {"actual": [names[i] for i in targets], "predicted": [names[i] for i in predictions]}
    )
    write_csv(reports / PLOTS / "confusion_matrix.csv", pairs)
    figures = {"confusion_matrix": plot_confusion(confusion.numpy(), names)}
    if classes == 2:
        fpr, tpr, _ = M.roc(probabilities[:, 1], targets, task="binary")
        write_csv(reports / PLOTS / "roc.csv", pd.DataFrame({"fpr": fpr.numpy(), "tpr": tpr.numpy()}))
        figures["roc"] = plot_curve(fpr.numpy(), tpr.numpy(), "false positive rate", "true positive rate")
    save_figures(figures, reports / FIGURES)
    return metrics, {"labels": labels, "confusion_matrix": confusion.tolist()}


def per_class_metrics(
    confusion: np.ndarray, names: list[str], average_precision: np.ndarray
) -> dict[str, float]:
    """Precision and recall of each class from the confusion matrix (rows: actual), its average
    precision (the area under its precision-recall curve), and their macro mean: what a rare
    class needs, which accuracy hides. A class never predicted (or absent) scores 0."""
    true = np.diag(confusion).astype(np.float64)
    precision = true / np.maximum(confusion.sum(axis=0), 1)
    recall = true / np.maximum(confusion.sum(axis=1), 1)
    ap = np.nan_to_num(average_precision.astype(np.float64))
    metrics = {"test/average_precision": float(ap.mean())}
    for name, p, r, a in zip(names, precision, recall, ap, strict=True):
        metrics |= {
            f"test/precision/{name}": p,
            f"test/recall/{name}": r,
            f"test/average_precision/{name}": a,
        }
    return {key: float(value) for key, value in metrics.items()}


def regression_report(
    predictions: torch.Tensor, targets: torch.Tensor, reports: Path
) -> tuple[dict[str, float], dict[str, Any]]:
    metrics = {
        "test/mae": M.mean_absolute_error(predictions, targets).item(),
        "test/rmse": M.mean_squared_error(predictions, targets, squared=False).item(),
        "test/r2": M.r2_score(predictions, targets).item(),
    }
    pairs = pd.DataFrame({"actual": targets.numpy(), "predicted": predictions.numpy()})
    write_csv(reports / PLOTS / "predicted_vs_actual.csv", pairs)
    save_figures({"predicted_vs_actual": plot_scatter(pairs)}, reports / FIGURES)
    return metrics, {}


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


def leading_rows(path: Path, rows: int | None) -> pd.DataFrame:
    """The first `rows` rows of a Parquet file (None: all of it), read without the rest."""
    if rows is None:
        return pd.read_parquet(path)
    first = next(pq.ParquetFile(path).iter_batches(batch_size=rows), None)
    return pd.read_parquet(path) if first is None else pa.Table.from_batches([first]).to_pandas()


def write_csv(path: Path, frame: pd.DataFrame) -> None:
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)


def plot_confusion(confusion: np.ndarray, names: list[str]) -> Any:
    from matplotlib.figure import Figure

    figure = Figure(figsize=(1.0 + 0.6 * len(names), 0.8 + 0.6 * len(names)))
    axes = figure.subplots()
    axes.imshow(confusion, cmap="Blues")
    axes.set(xticks=range(len(names)), yticks=range(len(names)), xlabel="predicted", ylabel="actual")
    axes.set_xticklabels(names, rotation=45, ha="right")
    axes.set_yticklabels(names)
    for (row, col), count in np.ndenumerate(confusion):
        axes.text(col, row, str(count), ha="center", va="center")
    axes.set_title("confusion matrix (test)")
    return figure


def plot_curve(x: np.ndarray, y: np.ndarray, xlabel: str, ylabel: str) -> Any:
    from matplotlib.figure import Figure

    figure = Figure(figsize=(4.5, 4.5))
    axes = figure.subplots()
    axes.plot(x, y)
    axes.plot([0, 1], [0, 1], linestyle="--", color="grey")
    axes.set(xlabel=xlabel, ylabel=ylabel, title="ROC (test)")
    return figure


def plot_scatter(pairs: pd.DataFrame) -> Any:
    from matplotlib.figure import Figure

    figure = Figure(figsize=(4.5, 4.5))
    axes = figure.subplots()
    axes.scatter(pairs["actual"], pairs["predicted"], s=8)
    low, high = pairs.min().min(), pairs.max().max()
    axes.plot([low, high], [low, high], linestyle="--", color="grey")
    axes.set(xlabel="actual", ylabel="predicted", title="predicted vs actual (test)")
    return figure


def save_figures(figures: dict[str, Any], directory: Path) -> None:
    for name, figure in figures.items():
        figure.tight_layout()
        with atomic_path(directory / f"{name}.png") as tmp:
            figure.savefig(tmp, format="png", dpi=100)
