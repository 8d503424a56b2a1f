"""Test metrics of a model over a test split read in batches: for splits larger than memory.

The same metrics and report files as evaluate's in-memory path, accumulated over Parquet batches
(torchmetrics for accuracy, F1, the confusion matrix and the regression metrics; per-class
precision and recall from the confusion matrix), so memory stays bounded whatever the split's
size. AUROC (one-vs-rest, macro), average precision and the ROC curve come from
histograms of the class probabilities on ROC_BINS equal bins: exact up to ties within a bin
(the in-memory path is exact). The per-row pairs for `dvc plots` are appended to their CSV batch
by batch; the scatter picture of a regression shows the first SCATTER_ROWS rows.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torchmetrics
from torchmetrics import classification as C
from torchmetrics import regression as R

from forgeml.data.transform import encode_labels, predicted_classes
from forgeml.io import atomic_path
from forgeml.layout import CONFUSION_PAIRS, PREDICTED_VS_ACTUAL, plot_file
from forgeml.models.artifact import ModelArtifact
from forgeml.models.metrics import (
    per_class_metrics,
    plot_confusion,
    plot_scatter,
    roc_figure,
    save_figures,
)
from forgeml.tables import TableWriter, open_parquet

CHUNK_ROWS = 65_536
ROC_BINS = 1000
SCATTER_ROWS = 10_000


def streamed_report(
    artifact: ModelArtifact,
    test_path: Path,
    reports: Path,
    decision: dict[str, Any] | None = None,
    chunk_rows: int = CHUNK_ROWS,
) -> tuple[int, dict[str, float], dict[str, Any]]:
    """(rows, metrics, details) as evaluate's classification/regression reports give them;
    `decision`: a binary model's decision threshold (transform.predicted_classes)."""
    spec = artifact.spec
    classes = len(spec["labels"]) if spec["task"] == "classification" else 0
    metrics, curves = _metrics(classes)
    pairs_file = plot_file(reports, CONFUSION_PAIRS if classes else PREDICTED_VS_ACTUAL)
    rows, scatter = 0, []
    with atomic_path(pairs_file) as tmp, TableWriter(tmp) as pairs_table:
        for batch in open_parquet(test_path).iter_batches(batch_size=chunk_rows):
            frame = batch.to_pandas()
            outputs = torch.from_numpy(artifact.predict(frame))
            target = frame[spec["target"]].to_numpy()
            if classes:
                targets = torch.from_numpy(encode_labels(spec, target))
                predictions = torch.from_numpy(predicted_classes(outputs.numpy(), decision))
                _update(metrics, curves, outputs, predictions, targets)
                names = np.asarray([str(label) for label in spec["labels"]], dtype=object)
                pairs = pd.DataFrame({"actual": names[targets], "predicted": names[predictions]})
            else:
                targets = torch.from_numpy(target.astype(np.float32))
                metrics.update(outputs, targets)
                pairs = pd.DataFrame({"actual": targets.numpy(), "predicted": outputs.numpy()})
                scatter.append(pairs.head(SCATTER_ROWS - sum(len(p) for p in scatter)))
            pairs_table.write(pairs)
            rows += len(frame)
    results = {f"test/{name}": value.item() for name, value in metrics.compute().items()}
    if classes:
        results["test/auroc"] = curves["roc"].auroc()
    else:
        save_figures({"predicted_vs_actual": plot_scatter(pd.concat(scatter))}, reports)
        return rows, results, {}
    confusion = curves["confusion"].compute()
    names = [str(label) for label in spec["labels"]]
    ap = np.array([curves["roc"].average_precision(label) for label in range(classes)])
    results |= per_class_metrics(confusion.numpy(), names, ap)
    figures = {"confusion_matrix": plot_confusion(confusion.numpy(), names)}
    if classes == 2:
        figures["roc"] = roc_figure(reports, *curves["roc"].curve(1))
    save_figures(figures, reports)
    return rows, results, {"labels": spec["labels"], "confusion_matrix": confusion.tolist()}


class BinnedROC:
    """One-vs-rest ROC of each class from probability histograms: constant memory, any row count."""

    def __init__(self, classes: int, bins: int = ROC_BINS) -> None:
        self.bins = bins
        self.positives = np.zeros((classes, bins), dtype=np.int64)
        self.negatives = np.zeros((classes, bins), dtype=np.int64)

    def update(self, probabilities: np.ndarray, targets: np.ndarray) -> None:
        index = np.minimum((probabilities * self.bins).astype(np.int64), self.bins - 1)
        for label in range(self.positives.shape[0]):
            positive = targets == label
            self.positives[label] += np.bincount(index[positive, label], minlength=self.bins)
            self.negatives[label] += np.bincount(index[~positive, label], minlength=self.bins)

    def curve(self, label: int) -> tuple[np.ndarray, np.ndarray]:
        """(fpr, tpr) from the highest threshold down, starting at (0, 0) and ending at (1, 1)."""
        tpr = np.concatenate([[0], np.cumsum(self.positives[label][::-1])]) / max(
            self.positives[label].sum(), 1
        )
        fpr = np.concatenate([[0], np.cumsum(self.negatives[label][::-1])]) / max(
            self.negatives[label].sum(), 1
        )
        return fpr, tpr

    def average_precision(self, label: int) -> float:
        """The area under the class's precision-recall curve, a step at each bin threshold."""
        true = np.cumsum(self.positives[label][::-1])
        predicted = true + np.cumsum(self.negatives[label][::-1])
        precision = true / np.maximum(predicted, 1)
        recall_steps = np.diff(np.concatenate([[0], true])) / max(true[-1], 1)
        return float(np.sum(recall_steps * precision))

    def auroc(self) -> float:
        """Binary: the positive class's; more classes: the macro average over classes."""
        labels = [1] if self.positives.shape[0] == 2 else range(self.positives.shape[0])
        return float(np.mean([_area(*self.curve(label)) for label in labels]))


def _area(fpr: np.ndarray, tpr: np.ndarray) -> float:
    """The area under the curve by trapezoids."""
    return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))


def _metrics(classes: int) -> tuple[torchmetrics.MetricCollection, dict[str, Any]]:
    """The scalar metrics (named as evaluate names them) and the curves, for `classes` (0: regression)."""
    if not classes:
        scalars = {
            "mae": R.MeanAbsoluteError(),
            "rmse": R.MeanSquaredError(squared=False),
            "r2": R.R2Score(),
        }
        return torchmetrics.MetricCollection(scalars), {}
    scalars = {
        "accuracy": C.MulticlassAccuracy(num_classes=classes, average="micro"),
        "f1_macro": C.MulticlassF1Score(num_classes=classes, average="macro"),
    }
    curves = {"confusion": C.MulticlassConfusionMatrix(num_classes=classes), "roc": BinnedROC(classes)}
    return torchmetrics.MetricCollection(scalars, compute_groups=False), curves


def _update(
    metrics: torchmetrics.MetricCollection,
    curves: dict[str, Any],
    probabilities: torch.Tensor,
    predictions: torch.Tensor,
    targets: torch.Tensor,
) -> None:
    metrics.update(predictions, targets)
    curves["confusion"].update(predictions, targets)
    curves["roc"].update(probabilities.numpy(), targets.numpy())
