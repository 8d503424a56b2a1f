"""TorchServe handler of a forgeml model archive.

Runs inside a stock TorchServe worker, so it imports torch, numpy, the standard library and
`ts` only. The archive carries, next to this file:

    model.pt2            the exported program (torch.export): float32 [batch, input_dim] in
    preprocessor.json    the fitted preprocessing (medians, means, categories, labels)
    transform.py         the very module training uses to apply it, loaded here by path
    input_schema.json    the request contract: features, types, categories, ranges, limits

Request:  {"instances": [{feature: value, ...}, ...]} or a single record {feature: value, ...}
Response: {"predictions": [...]}, each {"label": ..., "probabilities": {class: p}}
          (classification) or {"value": x} (regression).

A feature that is absent, of the wrong type, or infinite; malformed JSON; an empty or too
long `instances` list: HTTP 400 with {"error", "field", "instance"}. `null` (and NaN, which
Python's JSON accepts) is a missing value, imputed as in training; an unknown category is the
unknown bucket, as in training.
Inside a dynamic batch a bad request fails alone: the others are answered normally.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np
import torch
from ts.torch_handler.base_handler import BaseHandler

SCHEMA_FILE, PREPROCESSOR_FILE, TRANSFORM_FILE = (
    "input_schema.json",
    "preprocessor.json",
    "transform.py",
)
BAD_REQUEST = 400
# what a numeric feature may hold (bool is its own type, so it is not among them), and what
# a categorical one may not
NUMBER_TYPES = frozenset({int, float, type(None)})
CONTAINER_TYPES = frozenset({dict, list})


class RequestError(ValueError):
    """What is wrong with one request, and where: becomes its HTTP 400 body."""

    def __init__(self, message: str, field: str | None = None, instance: int | None = None):
        super().__init__(message)
        self.field = field
        self.instance = instance

    def body(self) -> dict[str, Any]:
        return {"error": str(self), "field": self.field, "instance": self.instance}


@dataclass
class Batch:
    """The requests TorchServe batched together: each one's records, or why it was refused."""

    requests: list[list[dict[str, Any]] | RequestError]
    outputs: np.ndarray | None = None


class ForgemlHandler(BaseHandler):
    def initialize(self, context: Any) -> None:
        """Load the archive's files once per worker; the program is never unpickled."""
        model_dir = context.system_properties["model_dir"]
        self.transform = load_module(os.path.join(model_dir, TRANSFORM_FILE))
        self.preprocessor = read_json(os.path.join(model_dir, PREPROCESSOR_FILE))
        self.schema = read_json(os.path.join(model_dir, SCHEMA_FILE))
        features = self.schema["features"]
        self.numeric = [f["name"] for f in features if f["type"] == "numeric"]
        self.categorical = [f["name"] for f in features if f["type"] != "numeric"]
        # JSON object keys are strings, whatever type the labels have
        self.class_keys = [str(label) for label in self.schema["labels"] or []]
        program_file = context.manifest["model"]["serializedFile"]
        self.program = torch.export.load(os.path.join(model_dir, program_file)).module()
        self.initialized = True

    def handle(self, data: list[dict[str, Any]], context: Any) -> list[str]:
        """preprocess -> inference -> postprocess, without BaseHandler's profiler, explain and
        describe hooks, which this handler does not offer, and its per-batch timing metric,
        which TorchServe's PredictionTime already gives."""
        self.context = context
        return self.postprocess(self.inference(self.preprocess(data)))

    def preprocess(self, data: list[dict[str, Any]]) -> Batch:
        return Batch([self.parse_request(row.get("body", row.get("data"))) for row in data])

    def inference(self, batch: Batch, *args: Any, **kwargs: Any) -> Batch:
        """One forward pass over every valid record of every request in the batch."""
        records = [r for request in batch.requests if isinstance(request, list) for r in request]
        if not records:
            return batch
        # numbers in one array (None -> NaN, which transform.py imputes), categories as lists
        numbers = np.array([[r[name] for name in self.numeric] for r in records], dtype=np.float64)
        columns = {name: numbers[:, j] for j, name in enumerate(self.numeric)}
        columns |= {name: [r[name] for r in records] for name in self.categorical}
        inputs = torch.from_numpy(self.transform.encode_features(self.preprocessor, columns))
        with torch.inference_mode():
            batch.outputs = self.program(inputs).numpy()
        return batch

    def postprocess(self, batch: Batch) -> list[str]:
        """One JSON text per request. Encoded here, compactly: TorchServe would encode a dict
        with indent=2, which takes Python's slow encoder and doubles the bytes sent."""
        responses, row = [], 0
        for idx, request in enumerate(batch.requests):
            self.context.set_response_content_type(idx, "application/json")
            if isinstance(request, RequestError):
                self.context.set_response_status(BAD_REQUEST, str(request), idx=idx)
                responses.append(json.dumps(request.body()))
                continue
            answer = {"predictions": self.predictions(batch.outputs[row : row + len(request)])}
            responses.append(json.dumps(answer))
            row += len(request)
        return responses

    def predictions(self, outputs: np.ndarray) -> list[dict[str, Any]]:
        if self.schema["task"] == "regression":
            return [{"value": value} for value in outputs.tolist()]
        labels = self.schema["labels"]
        return [
            {"label": labels[best], "probabilities": dict(zip(self.class_keys, row, strict=True))}
            for best, row in zip(outputs.argmax(axis=1).tolist(), outputs.tolist(), strict=True)
        ]

    def well_formed(self, record: Any) -> bool:
        """The common case, checked in one pass over the types; False sends the record to
        check_record, which finds what is wrong (or that nothing is) value by value."""
        if not isinstance(record, dict):
            return False
        try:
            numbers = [record[name] for name in self.numeric]
            categories = [record[name] for name in self.categorical]
        except KeyError:
            return False
        if not NUMBER_TYPES.issuperset(map(type, numbers)):
            return False
        try:
            # one C-level pass: raises on a null or an int beyond float64, is not finite on inf
            finite = math.isfinite(math.fsum(numbers))
        except (TypeError, OverflowError):
            return False
        return finite and CONTAINER_TYPES.isdisjoint(map(type, categories))

    def parse_request(self, body: Any) -> list[dict[str, Any]] | RequestError:
        """The request's records, each checked against the input schema; never raises."""
        try:
            records = instances(decode_json(body), self.schema["max_instances"])
            for index, record in enumerate(records):
                if not self.well_formed(record):
                    check_record(record, self.schema["features"], index)
            return records
        except RequestError as error:
            return error


# TorchServe takes a handler module's only class, or else its `handle` function: this module
# has helper classes, so the entry point is a function around one handler per worker.
_service = ForgemlHandler()


def handle(data: list[dict[str, Any]] | None, context: Any) -> list[str] | None:
    """TorchServe's entry point; it first calls it with `data=None` to initialise the worker."""
    if not _service.initialized:
        _service.initialize(context)
    return None if data is None else _service.handle(data, context)


def decode_json(body: Any) -> Any:
    """TorchServe hands over JSON already decoded, unless it failed to parse (then bytes)."""
    if isinstance(body, bytes | bytearray):
        try:
            body = body.decode("utf-8")
        except UnicodeDecodeError:
            raise RequestError("the request body is not UTF-8 text") from None
    if isinstance(body, str):
        try:
            return json.loads(body)
        except json.JSONDecodeError as error:
            raise RequestError(f"malformed JSON: {error}") from None
    return body


def instances(payload: Any, max_instances: int) -> list[dict[str, Any]]:
    """The list of records: `instances`, or the payload itself when it is one record."""
    if not isinstance(payload, dict):
        raise RequestError('expected a JSON object: {"instances": [...]} or one record')
    if "instances" not in payload:
        return [payload]
    records = payload["instances"]
    if not isinstance(records, list):
        raise RequestError("`instances` must be a list of records", field="instances")
    if not records:
        raise RequestError("`instances` is empty", field="instances")
    if len(records) > max_instances:
        raise RequestError(
            f"too many instances: {len(records)} > {max_instances} per request", field="instances"
        )
    return records


def check_record(record: Any, features: list[dict[str, Any]], index: int) -> None:
    if not isinstance(record, dict):
        raise RequestError("each instance must be a JSON object", instance=index)
    for feature in features:
        name = feature["name"]
        if name not in record:
            raise RequestError(f"missing feature '{name}'", field=name, instance=index)
        value = record[name]
        if feature["type"] == "numeric":
            check_number(value, name, index)
        elif isinstance(value, dict | list):
            raise RequestError(
                f"feature '{name}' is categorical: expected a string or number, got {type(value).__name__}",
                field=name,
                instance=index,
            )


def check_number(value: Any, name: str, index: int) -> None:
    """A number or null (imputed); bool is refused although Python counts it as an int."""
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise RequestError(
            f"feature '{name}' is numeric: expected a number or null, got {json.dumps(value)}",
            field=name,
            instance=index,
        )
    try:
        infinite = math.isinf(float(value))
    except OverflowError:  # an int beyond float64
        infinite = True
    if infinite:
        raise RequestError(f"feature '{name}' must be a finite number", field=name, instance=index)


def load_module(path: str) -> ModuleType:
    """Import a file of the archive under its own name, whatever else is on sys.path."""
    spec = importlib.util.spec_from_file_location("forgeml_archive_transform", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def read_json(path: str) -> Any:
    with open(path, encoding="utf-8") as file:
        return json.load(file)
