"""Monitoring of a forgeml model archive: the inference log and the metrics of each batch, once
it is answered. Shared by every serving backend, each of which hands in its own metrics sink
(the TorchServe one is in handler.py). A failure here is counted or logged, never passed on to
a request.

- Inference log: a share `monitoring.sample_rate` of the accepted requests (drawn per request,
  before anything is serialised; "auto": see Sampling), one JSON line per record,
      {"ts": "2025-06-01T12:00:00.123Z", "model": ..., "version": ..., "latency_ms": 1.7,
       "id": ..., "sample_rate": 0.1, "seen": 12, "input": {feature: value as received, ...},
       "prediction": label or value, "probabilities": {class: p}}   (classification only)
  where `sample_rate` is the rate its request was drawn at and `seen` the records this worker
  answered since its previous logged record, this one included, so that a window's `seen`
  summed says about how many records it served, logged or not.
  and, for every request answered 400 (not sampled: they are few, and counted per window by
  `forgeml monitor`), one line with its reason and no body:
      {"ts": ..., "model": ..., "version": ..., "latency_ms": ..., "rejected": reason}
  appended with one write per batch, before the batch is answered, to `worker-<pid>.jsonl` in
  the directory named by contract.LOG_DIR_VARIABLE (`forgeml serve start` sets it to
  `monitor.log_dir`); at `log_max_bytes` the file becomes worker-<pid>.1.jsonl (the older ones
  move up, `log_backups` are kept). NaN inputs are logged as null. Without that variable there
  is no log: a worker's working directory is the unpacked archive, a temporary directory.
  `input` holds the model's features, and of a record's other fields only those listed in
  `monitoring.log_extra_fields` (a request may carry anything: a comment, an e-mail address).
  An image is never logged: its signals are, under its feature's name (transform.image_signals:
  {"brightness", "contrast", "width", "height"}), which `forgeml monitor` tests for drift.
  A directory deleted or replaced under a running worker is recreated by the next batch.
  Fields in `monitoring.redact` are left out; those in `monitoring.hash` are written as
  HMAC-SHA256 digests keyed by the file named in contract.LOG_KEY_VARIABLE (without a key they
  are left out too).
- Live settings: the sample rate and rotation (SAMPLING_SETTINGS) are the archive's until the
  log directory holds contract.LOG_SETTINGS_FILE (`forgeml serve configure` writes it); each
  worker looks at it (one stat call) at most once per SETTINGS_CHECK_INTERVAL, reads it again
  when it changed, and takes the archive's values back once it is gone. What the log holds
  (redact, hash, extra fields) is the archive's alone.
- Metrics (names and dimensions: contract.HANDLER_METRICS), counted into a MetricsSink:
      forgeml_predictions{Class}            records predicted per class
      forgeml_predicted_value               predicted values (regression)
      forgeml_rejected_requests{Reason}     requests answered 400, per REJECTION_REASONS
      forgeml_out_of_range_values{Feature}  accepted numeric values outside the training
                                            min/max of input_schema.json
      forgeml_inference_log_errors          sampled records the log failed to write
  each also labelled ModelVersion.

Imports the standard library and numpy; transform.py and contract.py are handed in by the
caller (see handler.py on how the archive's modules meet).
"""

from __future__ import annotations

import errno
import json
import logging
import os
import random
import time
from collections.abc import Callable
from datetime import datetime, timezone
from types import ModuleType
from typing import Any, Protocol

import numpy as np

# one encoder for every log line (json.dumps with options builds one per call)
LOG_ENCODER = json.JSONEncoder(allow_nan=False, separators=(",", ":"))

# seconds between two looks at the settings file
SETTINGS_CHECK_INTERVAL = 1.0
# what the settings file may set (every other key stays the archive's), and the value each takes
# in an archive packaged before it existed; sample_rate may also be contract.AUTO_SAMPLE_RATE
SAMPLING_SETTINGS = {
    "sample_rate": 0.0,
    "log_max_bytes": 10_000_000,
    "log_backups": 5,
    "auto_min_samples": 100,
    "auto_window_s": 3600.0,
    "auto_base_rate": 0.1,
}

log = logging.getLogger(__name__)


class MetricsSink(Protocol):
    """Where a backend takes the metrics: a count per label set, or values to a histogram."""

    def count(self, name: str, value: int, **labels: str) -> None: ...

    def observe(self, name: str, values: list[float], **labels: str) -> None: ...


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
        # generations beyond `backups`, kept while a larger log_backups was in force
        extra = self.backups + 1
        while os.path.exists(self.path(extra)):
            os.remove(self.path(extra))
            extra += 1
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


class Sampling:
    """Which accepted requests the log records, and what each logged record says of those that
    were not: the rate it was drawn at and `seen`, the records answered since the previous
    logged one, itself included.

    `settings["sample_rate"]` is a share, or `auto` (contract.AUTO_SAMPLE_RATE): every request
    until this worker logged `auto_min_samples` records in the current window (`auto_window_s`
    seconds, aligned to the Unix epoch as `forgeml watch` aligns its windows), then
    `auto_base_rate`. Each worker counts only its own records, and that is enough: a window that
    served at least min_samples records across W workers logs at least that many, since either
    some worker reached min_samples, or none did and every worker logged all it served. A
    window logs in full at most W x min_samples records (and a restarted worker's), the rest at
    the base rate; rotation at log_max_bytes bounds the files whatever the rate."""

    def __init__(self, settings: dict[str, Any], auto: str, draw: Callable[[], float] | None = None):
        self.settings = settings
        self.auto = auto
        self.random = draw or random.Random().random
        self.unlogged = 0
        self.window = None
        self.logged_in_window = 0

    def rate(self, now: float) -> float:
        """The rate in force at `now` (seconds since the epoch)."""
        settings = self.settings
        if settings["sample_rate"] != self.auto:
            return settings["sample_rate"]
        window = now // settings["auto_window_s"]
        if window != self.window:
            self.window, self.logged_in_window = window, 0
        return 1.0 if self.logged_in_window < settings["auto_min_samples"] else settings["auto_base_rate"]

    def draw(self, records: int, now: float) -> tuple[float, int] | None:
        """(rate, seen) when the request of `records` records received at `now` is logged;
        None when it is not (and is counted into the next logged record's `seen`)."""
        rate = self.rate(now)
        if self.random() >= rate:
            self.unlogged += records
            return None
        seen, self.unlogged = self.unlogged + 1, 0
        self.logged_in_window += records
        return rate, seen


class SettingsFile:
    """A running server's log settings (contract.LOG_SETTINGS_FILE), which `forgeml serve
    configure` replaces atomically: looked at (one stat call) at most once per
    SETTINGS_CHECK_INTERVAL of `clock`, read only when its inode, size or mtime changed."""

    def __init__(self, path: str, auto: str, clock: Callable[[], float] = time.monotonic):
        self.path = path
        self.auto = auto
        self.clock = clock
        self.next_look = float("-inf")
        self.stamp: tuple[int, int, int] | None = None

    def poll(self) -> dict[str, Any] | None:
        """The file's settings if it changed since the last look ({} once it is gone or does
        not read as settings: the archive's then hold); None if it did not change."""
        now = self.clock()
        if now < self.next_look:
            return None
        self.next_look = now + SETTINGS_CHECK_INTERVAL
        try:
            status = os.stat(self.path)
            stamp = (status.st_ino, status.st_size, status.st_mtime_ns)
        except OSError:
            stamp = None
        if stamp == self.stamp:
            return None
        self.stamp = stamp
        return {} if stamp is None else self.read()

    def read(self) -> dict[str, Any]:
        try:
            with open(self.path, "rb") as file:
                found = json.load(file)
            settings = {key: found[key] for key in SAMPLING_SETTINGS if key in found}
            if not all(valid_setting(key, value, self.auto) for key, value in settings.items()):
                raise ValueError(f"a value out of range in {settings}")
        except (OSError, ValueError, TypeError) as error:
            log.warning("%s is no log settings file (%s): the archive's settings hold", self.path, error)
            return {}
        log.info("log settings from %s: %s", self.path, settings)
        return settings


def valid_setting(key: str, value: Any, auto: str) -> bool:
    """What the writer (forgeml's config checks) guarantees, checked again for a hand-made file."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return key == "sample_rate" and value == auto
    if key in ("sample_rate", "auto_base_rate"):
        return 0 <= value <= 1
    return value >= 0 if key == "log_backups" else value > 0


class Monitoring:
    """A worker's inference log and metrics, as input_schema.json's `monitoring` settings say."""

    def __init__(
        self,
        schema: dict[str, Any],
        transform: ModuleType,
        contract: ModuleType,
        model: tuple[str, str],
        metrics: MetricsSink | None,
    ):
        self.transform = transform
        self.contract = contract
        self.model_name, self.version = model
        self.metrics = metrics
        features = schema["features"]
        self.images = [f["name"] for f in features if f["type"] == "image"]
        self.numeric = [f["name"] for f in features if f["type"] == "numeric"]
        self.class_keys = [str(label) for label in schema["labels"] or []]
        self.prediction_key = "value" if schema["task"] == "regression" else "label"
        settings = schema.get("monitoring") or {}
        # what of a record the log holds: its features and the extra fields listed, never `id`
        # (the request id, written beside the input)
        listed = [f["name"] for f in features] + list(settings.get("log_extra_fields", ()))
        self.logged = [name for name in listed if name != "id"]
        self.archive_settings = {
            key: settings.get(key, default) for key, default in SAMPLING_SETTINGS.items()
        }
        self.sampling = Sampling(self.archive_settings, contract.AUTO_SAMPLE_RATE)
        directory = os.environ.get(contract.LOG_DIR_VARIABLE)
        self.inference_log = self.open_log(directory)
        self.settings_file = (
            SettingsFile(os.path.join(directory, contract.LOG_SETTINGS_FILE), contract.AUTO_SAMPLE_RATE)
            if directory
            else None
        )
        self.log_errors = 0
        self.redacted = frozenset(settings.get("redact", ()))
        self.hashed = list(settings.get("hash", ()))
        self.log_key = read_log_key(contract.LOG_KEY_VARIABLE) if self.hashed and self.inference_log else None
        if self.hashed and self.inference_log and self.log_key is None:
            log.warning(
                "no key in %s: the log leaves out %s", contract.LOG_KEY_VARIABLE, ", ".join(self.hashed)
            )
            self.redacted |= frozenset(self.hashed)
            self.hashed = []

    def open_log(self, directory: str | None) -> InferenceLog | None:
        """The log in `directory`, written once the sample rate in force is not 0 (a settings
        file may raise the archive's 0)."""
        settings = self.archive_settings
        if directory:
            return InferenceLog(directory, settings["log_max_bytes"], settings["log_backups"])
        if settings["sample_rate"] != 0:
            log.warning(
                "no inference log: %s is not set (`forgeml serve start` sets it)",
                self.contract.LOG_DIR_VARIABLE,
            )
        return None

    def refresh_settings(self) -> None:
        """The settings file's values in force, if it changed since the last look."""
        found = self.settings_file.poll()
        if found is None:
            return
        settings = {**self.archive_settings, **found}
        self.sampling.settings = settings
        self.inference_log.max_bytes = settings["log_max_bytes"]
        self.inference_log.backups = settings["log_backups"]

    def record(self, batch: Any, received: float, latency_ms: float) -> None:
        """The sample of `batch` (an answered request.Batch) into the inference log, then its
        metrics. Never raises: the batch is answered whatever happens here."""
        try:
            if self.settings_file is not None:
                self.refresh_settings()
            logging_on = self.inference_log is not None and self.sampling.settings["sample_rate"] != 0
            lost = self.log_sample(batch, received, latency_ms) if logging_on else 0
            if self.metrics is not None:
                self.count_metrics(batch, lost)
        except Exception as error:  # a bug here must cost the batch its monitoring, not its answers
            log.warning("monitoring of a batch failed: %r", error)

    def log_sample(self, batch: Any, received: float, latency_ms: float) -> int:
        """Append the records of the sampled requests; returns how many could not be written."""
        sampled: list[tuple[str, dict[str, Any], dict[str, Any], float, int]] = []
        row = 0
        for position, request in batch.accepted():
            # drawn per request, before anything is serialised: unsampled requests cost one draw
            drawn = self.sampling.draw(len(request), received)
            if drawn is not None:
                rate, seen = drawn
                predictions = batch.predictions[row : row + len(request)]
                rates, seens = [rate] * len(request), [seen] + [1] * (len(request) - 1)
                sampled.extend(zip(batch.ids[position], request, predictions, rates, seens, strict=True))
            row += len(request)
        rejected = [error.reason for error in batch.rejections()]
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
        inputs = [{name: record[name] for name in self.logged if name in record} for _, record, *_ in sampled]
        if self.images:
            inputs = self.image_signals(inputs)
        if self.redacted or self.hashed:
            inputs = self.private(inputs)
        text = "".join(
            log_entry(
                {**head, "id": i, "sample_rate": rate, "seen": seen}, record, p[key], p.get("probabilities")
            )
            for record, (i, _, p, rate, seen) in zip(inputs, sampled, strict=True)
        )
        text += "".join(LOG_ENCODER.encode({**head, "rejected": reason}) + "\n" for reason in rejected)
        try:
            self.inference_log.append(text.encode("utf-8"))
        except OSError as error:
            self.log_errors += 1
            if self.log_errors == 1:  # then counted in the log-errors metric only
                log.warning("inference log %s: %s", self.inference_log.directory, error)
            return len(sampled)
        return 0

    def image_signals(self, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """`records` with each image replaced by its signals: the bytes would fill the log, and
        drift is tested on the signals."""
        for record in records:
            for name in self.images:
                if record[name] is not None:
                    record[name] = self.transform.image_signals(record[name])
        return records

    def private(self, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Copies of `records` for the log: `redact` fields left out, `hash` fields keyed
        hashes (transform.keyed_hashes), so the raw values never reach the disk."""
        hashes = {
            name: self.transform.keyed_hashes(self.log_key, [record.get(name) for record in records])
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

    def count_metrics(self, batch: Any, lost: int) -> None:
        contract, version = self.contract, self.version
        if batch.outputs is not None:
            if batch.classes is not None:
                counts = np.bincount(batch.classes, minlength=len(self.class_keys))
                for label, count in zip(self.class_keys, counts.tolist(), strict=True):
                    if count:
                        self.metrics.count(contract.PREDICTIONS, count, Class=label, ModelVersion=version)
            else:
                self.metrics.observe(
                    contract.PREDICTED_VALUE, batch.outputs.ravel().tolist(), ModelVersion=version
                )
            for feature, count in zip(self.numeric, batch.out_of_range.tolist(), strict=True):
                if count:
                    self.metrics.count(contract.OUT_OF_RANGE, count, Feature=feature, ModelVersion=version)
        for error in batch.rejections():
            self.metrics.count(contract.REJECTED, 1, Reason=error.reason, ModelVersion=version)
        if lost:
            self.metrics.count(contract.LOG_ERRORS, lost, ModelVersion=version)


def log_entry(head: dict[str, Any], record: dict[str, Any], prediction: Any, probabilities: Any) -> str:
    """One line of the inference log: strict JSON, so NaN (a missing value) is written as null."""
    entry = {**head, "input": record, "prediction": prediction}
    if probabilities is not None:
        entry["probabilities"] = probabilities
    try:
        return LOG_ENCODER.encode(entry) + "\n"
    except ValueError:
        entry["input"] = {name: None if value != value else value for name, value in record.items()}
        return json.dumps(entry, separators=(",", ":")) + "\n"


def read_log_key(variable: str) -> bytes | None:
    """The key file named by $`variable` (`forgeml serve start` creates it), or None when
    unset, unreadable or empty."""
    path = os.environ.get(variable)
    try:
        with open(path or "", "rb") as file:
            return file.read() or None
    except OSError:
        return None
