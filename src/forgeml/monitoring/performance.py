"""Is the model still good? Measured metrics once labels arrive, estimated ones before.

Measured: delayed labels (a CSV or Parquet table with `id` and `label` columns) are joined to the
inference log by request id, and the served predictions scored as `evaluate` scores the test
split: accuracy and macro F1 (classification), MAE, RMSE and R² (regression).

Estimated (classification): confidence-based performance estimation, as NannyML's CBPE. At
`evaluate` the model's probabilities on the test split are calibrated by isotonic regression
(one curve per class, one-vs-rest; one curve for the positive class of a binary model) and the
curves are stored as JSON (reports/calibration.json). For a window of logged probabilities, the
calibrated probability p_ik is the chance that row i is of class k, so the expected confusion
matrix is E[C[k, j]] = sum of p_ik over the rows predicted j, and accuracy and macro F1 follow
from it, without a single label. The band is ±3 standard deviations of two errors together: the
window's sampling error, the spread of the metric over draws of the confusion matrix (normal
approximation of each predicted class's column, its covariance sum(diag(p) - p pᵀ)), and the
calibration's own, fitted on a finite evaluation split of n rows: the standard error of the
metric on n rows, sqrt(m (1 - m) / n). (Sampling error alone, as NannyML bands, left 5% of
windows outside a 3-sigma band in tests/unit/test_performance.py's setting.)

The estimate holds under covariate shift (P(label | input) unchanged); a change in that
relation (concept drift) is what the measured metrics and the labels are for.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from forgeml.data.transform import predicted_classes
from forgeml.errors import ForgeError
from forgeml.tables import read_table

CALIBRATION_FORMAT = "forgeml.calibration/1"
# draws of the confusion matrix for the band; a fixed seed keeps a report reproducible
BAND_DRAWS = 2000
BAND_SIGMAS = 3.0
HIGHER_IS_BETTER = frozenset({"accuracy", "f1_macro", "r2"})


def fit_calibration(probabilities: np.ndarray, targets: np.ndarray, labels: list[Any]) -> dict[str, Any]:
    """Isotonic curves mapping a class's predicted probability to its observed frequency."""
    from sklearn.isotonic import IsotonicRegression

    classes = [1] if len(labels) == 2 else range(len(labels))
    curves = {}
    for k in classes:
        fitted = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip")
        fitted.fit(probabilities[:, k], (targets == k).astype(np.float64))
        curves[str(labels[k])] = {"x": fitted.X_thresholds_.tolist(), "y": fitted.y_thresholds_.tolist()}
    return {
        "format": CALIBRATION_FORMAT,
        "method": "isotonic",
        "labels": [str(label) for label in labels],
        "rows": len(targets),
        "curves": curves,
    }


def calibrated(calibration: dict[str, Any], probabilities: np.ndarray) -> np.ndarray:
    """The probabilities mapped through the curves (isotonic regression predicts by linear
    interpolation between its thresholds, clipped at the ends: np.interp), rows summing to 1."""
    labels, curves = calibration["labels"], calibration["curves"]
    if len(labels) == 2:
        curve = curves[labels[1]]
        positive = np.interp(probabilities[:, 1], curve["x"], curve["y"])
        return np.column_stack([1.0 - positive, positive])
    columns = [
        np.interp(probabilities[:, k], curves[name]["x"], curves[name]["y"]) for k, name in enumerate(labels)
    ]
    mapped = np.column_stack(columns)
    totals = mapped.sum(axis=1, keepdims=True)
    # a row every curve sends to 0 keeps the model's own probabilities
    return np.where(totals > 0, mapped / np.where(totals > 0, totals, 1.0), probabilities)


def estimate_classification(
    probabilities: np.ndarray,
    calibration: dict[str, Any],
    seed: int = 0,
    predicted: np.ndarray | None = None,
) -> dict[str, Any]:
    """Estimated accuracy and macro F1 of rows the model scored with `probabilities`, each with
    its band (lower, upper). A row counts as predicted what the model served: the most probable
    class, or by the binary decision threshold stored with the calibration (`decision`), unless
    `predicted` gives each row's class index (the answer a version actually gave)."""
    p = calibrated(calibration, probabilities)
    if predicted is None:
        predicted = predicted_classes(probabilities, calibration.get("decision"))
    classes = p.shape[1]
    expected = np.zeros((classes, classes))
    draws = np.zeros((BAND_DRAWS, classes, classes))
    rng = np.random.default_rng(seed)
    for j in range(classes):
        rows = p[predicted == j]
        if not len(rows):
            continue
        expected[:, j] = rows.sum(axis=0)
        covariance = np.diag(expected[:, j]) - rows.T @ rows
        # positive semi-definite by construction; rounding may leave eigenvalues of -1e-13
        draws[:, :, j] = rng.multivariate_normal(
            expected[:, j], covariance, BAND_DRAWS, method="eigh", check_valid="ignore"
        )
    accuracy, f1 = confusion_scores(expected[None])
    draw_accuracy, draw_f1 = confusion_scores(draws)
    fitted_on = calibration["rows"]
    return {
        "rows": len(p),
        "accuracy": float(accuracy[0]),
        "accuracy_band": band(float(accuracy[0]), draw_accuracy, fitted_on),
        "f1_macro": float(f1[0]),
        "f1_macro_band": band(float(f1[0]), draw_f1, fitted_on),
    }


def uncalibrated(labels: list[Any]) -> dict[str, Any]:
    """A calibration that takes a model's probabilities as they are, for a model `evaluate` fitted
    none for: fitted on no rows, so its band spans what a single row could."""
    names = [str(label) for label in labels]
    classes = names[1:] if len(names) == 2 else names
    return {
        "format": CALIBRATION_FORMAT,
        "method": "none",
        "labels": names,
        "rows": 0,
        "curves": {name: {"x": [0.0, 1.0], "y": [0.0, 1.0]} for name in classes},
    }


def confusion_scores(confusion: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Accuracy and macro F1 of a stack of confusion matrices [draw, actual, predicted], F1 over
    the classes that occur (actual or predicted), as scikit-learn's default."""
    total = confusion.sum(axis=(1, 2))
    correct = np.trace(confusion, axis1=1, axis2=2)
    true_positive = np.diagonal(confusion, axis1=1, axis2=2)
    actual, predicted = confusion.sum(axis=2), confusion.sum(axis=1)
    denominator = actual + predicted
    occurs = denominator > 0
    f1 = np.where(occurs, 2 * true_positive / np.where(occurs, denominator, 1.0), 0.0)
    return correct / total, f1.sum(axis=1) / np.maximum(occurs.sum(axis=1), 1)


def band(estimate: float, draws: np.ndarray, calibration_rows: int) -> list[float]:
    """estimate ± BAND_SIGMAS standard deviations of the window's and the calibration's errors."""
    calibration_variance = estimate * (1.0 - estimate) / max(calibration_rows, 1)
    spread = BAND_SIGMAS * float(np.sqrt(np.var(draws) + calibration_variance))
    return [max(estimate - spread, 0.0), min(estimate + spread, 1.0)]


def measured_metrics(task: str, actual: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    """The test metrics of `evaluate`, computed on labelled traffic."""
    if task == "classification":
        actual, predicted = actual.astype(str), predicted.astype(str)
        classes, codes = np.unique(np.concatenate([actual, predicted]), return_inverse=True)
        pairs = codes[: len(actual)] * len(classes) + codes[len(actual) :]
        confusion = np.bincount(pairs, minlength=len(classes) ** 2).reshape(len(classes), len(classes))
        accuracy, f1 = confusion_scores(confusion[None].astype(np.float64))
        return {"accuracy": float(accuracy[0]), "f1_macro": float(f1[0])}
    actual, predicted = actual.astype(np.float64), predicted.astype(np.float64)
    errors = predicted - actual
    spread = np.sum((actual - actual.mean()) ** 2)
    return {
        "mae": float(np.abs(errors).mean()),
        "rmse": float(np.sqrt(np.mean(errors**2))),
        "r2": float(1.0 - np.sum(errors**2) / spread) if spread > 0 else float("nan"),
    }


def metric_drops(measured: dict[str, float], evaluation: dict[str, float]) -> dict[str, float]:
    """How far each score (accuracy, F1, R²) fell below the evaluation's `test/<name>`."""
    return {
        name: evaluation[f"test/{name}"] - value
        for name, value in measured.items()
        if name in HIGHER_IS_BETTER and f"test/{name}" in evaluation
    }


def read_labels(source: str | Path, task: str) -> pd.DataFrame:
    """The delayed labels: columns `id` (as text, as in the log) and `label`; the last label of
    an id wins (a correction)."""
    path = Path(source)
    if not path.is_file():
        raise ForgeError(f"monitor.labels: {path} does not exist (a CSV or Parquet file with id,label)")
    csv_types = {"id": str, "label": str if task == "classification" else float}
    frame = read_table(path, csv_types=csv_types, key="monitor.labels")
    missing = {"id", "label"} - set(frame.columns)
    if missing:
        raise ForgeError(
            f"monitor.labels: {path} has no column {', '.join(sorted(missing))} (needs id,label)"
        )
    frame = frame[["id", "label"]].dropna().astype({"id": str})
    return frame.drop_duplicates("id", keep="last")


def join_labels(current: pd.DataFrame, labels: pd.DataFrame) -> pd.Series:
    """Each logged record's label by its request id (NaN where none has arrived)."""
    if "id" not in current.columns:
        return pd.Series(np.nan, index=current.index, dtype=object)
    by_id = labels.set_index("id")["label"]
    return current["id"].astype(str).map(by_id)
