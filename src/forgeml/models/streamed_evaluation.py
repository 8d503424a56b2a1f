"""Test metrics of a model over a test split read in batches: for splits larger than memory.

The same metrics and report files as evaluate's in-memory path, accumulated by torchmetrics over
Parquet batches, so memory stays bounded whatever the split's size. AUROC and the ROC curve are
computed on ROC_THRESHOLDS evenly spaced probability thresholds (torchmetrics' binned mode; the
in-memory path is exact); the per-row pairs for `dvc plots` are appended to their CSV batch by
batch; the scatter picture of a regression shows the first SCATTER_ROWS rows.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import torch
import torchmetrics
from torchmetrics import classification as C
from torchmetrics import regression as R

from forgeml.data.transform import encode_labels
from forgeml.io import atomic_path
from forgeml.models.artifact import ModelArtifact

CHUNK_ROWS = 65_536
ROC_THRESHOLDS = 1001
SCATTER_ROWS = 10_000


def streamed_report(
    artifact: ModelArtifact, test_path: Path, reports: Path, chunk_rows: int = CHUNK_ROWS
) -> tuple[int, dict[str, float], dict[str, Any]]:
    """(rows, metrics, details) as evaluate's classification/regression reports give them."""
    from forgeml.stages.evaluate import plot_confusion, plot_curve, plot_scatter, save_figures

    spec = artifact.spec
    classes = len(spec["labels"]) if spec["task"] == "classification" else 0
    metrics, curves = _metrics(classes)
    pairs_file = "confusion_matrix.csv" if classes else "predicted_vs_actual.csv"
    rows, scatter = 0, []
    with atomic_path(reports / "plots" / pairs_file) as tmp:
        for batch in pq.ParquetFile(test_path).iter_batches(batch_size=chunk_rows):
            frame = batch.to_pandas()
            outputs = torch.from_numpy(artifact.predict(frame))
            target = frame[spec["target"]].to_numpy()
            if classes:
                targets = torch.from_numpy(encode_labels(spec, target))
                _update(metrics, curves, outputs, targets)
                names = np.asarray([str(label) for label in spec["labels"]], dtype=object)
                pairs = pd.DataFrame({"actual": names[targets], "predicted": names[outputs.argmax(-1)]})
            else:
                targets = torch.from_numpy(target.astype(np.float32))
                metrics.update(outputs, targets)
                pairs = pd.DataFrame({"actual": targets.numpy(), "predicted": outputs.numpy()})
                scatter.append(pairs.head(SCATTER_ROWS - sum(len(p) for p in scatter)))
            pairs.to_csv(tmp, mode="a", header=rows == 0, index=False)
            rows += len(frame)
    results = {f"test/{name}": value.item() for name, value in metrics.compute().items()}
    if not classes:
        save_figures({"predicted_vs_actual": plot_scatter(pd.concat(scatter))}, reports / "figures")
        return rows, results, {}
    confusion = curves["confusion"].compute()
    names = [str(label) for label in spec["labels"]]
    figures = {"confusion_matrix": plot_confusion(confusion.numpy(), names)}
    if classes == 2:
        fpr, tpr, _ = curves["roc"].compute()
        with atomic_path(reports / "plots" / "roc.csv") as tmp:
            pd.DataFrame({"fpr": fpr.numpy(), "tpr": tpr.numpy()}).to_csv(tmp, index=False)
        figures["roc"] = plot_curve(fpr.numpy(), tpr.numpy(), "false positive rate", "true positive rate")
    save_figures(figures, reports / "figures")
    return rows, results, {"labels": spec["labels"], "confusion_matrix": confusion.tolist()}


def _metrics(classes: int) -> tuple[torchmetrics.MetricCollection, dict[str, torchmetrics.Metric]]:
    """The scalar metrics (named as evaluate names them) and the curves, for `classes` (0: regression)."""
    if not classes:
        scalars = {
            "mae": R.MeanAbsoluteError(),
            "rmse": R.MeanSquaredError(squared=False),
            "r2": R.R2Score(),
        }
        return torchmetrics.MetricCollection(scalars), {}
    common = {"num_classes": classes}
    auroc = (
        C.BinaryAUROC(thresholds=ROC_THRESHOLDS)
        if classes == 2
        else C.MulticlassAUROC(average="macro", thresholds=ROC_THRESHOLDS, **common)
    )
    scalars = {
        "accuracy": C.MulticlassAccuracy(average="micro", **common),
        "f1_macro": C.MulticlassF1Score(average="macro", **common),
        "auroc": auroc,
    }
    curves = {"confusion": C.MulticlassConfusionMatrix(**common)}
    if classes == 2:
        curves["roc"] = C.BinaryROC(thresholds=ROC_THRESHOLDS)
    return torchmetrics.MetricCollection(scalars, compute_groups=False), curves


def _update(
    metrics: torchmetrics.MetricCollection,
    curves: dict[str, torchmetrics.Metric],
    probabilities: torch.Tensor,
    targets: torch.Tensor,
) -> None:
    predictions = probabilities.argmax(-1)
    binary = probabilities.shape[1] == 2
    for name, metric in metrics.items():
        if name == "auroc":
            metric.update(probabilities[:, 1] if binary else probabilities, targets)
        else:
            metric.update(predictions, targets)
    curves["confusion"].update(predictions, targets)
    if binary:
        curves["roc"].update(probabilities[:, 1], targets)
