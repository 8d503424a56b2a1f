"""A model's test metrics and the pictures of them, as evaluate reports them.

Shared by evaluate's in-memory path and the streamed one (models/streamed_evaluation.py), so both
name their metrics, plot data and figures alike. Classification: accuracy, macro F1, AUROC,
average precision and per-class precision/recall (+ confusion matrix; ROC for binary);
regression: MAE, RMSE, R² (+ predicted vs actual).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torchmetrics import functional as M

from forgeml.data.transform import predicted_classes
from forgeml.io import atomic_path
from forgeml.layout import (
    CONFUSION_PAIRS,
    PREDICTED_VS_ACTUAL,
    ROC_POINTS,
    figure_file,
    plot_file,
)
from forgeml.tables import write_table


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
    write_table(pairs, plot_file(reports, CONFUSION_PAIRS))
    figures = {"confusion_matrix": plot_confusion(confusion.numpy(), names)}
    if classes == 2:
        fpr, tpr, _ = M.roc(probabilities[:, 1], targets, task="binary")
        figures["roc"] = roc_figure(reports, fpr.numpy(), tpr.numpy())
    save_figures(figures, reports)
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
    write_table(pairs, plot_file(reports, PREDICTED_VS_ACTUAL))
    save_figures({"predicted_vs_actual": plot_scatter(pairs)}, reports)
    return metrics, {}


def roc_figure(reports: Path, fpr: np.ndarray, tpr: np.ndarray) -> Any:
    """A binary model's ROC: its points for `dvc plots`, and the picture of them."""
    write_table(pd.DataFrame({"fpr": fpr, "tpr": tpr}), plot_file(reports, ROC_POINTS))
    return plot_curve(fpr, tpr, "false positive rate", "true positive rate")


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


def save_figures(figures: dict[str, Any], reports: Path) -> None:
    """Each figure as reports/figures/<name>.png."""
    for name, figure in figures.items():
        figure.tight_layout()
        with atomic_path(figure_file(reports, name)) as tmp:
            figure.savefig(tmp, format="png", dpi=100)
