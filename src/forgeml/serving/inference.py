"""Inference of a forgeml model archive: the exported program applied to checked records, with
the preprocessing training fitted, by the module training applies it with. Shared by every
serving backend (the TorchServe adapter is handler.py).

The archive carries, beside this file (the names are contract.py's):

    model.pt2            the exported program (torch.export): float32 [batch, input_dim] in
    preprocessor.json    the fitted preprocessing (medians, means, categories, labels)
    transform.py         the very module training uses to apply it
    input_schema.json    the request contract (request.py) and the monitoring settings
                         (monitoring.py)
    decision_threshold.json  a binary model's decision threshold (`evaluate.threshold_for`),
                         if one was picked: the label follows it, not the most probable class

A finite value the model cannot compute (standardised, it overflows float32; or the model's
output is not finite) is answered 400 naming the feature (request.incomputable), never a 200
with NaN in it; the other requests of the batch are answered normally.

Imports the standard library, numpy and torch; transform.py and contract.py are handed in by
the caller (see handler.py on how the archive's modules meet).
"""

from __future__ import annotations

import json
import os
from types import ModuleType
from typing import Any

import numpy as np
import torch


class Inference:
    """One archive's program and preprocessing, loaded once per worker; the program is never
    unpickled."""

    def __init__(self, model_dir: str, program_file: str, transform: ModuleType, contract: ModuleType):
        self.transform = transform
        self.preprocessor = read_json(os.path.join(model_dir, contract.PREPROCESSOR_FILE))
        self.schema = read_json(os.path.join(model_dir, contract.SCHEMA_FILE))
        decision = os.path.join(model_dir, contract.DECISION_FILE)
        self.decision = read_json(decision) if os.path.isfile(decision) else None
        features = self.schema["features"]
        numeric = [f for f in features if f["type"] == "numeric"]
        self.numeric = [f["name"] for f in numeric]
        self.categorical = [f["name"] for f in features if f["type"] != "numeric"]
        # the training range (null bounds are NaN, which no value is outside of)
        self.low = np.array([f.get("min") for f in numeric], dtype=np.float64)
        self.high = np.array([f.get("max") for f in numeric], dtype=np.float64)
        # JSON object keys are strings, whatever type the labels have
        self.class_keys = [str(label) for label in self.schema["labels"] or []]
        program = torch.export.load(os.path.join(model_dir, program_file)).module(check_guards=False)
        # its forward alone: a module call flattens the input and checks it against the export's
        # constraints first, a third of a one-record forward, and this module always passes
        # what the program was exported for (float32 [rows, input_dim], from transform.py)
        self.program = program.forward

    def infer(self, batch: Any) -> Any:
        """One forward pass over every accepted record of every request in `batch` (a
        request.Batch), filling its outputs, predictions and out-of-range counts. A request with
        a record the model cannot compute is refused and the rest passed again."""
        records = batch.records()
        if not records:
            batch.predictions = []
            return batch
        # numbers in one array (None -> NaN, which transform.py imputes), categories as lists
        numbers = np.array([[r[name] for name in self.numeric] for r in records], dtype=np.float64)
        columns = {name: numbers[:, j] for j, name in enumerate(self.numeric)}
        columns |= {name: [r[name] for r in records] for name in self.categorical}
        inputs = self.transform.encode_features(self.preprocessor, columns)
        overflow = self.transform.overflowing_features(self.preprocessor, inputs)
        with torch.inference_mode():
            outputs = self.program(torch.from_numpy(inputs)).numpy()
        finite = np.isfinite(outputs.reshape(len(outputs), -1)).all(axis=1)
        if (overflow >= 0).any() or not finite.all():
            self.refuse_incomputable(batch, overflow, finite)
            return self.infer(batch)
        batch.outputs = outputs
        batch.out_of_range = ((numbers < self.low) | (numbers > self.high)).sum(axis=0)
        self.predict(batch)
        return batch

    def refuse_incomputable(self, batch: Any, overflow: np.ndarray, finite: np.ndarray) -> None:
        """Refuse each request with an incomputable record, naming the feature: the overflowing
        one, else the one furthest from the training mean."""
        features, row = self.preprocessor["features"], 0
        for position, request in list(batch.accepted()):
            for index, record in enumerate(request):
                first = overflow[row + index]
                if first >= 0 or not finite[row + index]:
                    feature = features[first] if first >= 0 else self.most_extreme(record)
                    batch.refuse_incomputable(position, index, feature)
                    break
            row += len(request)

    def most_extreme(self, record: dict[str, Any]) -> dict[str, Any] | None:
        """The numeric feature of `record` furthest from its training mean (None: none)."""
        numeric = [f for f in self.preprocessor["features"] if f["type"] == "numeric"]
        values = np.array([[record[f["name"]]] for f in numeric], dtype=np.float64)
        distance = [abs(self.transform.standardise(f, v)[0]) for f, v in zip(numeric, values, strict=True)]
        return numeric[int(np.argmax(distance))] if numeric else None

    def predict(self, batch: Any) -> None:
        """The batch's predictions, one per accepted record: {"value"}, or {"label",
        "probabilities"} with the label decided by the decision threshold when there is one."""
        outputs = batch.outputs
        if self.schema["task"] == "regression":
            batch.predictions = [{"value": value} for value in outputs.tolist()]
            return
        labels = self.schema["labels"]
        batch.classes = self.transform.predicted_classes(outputs, self.decision)
        batch.predictions = [
            {"label": labels[best], "probabilities": dict(zip(self.class_keys, row, strict=True))}
            for best, row in zip(batch.classes.tolist(), outputs.tolist(), strict=True)
        ]


def read_json(path: str) -> Any:
    with open(path, encoding="utf-8") as file:
        return json.load(file)
