"""Rare classes: weights of the classification loss (`train.class_weights`) and the decision
threshold of a binary model (`evaluate.threshold_for`).

The threshold is picked on the validation split for the positive class (the rarer one there),
written to reports/decision_threshold.json stamped with the model's hash, carried by the archive
and applied wherever the model decides (transform.predicted_classes). torch and torchmetrics
are imported where a threshold is picked: `forgeml package` reads the threshold without them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.compute as pc

from forgeml.config import check_class_weights
from forgeml.data.transform import encode_labels
from forgeml.errors import ForgeError
from forgeml.io import read_json
from forgeml.layout import DECISION_THRESHOLD
from forgeml.tables import open_parquet

THRESHOLD_TARGET = re.compile(
    r"^(?:f1|recall@precision[=:](?P<precision>[0-9.]+)|precision@recall[=:](?P<recall>[0-9.]+))$"
)
THRESHOLD_CHOICES = "null, f1, recall@precision:<0..1>, precision@recall:<0..1>"


def class_counts(train_path: str | Path, spec: Mapping[str, Any]) -> np.ndarray:
    """Rows per class of the train split, read a column batch at a time (so a streamed split too)."""
    counts = np.zeros(len(spec["labels"]), dtype=np.int64)
    for batch in open_parquet(train_path).iter_batches(columns=[spec["target"]]):
        values = pc.value_counts(batch.column(0))
        labels = values.field("values").to_numpy(zero_copy_only=False)
        np.add.at(counts, encode_labels(spec, labels), values.field("counts").to_numpy())
    return counts


def class_weights(setting: Any, spec: Mapping[str, Any], train_path: str | Path) -> np.ndarray | None:
    """The loss weight of each class (in label order), or None for an unweighted loss.

    `balanced`: n_samples / (n_classes * count), sklearn's rule, so each class carries the same
    total weight; a mapping names classes (as text) and leaves the others at 1."""
    check_class_weights(setting)
    if setting is None or setting == "none":
        return None
    if spec["task"] != "classification":
        raise ForgeError("train.class_weights weights a classification loss; this model is a regression")
    names = [str(label) for label in spec["labels"]]
    if setting == "balanced":
        counts = class_counts(train_path, spec)
        weights = counts.sum() / (len(counts) * np.maximum(counts, 1))
        return weights.astype(np.float32)
    weights = np.ones(len(names), dtype=np.float32)
    for name, weight in setting.items():
        if str(name) not in names:
            raise ForgeError(f"train.class_weights: {name!r} is not a class; the classes: {', '.join(names)}")
        weights[names.index(str(name))] = weight
    return weights


def threshold_target(text: str | None) -> tuple[str, float | None] | None:
    """`evaluate.threshold_for` parsed: ("f1", None), ("recall", min precision) or ("precision",
    min recall); None: no threshold. A typo names the choices."""
    if text is None:
        return None
    match = THRESHOLD_TARGET.match(str(text).replace(" ", ""))
    bound = match and (match["precision"] or match["recall"])
    if not match or (bound and not 0 < float(bound) <= 1):
        raise ForgeError(f"evaluate.threshold_for={text!r}: choose one of {THRESHOLD_CHOICES}")
    if match["precision"]:
        return "recall", float(match["precision"])
    if match["recall"]:
        return "precision", float(match["recall"])
    return "f1", None


def pick_threshold(scores: np.ndarray, positives: np.ndarray, target: tuple[str, float | None]) -> float:
    """The threshold on the positive class's probability that meets `target` on these rows:
    the best F1, the best recall at a least precision, or the best precision at a least recall."""
    import torch
    from torchmetrics import functional as M

    kind, bound = target
    scores, positives = torch.from_numpy(scores), torch.from_numpy(positives.astype(np.int64))
    if kind == "f1":
        precision, recall, thresholds = M.precision_recall_curve(scores, positives, task="binary")
        f1 = 2 * precision * recall / (precision + recall).clamp_min(1e-12)
        return float(thresholds[f1[:-1].argmax()])  # the curve's last point has no threshold
    if kind == "recall":
        value, threshold = M.classification.binary_recall_at_fixed_precision(scores, positives, bound)
    else:
        value, threshold = M.classification.binary_precision_at_fixed_recall(scores, positives, bound)
    if value <= 0 or threshold > 1:
        measured = "precision" if kind == "recall" else "recall"
        raise ForgeError(
            f"evaluate.threshold_for: no threshold reaches {measured} {bound} on the validation split; "
            "lower the target or choose f1"
        )
    return float(threshold)


def decision_threshold(
    probabilities: np.ndarray, labels_index: np.ndarray, spec: Mapping[str, Any], setting: str | None
) -> dict[str, Any]:
    """What reports/decision_threshold.json holds (less the model's hash): the positive class (the
    rarer one on the validation split) and the threshold for `setting`; `threshold` null without one."""
    target = threshold_target(setting)
    if target is None:
        return {"target": None, "threshold": None}
    if len(spec["labels"]) != 2:
        raise ForgeError(
            f"evaluate.threshold_for={setting!r} picks a binary model's threshold; this model has "
            f"{len(spec['labels'])} classes (set evaluate.threshold_for=null)"
        )
    counts = np.bincount(labels_index, minlength=2)
    positive = int(counts[1] <= counts[0])  # the rarer class; the second label on a tie
    scores = np.ascontiguousarray(probabilities[:, positive])
    threshold = pick_threshold(scores, labels_index == positive, target)
    return {
        "target": setting,
        "positive_class": spec["labels"][positive],
        "positive_index": positive,
        "threshold": threshold,
    }


def read_decision(reports_dir: str | Path, model_hash: str) -> dict[str, Any] | None:
    """The decision threshold evaluate picked for this very model, or None (none picked, or one
    picked for another model)."""
    path = Path(reports_dir) / DECISION_THRESHOLD
    if not path.is_file():
        return None
    decision = read_json(path)
    if decision.get("model_hash") != model_hash or decision.get("threshold") is None:
        return None
    return decision
