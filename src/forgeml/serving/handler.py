"""TorchServe handler of a forgeml model archive.

Runs inside a stock TorchServe worker, so it imports torch, numpy, the standard library and
`ts` only. The archive carries, next to this file:

    model.pt2            the exported program (torch.export): float32 [batch, input_dim] in
    preprocessor.json    the fitted preprocessing (medians, means, categories, labels)
    transform.py         the very module training uses to apply it, loaded here by path
    input_schema.json    the request contract: features, types, categories, ranges, limits,
                         and the inference log's sample rate and rotation (`monitoring`)
    decision_threshold.json  a binary model's decision threshold (`evaluate.threshold_for`),
                         if one was picked: the label follows it, not the most probable class

Request:  {"instances": [{feature: value, ...}, ...]} or a single record {feature: value, ...};
          an image feature's value is its PNG or JPEG file as base64 text. A model whose one
          feature is an image also takes the image itself as the body (TorchServe's raw bytes:
          `Content-Type: image/png`, or any body that is not JSON).
Response: {"predictions": [...]}, each {"id": ..., "label": ..., "probabilities": {class: p}}
          (classification) or {"id": ..., "value": x} (regression).

`id`: the request id of a record, its key in the inference log, by which delayed labels are
joined to it (`forgeml monitor monitor.labels=...`). A record's own `id` field (a string or an
integer) is taken as is; it is not a feature, so it is neither checked as one nor passed to the
model. Without one, the handler makes one (uuid4, hex).

A feature that is absent, of the wrong type (a datetime that does not parse), or infinite; a
finite value the model cannot compute (standardised, it overflows float32; or the model's
output is not finite); malformed
JSON, or JSON Python cannot decode (an integer beyond its digit limit, nesting beyond its
recursion limit); an image that does not decode; an empty or too long `instances` list:
HTTP 400 "Bad Request" with {"error", "field", "instance"} in the body (an offending value
quoted in at most MAX_QUOTED characters). `null` (and NaN, which Python's JSON accepts) is a
missing value, imputed as in training; an unknown category is the unknown bucket, as in training.
Inside a dynamic batch a bad request fails alone: the others are answered normally.

Monitoring, once per batch; a failure in it is counted or logged, never passed on to a request:

- Inference log: a share `monitoring.sample_rate` of the accepted requests (drawn per request,
  before anything is serialised), one JSON line per record,
      {"ts": "2025-06-01T12:00:00.123Z", "model": ..., "version": ..., "latency_ms": 1.7,
       "id": ..., "input": {feature: value as received, ...}, "prediction": label or value,
       "probabilities": {class: p}}   (classification only)
  and, for every request answered 400 (not sampled: they are few, and counted per window by
  `forgeml monitor`), one line with its reason and no body:
      {"ts": ..., "model": ..., "version": ..., "latency_ms": ..., "rejected": reason}
  appended with one write per batch, before the batch is answered, to `worker-<pid>.jsonl` in
  the directory named by $FORGEML_INFERENCE_LOG_DIR (`forgeml serve start` sets it to
  `monitor.log_dir`); at `log_max_bytes` the file becomes worker-<pid>.1.jsonl (the older ones
  move up, `log_backups` are kept). NaN inputs are logged as null. Without that variable there
  is no log: a worker's working directory is the unpacked archive, a temporary directory.
  An image is never logged: its signals are, under its feature's name (transform.image_signals:
  {"brightness", "contrast", "width", "height"}), which `forgeml monitor` tests for drift.
  A directory deleted or replaced under a running worker is recreated by the next batch.
  Columns in `monitoring.redact` are left out; those in `monitoring.hash` are written as
  HMAC-SHA256 digests keyed by the file named in $FORGEML_INFERENCE_LOG_KEY (without a key they
  are left out too).
- Prometheus metrics through TorchServe's metrics API, declared in the metrics config that
  `forgeml serve start` writes (TorchServe shows only declared metrics):
      forgeml_predictions{Class}            counter, records predicted per class
      forgeml_predicted_value               histogram of predicted values (regression)
      forgeml_rejected_requests{Reason}     counter, requests answered 400, per REJECTION_REASONS
      forgeml_out_of_range_values{Feature}  counter, accepted numeric values outside the
                                            training min/max of input_schema.json
      forgeml_inference_log_errors          counter, sampled records the log failed to write
  each also labelled ModelVersion, ModelName and Level (and Hostname, by TorchServe). A worker
  sums them and hands them over once per METRICS_INTERVAL (1 s), from a background thread.
"""

from __future__ import annotations

import errno
import importlib.util
import json
import logging
import math
import os
import random
import re
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timezone
from types import ModuleType
from typing import Any

import numpy as np
import torch
from ts.metrics.dimension import Dimension
from ts.metrics.metric_type_enum import MetricTypes
from ts.torch_handler.base_handler import BaseHandler

SCHEMA_FILE, PREPROCESSOR_FILE, TRANSFORM_FILE, DECISION_FILE = (
    "input_schema.json",
    "preprocessor.json",
    "transform.py",
    "decision_threshold.json",
)
BAD_REQUEST, BAD_REQUEST_PHRASE = 400, "Bad Request"
# how many characters of an offending value a 400's message quotes
MAX_QUOTED = 80
# what a numeric feature may hold (bool is its own type, so it is not among them), and what
# a categorical one may not
NUMBER_TYPES = frozenset({int, float, type(None)})
CONTAINER_TYPES = frozenset({dict, list})
# where `forgeml serve start` tells its workers to write the inference log
LOG_DIR_VARIABLE = "FORGEML_INFERENCE_LOG_DIR"
# ... and the file holding the key of the hashes it writes for `monitoring.hash` columns
LOG_KEY_VARIABLE = "FORGEML_INFERENCE_LOG_KEY"
# the metrics, as declared in forgeml/serving/runtime_files.py (HANDLER_METRICS)
PREDICTIONS, PREDICTED_VALUE, REJECTED, OUT_OF_RANGE, LOG_ERRORS = (
    "forgeml_predictions",
    "forgeml_predicted_value",
    "forgeml_rejected_requests",
    "forgeml_out_of_range_values",
    "forgeml_inference_log_errors",
)
# seconds between two hand-overs of a worker's summed metrics to TorchServe
METRICS_INTERVAL = 1.0
REJECTION_REASONS = (
    "malformed_json",
    "not_an_object",
    "wrong_type",
    "not_finite",
    "missing_feature",
    "out_of_range",
    "empty_instances",
    "too_many_instances",
)
# one encoder for every log line (json.dumps with options builds one per call)
LOG_ENCODER = json.JSONEncoder(allow_nan=False, separators=(",", ":"))
# TorchServe's metric lines separate dimensions with ',' and name from value with ':'
UNSAFE_IN_DIMENSION = re.compile(r"[,:|\r\n]+")

log = logging.getLogger(__name__)


class RequestError(ValueError):
    """What is wrong with one request, and where: becomes its HTTP 400 body. `reason` is one of
    REJECTION_REASONS, the label of the rejected-requests metric."""

    def __init__(self, reason: str, message: str, field: str | None = None, instance: int | None = None):
        super().__init__(message)
        self.reason = reason
        self.field = field
        self.instance = instance

    def body(self) -> dict[str, Any]:
        return {"error": str(self), "field": self.field, "instance": self.instance}


@dataclass
class Batch:
    """The requests TorchServe batched together: each one's records, or why it was refused."""

    requests: list[list[dict[str, Any]] | RequestError]
    # per request, its records' ids (None for a refused request)
    ids: list[list[str] | None] | None = None
    outputs: np.ndarray | None = None
    predictions: list[dict[str, Any]] | None = None
    # per numeric feature: how many of the batch's values lie outside the training range
    out_of_range: np.ndarray | None = None


class InferenceLog:
    """One worker's JSON Lines file, appended once per batch and rotated at a size cap:
    worker-<pid>.jsonl, then worker-<pid>.1.jsonl (newest) ... worker-<pid>.<backups>.jsonl.

    The open descriptor is checked against the path before and after each write (two stat
    calls a batch): a file or directory deleted or replaced meanwhile would otherwise take the
    records into an unlinked inode. Before the write, the file is reopened (the directory
    recreated); after it, the batch is reported as failed (OSError), to be counted."""

    def __init__(self, directory: str, max_bytes: int, backups: int):
        self.directory = directory
        self.max_bytes = max_bytes
        self.backups = backups
        self.stem = os.path.join(directory, f"worker-{os.getpid()}")
        self.fd: int | None = None
        self.size = 0

    def path(self, generation: int) -> str:
        return f"{self.stem}.jsonl" if generation == 0 else f"{self.stem}.{generation}.jsonl"

    def append(self, data: bytes) -> None:
        """Write whole lines straight to the file (no buffer in this process), so that what
        was appended survives the worker; a batch larger than the cap gets a file of its own."""
        try:
            if self.fd is not None and not self.linked():
                self.close()
            if self.fd is None:
                self.open()
            if self.size and self.size + len(data) > self.max_bytes:
                self.rotate()
            view = memoryview(data)
            while view:
                written = os.write(self.fd, view)
                self.size += written
                view = view[written:]
            if not self.linked():
                raise FileNotFoundError(errno.ENOENT, "removed while being written", self.path(0))
        except OSError:
            self.close()  # reopened on the next batch: the directory may be back by then
            raise

    def linked(self) -> bool:
        """Whether the path still names the file this log writes to."""
        try:
            named = os.stat(self.path(0))
        except FileNotFoundError:
            return False
        own = os.fstat(self.fd)
        return (named.st_ino, named.st_dev) == (own.st_ino, own.st_dev)

    def open(self) -> None:
        os.makedirs(self.directory, exist_ok=True)
        self.fd = os.open(self.path(0), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self.size = os.fstat(self.fd).st_size

    def rotate(self) -> None:
        self.close()
        if self.backups == 0:
            os.remove(self.path(0))
        for generation in range(self.backups - 1, -1, -1):
            if os.path.exists(self.path(generation)):
                # onto the oldest kept generation, which is dropped
                os.replace(self.path(generation), self.path(generation + 1))
        self.open()

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


class PendingMetrics:
    """The handler's metrics, summed across batches and handed to TorchServe's metrics API by a
    background thread every `interval` seconds: each metric line costs the worker a log write
    and the frontend a parse, so there is one line per count and interval, not per batch."""

    def __init__(self, metrics: Any, interval: float):
        self.metrics = metrics
        self.lock = threading.Lock()
        self.counts: Counter[tuple[str, tuple[tuple[str, str], ...]]] = Counter()
        self.observed: list[tuple[str, tuple[tuple[str, str], ...], list[float]]] = []
        threading.Thread(target=self.run, args=(interval,), name="forgeml-metrics", daemon=True).start()

    def count(self, name: str, value: int, **labels: str) -> None:
        with self.lock:
            self.counts[name, tuple(labels.items())] += value

    def observe(self, name: str, values: list[float], **labels: str) -> None:
        with self.lock:
            self.observed.append((name, tuple(labels.items()), values))

    def run(self, interval: float) -> None:
        while True:
            time.sleep(interval)
            try:
                self.flush()
            except Exception as error:  # the next interval tries again
                log.warning("metrics not emitted: %r", error)

    def flush(self) -> None:
        with self.lock:
            counts, self.counts = self.counts, Counter()
            observed, self.observed = self.observed, []
        for (name, labels), value in counts.items():
            self.metrics.add_counter(name, value, dimensions=dimensions(labels))
        for name, labels, values in observed:
            for value in values:
                self.metrics.add_metric(
                    name, value, "value", dimensions=dimensions(labels), metric_type=MetricTypes.HISTOGRAM
                )


class ForgemlHandler(BaseHandler):
    def initialize(self, context: Any) -> None:
        """Load the archive's files once per worker; the program is never unpickled."""
        model_dir = context.system_properties["model_dir"]
        set_torch_threads(context)
        self.transform = load_module(os.path.join(model_dir, TRANSFORM_FILE))
        self.preprocessor = read_json(os.path.join(model_dir, PREPROCESSOR_FILE))
        self.schema = read_json(os.path.join(model_dir, SCHEMA_FILE))
        decision = os.path.join(model_dir, DECISION_FILE)
        self.decision = read_json(decision) if os.path.isfile(decision) else None
        features = self.schema["features"]
        numeric = [f for f in features if f["type"] == "numeric"]
        self.numeric = [f["name"] for f in numeric]
        self.categorical = [f["name"] for f in features if f["type"] != "numeric"]
        self.dates = [f for f in self.preprocessor["features"] if f["type"] == "datetime"]
        self.images = [f["name"] for f in features if f["type"] == "image"]
        # the feature a raw-bytes body is, for a model whose one feature is an image
        self.raw_image = self.images[0] if len(features) == 1 and self.images else None
        # JSON object keys are strings, whatever type the labels have
        self.class_keys = [str(label) for label in self.schema["labels"] or []]
        program_file = context.manifest["model"]["serializedFile"]
        program = torch.export.load(os.path.join(model_dir, program_file)).module(check_guards=False)
        # its forward alone: a module call flattens the input and checks it against the export's
        # constraints first, a third of a one-record forward, and this handler always passes
        # what the program was exported for (float32 [rows, input_dim], from transform.py)
        self.program = program.forward
        self.initialize_monitoring(context, numeric)
        self.initialized = True

    def initialize_monitoring(self, context: Any, numeric: list[dict[str, Any]]) -> None:
        self.model_name = context.model_name
        self.version = context.manifest["model"].get("modelVersion", "")
        # the training range (null bounds are NaN, which no value is outside of)
        self.low = np.array([f.get("min") for f in numeric], dtype=np.float64)
        self.high = np.array([f.get("max") for f in numeric], dtype=np.float64)
        self.version_dimension = dimension_value(self.version)
        self.class_dimensions = [dimension_value(key) for key in self.class_keys]
        self.feature_dimensions = [dimension_value(name) for name in self.numeric]
        self.prediction_key = "value" if self.schema["task"] == "regression" else "label"
        settings = self.schema.get("monitoring") or {}
        self.sample_rate = settings.get("sample_rate", 0.0)
        self.sampler = random.Random()
        self.inference_log: InferenceLog | None = None
        directory = os.environ.get(LOG_DIR_VARIABLE)
        if self.sample_rate > 0 and directory:
            self.inference_log = InferenceLog(directory, settings["log_max_bytes"], settings["log_backups"])
        elif self.sample_rate > 0:
            log.warning("no inference log: %s is not set (`forgeml serve start` sets it)", LOG_DIR_VARIABLE)
        self.log_errors = 0
        self.redacted = frozenset(settings.get("redact", ()))
        self.hashed = list(settings.get("hash", ()))
        self.log_key = read_log_key() if self.hashed and self.inference_log else None
        if self.hashed and self.inference_log and self.log_key is None:
            log.warning("no key in %s: the log leaves out %s", LOG_KEY_VARIABLE, ", ".join(self.hashed))
            self.redacted |= frozenset(self.hashed)
            self.hashed = []
        # TorchServe's metrics cache; None outside TorchServe
        self.metrics = None if context.metrics is None else PendingMetrics(context.metrics, METRICS_INTERVAL)

    def handle(self, data: list[dict[str, Any]], context: Any) -> list[str]:
        """preprocess -> inference -> postprocess -> monitoring, without BaseHandler's profiler,
        explain and describe hooks, which this handler does not offer, and its per-batch timing
        metric, which TorchServe's PredictionTime already gives."""
        received, started = time.time(), time.perf_counter()
        self.context = context
        batch = self.inference(self.preprocess(data))
        responses = self.postprocess(batch)
        self.monitor(batch, received, 1000 * (time.perf_counter() - started))
        return responses

    def preprocess(self, data: list[dict[str, Any]]) -> Batch:
        batch = Batch([self.parse_request(row.get("body", row.get("data"))) for row in data])
        batch.ids = [None] * len(batch.requests)
        for index, request in enumerate(batch.requests):
            if isinstance(request, list):
                try:
                    batch.ids[index] = request_ids(request)
                except RequestError as error:
                    batch.requests[index] = error
        return batch

    def inference(self, batch: Batch, *args: Any, **kwargs: Any) -> Batch:
        """One forward pass over every valid record of every request in the batch. A request
        with a record the model cannot compute (a value that overflows float32 once
        standardised, or an output that is not finite) is refused and the rest passed again."""
        records = [r for request in batch.requests if isinstance(request, list) for r in request]
        if not records:
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
            return self.inference(batch)
        batch.outputs = outputs
        batch.out_of_range = ((numbers < self.low) | (numbers > self.high)).sum(axis=0)
        return batch

    def refuse_incomputable(self, batch: Batch, overflow: np.ndarray, finite: np.ndarray) -> None:
        """Turn each request with an incomputable record into its 400, naming the feature: the
        overflowing one, else the one furthest from the training mean."""
        features, row = self.preprocessor["features"], 0
        for position, request in enumerate(batch.requests):
            if isinstance(request, RequestError):
                continue
            for index, record in enumerate(request):
                first = overflow[row + index]
                if first >= 0 or not finite[row + index]:
                    feature = features[first] if first >= 0 else self.most_extreme(record)
                    batch.requests[position] = incomputable(record, feature, index)
                    break
            row += len(request)

    def most_extreme(self, record: dict[str, Any]) -> dict[str, Any] | None:
        """The numeric feature of `record` furthest from its training mean (None: none)."""
        numeric = [f for f in self.preprocessor["features"] if f["type"] == "numeric"]
        values = np.array([[record[f["name"]]] for f in numeric], dtype=np.float64)
        distance = [abs(self.transform.standardise(f, v)[0]) for f, v in zip(numeric, values, strict=True)]
        return numeric[int(np.argmax(distance))] if numeric else None

    def postprocess(self, batch: Batch) -> list[str]:
        """One JSON text per request. Encoded here, compactly: TorchServe would encode a dict
        with indent=2, which takes Python's slow encoder and doubles the bytes sent."""
        batch.predictions = [] if batch.outputs is None else self.predictions(batch.outputs)
        responses, row = [], 0
        for idx, request in enumerate(batch.requests):
            self.context.set_response_content_type(idx, "application/json")
            if isinstance(request, RequestError):
                # the detail goes in the body: a status line has to stay short
                self.context.set_response_status(BAD_REQUEST, BAD_REQUEST_PHRASE, idx=idx)
                responses.append(json.dumps(request.body()))
                continue
            predictions = batch.predictions[row : row + len(request)]
            answers = [{"id": i, **p} for i, p in zip(batch.ids[idx], predictions, strict=True)]
            responses.append(json.dumps({"predictions": answers}))
            row += len(request)
        return responses

    def predictions(self, outputs: np.ndarray) -> list[dict[str, Any]]:
        if self.schema["task"] == "regression":
            return [{"value": value} for value in outputs.tolist()]
        labels = self.schema["labels"]
        decided = self.transform.predicted_classes(outputs, self.decision).tolist()
        return [
            {"label": labels[best], "probabilities": dict(zip(self.class_keys, row, strict=True))}
            for best, row in zip(decided, outputs.tolist(), strict=True)
        ]

    def monitor(self, batch: Batch, received: float, latency_ms: float) -> None:
        """The batch's sample into the inference log, then its metrics. Never raises: the
        batch is answered whatever happens here."""
        try:
            lost = 0 if self.inference_log is None else self.log_sample(batch, received, latency_ms)
            if self.metrics is not None:
                self.count_metrics(batch, lost)
        except Exception as error:  # a bug here must cost the batch its monitoring, not its answers
            log.warning("monitoring of a batch failed: %r", error)

    def log_sample(self, batch: Batch, received: float, latency_ms: float) -> int:
        """Append the records of the sampled requests; returns how many could not be written."""
        sampled: list[tuple[str, dict[str, Any], dict[str, Any]]] = []
        rejected: list[str] = []
        row = 0
        for request, ids in zip(batch.requests, batch.ids, strict=True):
            if isinstance(request, RequestError):
                rejected.append(request.reason)
                continue
            # drawn per request, before anything is serialised: unsampled requests cost one draw
            if self.sampler.random() < self.sample_rate:
                predictions = batch.predictions[row : row + len(request)]
                sampled.extend(zip(ids, request, predictions, strict=True))
            row += len(request)
        if not sampled and not rejected:
            return 0
        ts = datetime.fromtimestamp(received, timezone.utc).isoformat(timespec="milliseconds")
        head = {
            "ts": ts.replace("+00:00", "Z"),
            "model": self.model_name,
            "version": self.version,
            "latency_ms": round(latency_ms, 3),
        }
        key = self.prediction_key
        inputs = [record for _, record, _ in sampled]
        if self.images:
            inputs = self.image_signals(inputs)
        if self.redacted or self.hashed:
            inputs = self.private(inputs)
        text = "".join(
            log_entry(head, i, record, p[key], p.get("probabilities"))
            for record, (i, _, p) in zip(inputs, sampled, strict=True)
        )
        text += "".join(LOG_ENCODER.encode({**head, "rejected": reason}) + "\n" for reason in rejected)
        try:
            self.inference_log.append(text.encode("utf-8"))
        except OSError as error:
            self.log_errors += 1
            if self.log_errors == 1:  # then counted in forgeml_inference_log_errors only
                log.warning("inference log %s: %s", self.inference_log.directory, error)
            return len(sampled)
        return 0

    def image_signals(self, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Copies of `records` for the log with each image replaced by its signals: the bytes
        would fill the log, and drift is tested on the signals."""
        return [
            record
            | {
                name: None if record[name] is None else self.transform.image_signals(record[name])
                for name in self.images
            }
            for record in records
        ]

    def private(self, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Copies of `records` for the log: `redact` columns left out, `hash` columns keyed
        hashes (transform.keyed_hashes), so the raw values never reach the disk."""
        hashes = {
            name: self.transform.keyed_hashes(self.log_key, [record[name] for record in records])
            for name in self.hashed
        }
        return [
            {
                name: hashes[name][row] if name in hashes else value
                for name, value in record.items()
                if name not in self.redacted
            }
            for row, record in enumerate(records)
        ]

    def count_metrics(self, batch: Batch, lost: int) -> None:
        version = self.version_dimension
        if batch.outputs is not None:
            if self.prediction_key == "label":
                decided = self.transform.predicted_classes(batch.outputs, self.decision)
                counts = np.bincount(decided, minlength=len(self.class_keys))
                for label, count in zip(self.class_dimensions, counts.tolist(), strict=True):
                    if count:
                        self.metrics.count(PREDICTIONS, count, Class=label, ModelVersion=version)
            else:
                self.metrics.observe(PREDICTED_VALUE, batch.outputs.ravel().tolist(), ModelVersion=version)
            for feature, count in zip(self.feature_dimensions, batch.out_of_range.tolist(), strict=True):
                if count:
                    self.metrics.count(OUT_OF_RANGE, count, Feature=feature, ModelVersion=version)
        for request in batch.requests:
            if isinstance(request, RequestError):
                self.metrics.count(REJECTED, 1, Reason=request.reason, ModelVersion=version)
        if lost:
            self.metrics.count(LOG_ERRORS, lost, ModelVersion=version)

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

    def check_dates(self, record: dict[str, Any], index: int) -> None:
        """Each datetime value parses as training parsed it (transform.py), or the request is
        refused naming the feature."""
        for feature in self.dates:
            name = feature["name"]
            try:
                self.transform.parse_datetime(record[name], feature.get("format"))
            except ValueError as error:
                raise RequestError(
                    "wrong_type", f"feature '{name}' is datetime: {error}", field=name, instance=index
                ) from None

    def parse_request(self, body: Any) -> list[dict[str, Any]] | RequestError:
        """The request's records, each checked against the input schema; never raises."""
        try:
            records = instances(self.decode_body(body), self.schema["max_instances"])
            for index, record in enumerate(records):
                if not self.well_formed(record):
                    check_record(record, self.schema["features"], index)
                self.check_dates(record, index)
                if self.images:
                    self.check_images(record, index)
            return records
        except RequestError as error:
            return error

    def decode_body(self, body: Any) -> Any:
        """The JSON payload; or, for a model whose one feature is an image, a body that is not
        JSON is that image (a PNG or JPEG is not even UTF-8)."""
        if self.raw_image is None or not isinstance(body, bytes | bytearray):
            return decode_json(body)
        try:
            return decode_json(body)
        except RequestError:
            return {self.raw_image: bytes(body)}

    def check_images(self, record: dict[str, Any], index: int) -> None:
        """Each image of `record` decodes (null is missing: the mean image, as in training); it
        stays decoded in the record, for the encoding and the log's signals to use."""
        for name in self.images:
            if record[name] is not None:
                try:
                    record[name] = self.transform.decode_image(record[name])
                except ValueError as error:
                    raise RequestError(
                        "wrong_type", f"feature '{name}' is an image: {error}", field=name, instance=index
                    ) from None


# TorchServe takes a handler module's only class, or else its `handle` function: this module
# has helper classes, so the entry point is a function around one handler per worker.
_service = ForgemlHandler()


def handle(data: list[dict[str, Any]] | None, context: Any) -> list[str] | None:
    """TorchServe's entry point; it first calls it with `data=None` to initialise the worker."""
    if not _service.initialized:
        _service.initialize(context)
    return None if data is None else _service.handle(data, context)


def log_entry(
    head: dict[str, Any], request_id: str, record: dict[str, Any], prediction: Any, probabilities: Any
) -> str:
    """One line of the inference log: strict JSON, so NaN (a missing value) is written as null."""
    if "id" in record:  # the request id, not an input
        record = {name: value for name, value in record.items() if name != "id"}
    entry = {**head, "id": request_id, "input": record, "prediction": prediction}
    if probabilities is not None:
        entry["probabilities"] = probabilities
    try:
        return LOG_ENCODER.encode(entry) + "\n"
    except ValueError:
        entry["input"] = {name: None if value != value else value for name, value in record.items()}
        return json.dumps(entry, separators=(",", ":")) + "\n"


def request_ids(records: list[dict[str, Any]]) -> list[str]:
    """Each record's own `id`, or a new one where it has none."""
    ids = []
    for index, record in enumerate(records):
        given = record.get("id")
        if given is None:
            ids.append(uuid.uuid4().hex)
        elif isinstance(given, str | int) and not isinstance(given, bool):
            ids.append(str(given))
        else:
            raise RequestError(
                "wrong_type", "`id` must be a string or an integer", field="id", instance=index
            )
    return ids


def dimensions(labels: tuple[tuple[str, str], ...]) -> list[Dimension]:
    """A new list each call: TorchServe appends its default dimensions to the one it is given."""
    return [Dimension(name, value) for name, value in labels]


def dimension_value(value: Any) -> str:
    """`value` as a metric label TorchServe's metric lines can carry (no ',', ':', '|')."""
    return UNSAFE_IN_DIMENSION.sub("_", str(value)) or "_"


def decode_json(body: Any) -> Any:
    """TorchServe hands over JSON already decoded, unless it failed to parse (then bytes)."""
    if isinstance(body, bytes | bytearray):
        try:
            body = body.decode("utf-8")
        except UnicodeDecodeError:
            raise RequestError("malformed_json", "the request body is not UTF-8 text") from None
    if isinstance(body, str):
        try:
            return json.loads(body)
        except RecursionError:
            raise RequestError("malformed_json", "malformed JSON: nested too deeply") from None
        except ValueError as error:  # JSONDecodeError, or an integer beyond Python's digit limit
            raise RequestError("malformed_json", f"malformed JSON: {error}") from None
    return body


def instances(payload: Any, max_instances: int) -> list[dict[str, Any]]:
    """The list of records: `instances`, or the payload itself when it is one record."""
    if not isinstance(payload, dict):
        raise RequestError("not_an_object", 'expected a JSON object: {"instances": [...]} or one record')
    if "instances" not in payload:
        return [payload]
    records = payload["instances"]
    if not isinstance(records, list):
        raise RequestError("wrong_type", "`instances` must be a list of records", field="instances")
    if not records:
        raise RequestError("empty_instances", "`instances` is empty", field="instances")
    if len(records) > max_instances:
        raise RequestError(
            "too_many_instances",
            f"too many instances: {len(records)} > {max_instances} per request",
            field="instances",
        )
    return records


def check_record(record: Any, features: list[dict[str, Any]], index: int) -> None:
    if not isinstance(record, dict):
        raise RequestError("not_an_object", "each instance must be a JSON object", instance=index)
    for feature in features:
        name = feature["name"]
        if name not in record:
            raise RequestError("missing_feature", f"missing feature '{name}'", field=name, instance=index)
        value = record[name]
        if feature["type"] == "numeric":
            check_number(value, name, index)
        elif feature["type"] != "image" and isinstance(value, dict | list):  # check_images: images
            raise RequestError(
                "wrong_type",
                f"feature '{name}' is {feature['type']}: expected a string or number, "
                f"got {type(value).__name__}",
                field=name,
                instance=index,
            )


def incomputable(record: dict[str, Any], feature: dict[str, Any] | None, index: int) -> RequestError:
    """The 400 of a record the model cannot compute: never a 200 with NaN in it."""
    if feature is None:
        return RequestError("out_of_range", "the model's output is not finite", instance=index)
    name = feature["name"]
    return RequestError(
        "out_of_range",
        f"feature '{name}' = {quoted(record[name])} is too extreme for the model: standardised "
        f"(training mean {feature['mean']:.6g}, std {feature['std']:.6g}) it overflows float32",
        field=name,
        instance=index,
    )


def check_number(value: Any, name: str, index: int) -> None:
    """A number or null (imputed); bool is refused although Python counts it as an int."""
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise RequestError(
            "wrong_type",
            f"feature '{name}' is numeric: expected a number or null, got {quoted(value)}",
            field=name,
            instance=index,
        )
    try:
        infinite = math.isinf(float(value))
    except OverflowError:  # an int beyond float64
        infinite = True
    if infinite:
        raise RequestError(
            "not_finite", f"feature '{name}' must be a finite number", field=name, instance=index
        )


def quoted(value: Any) -> str:
    """`value` as JSON, cut to MAX_QUOTED characters: a message quotes, it does not echo."""
    try:
        text = json.dumps(value)
    except (ValueError, RecursionError):  # nested too deeply to quote
        text = f"a {type(value).__name__}"
    return text if len(text) <= MAX_QUOTED else f"{text[:MAX_QUOTED]}... ({len(text)} characters)"


def set_torch_threads(context: Any) -> None:
    """`serve.torch_threads` from the archive's model-config.yaml: on a small machine torch's
    intra-op threads (one per core) compete with TorchServe's frontend for the cores, and a
    one-record forward gains nothing from them. 0 or unset: torch's default."""
    threads = ((context.model_yaml_config or {}).get("handler") or {}).get("torch_threads")
    if threads:
        torch.set_num_threads(threads)


def load_module(path: str) -> ModuleType:
    """Import a file of the archive under its own name, whatever else is on sys.path."""
    spec = importlib.util.spec_from_file_location("forgeml_archive_transform", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def read_log_key() -> bytes | None:
    """The key file named by $FORGEML_INFERENCE_LOG_KEY (`forgeml serve start` creates it),
    or None when unset, unreadable or empty."""
    path = os.environ.get(LOG_KEY_VARIABLE)
    try:
        with open(path or "", "rb") as file:
            return file.read() or None
    except OSError:
        return None


def read_json(path: str) -> Any:
    with open(path, encoding="utf-8") as file:
        return json.load(file)
