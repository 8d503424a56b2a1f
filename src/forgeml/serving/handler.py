"""TorchServe handler of a forgeml model archive: the thin adapter between TorchServe's
`handle(data, context)` and the archive's backend-free modules,

    request.py     the request contract: parse, check, decode; the 400s
    inference.py   the exported program and preprocessing: encode, run, predict
    monitoring.py  the inference log and the metrics of each batch
    contract.py    the names the archive and forgeml agree on (files, variables, metrics)
    transform.py   forgeml/data/transform.py, the preprocessing arithmetic training uses

How they meet: this adapter loads each of them by path from the model directory, under a
private name, and hands each the modules it builds on (request.py, inference.py and
monitoring.py import no module of the archive or of forgeml: they take transform.py and
contract.py as arguments). Loading by path rather than by a flat `import request`: TorchServe
appends the model directory to sys.path, so an installed module of the same name would win;
and forgeml's own copies of these modules (forgeml.serving.request, ...) are normal modules of a
package, where flat imports do not resolve. One rule serves both places, and a second backend's
adapter loads the same files the same way.

Runs inside a stock TorchServe worker: this file imports the standard library, torch and `ts`
(TorchServe's package) only; the others the standard library, torch, numpy and Pillow.

TorchServe specifics live here: the model-config.yaml's torch threads, the HTTP status of each
answer, and the metrics sink. A worker sums the metrics and hands them to TorchServe's metrics
API once per METRICS_INTERVAL (1 s), from a background thread, declared in the metrics config
that `forgeml serve start` writes (TorchServe shows only declared metrics); each also labelled
ModelName and Level by TorchServe's API (and Hostname, by its frontend).
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import os
import re
import sys
import threading
import time
from collections import Counter
from types import ModuleType, SimpleNamespace
from typing import Any

import torch
from ts.metrics.dimension import Dimension
from ts.metrics.metric_type_enum import MetricTypes
from ts.torch_handler.base_handler import BaseHandler

# the one archive file this adapter names by itself: the contract, which names the others
CONTRACT_FILE = "contract.py"
# seconds between two hand-overs of a worker's summed metrics to TorchServe
METRICS_INTERVAL = 1.0
# TorchServe's metric lines separate dimensions with ',' and name from value with ':'
UNSAFE_IN_DIMENSION = re.compile(r"[,:|\r\n]+")

log = logging.getLogger(__name__)


class PendingMetrics:
    """The metrics sink of monitoring.py for TorchServe: counts summed across batches and handed
    to TorchServe's metrics API by a background thread every `interval` seconds. Each metric line
    costs the worker a log write and the frontend a parse, so there is one line per count and
    interval, not per batch."""

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
        """Load the archive's modules and files once per worker."""
        model_dir = context.system_properties["model_dir"]
        set_torch_threads(context)
        self.modules = load_archive_modules(model_dir)
        contract, transform = self.modules.contract, self.modules.transform
        program_file = context.manifest["model"]["serializedFile"]
        self.inference = self.modules.inference.Inference(model_dir, program_file, transform, contract)
        self.requests = self.modules.request.RequestContract(
            self.inference.schema, self.inference.preprocessor, transform
        )
        # TorchServe's metrics cache; None outside TorchServe
        self.metrics = None if context.metrics is None else PendingMetrics(context.metrics, METRICS_INTERVAL)
        model = (context.model_name, context.manifest["model"].get("modelVersion", ""))
        self.monitoring = self.modules.monitoring.Monitoring(
            self.inference.schema, transform, contract, model, self.metrics
        )
        self.initialized = True

    def handle(self, data: list[dict[str, Any]], context: Any) -> list[str]:
        """parse -> inference -> answers -> monitoring, without BaseHandler's profiler, explain
        and describe hooks, which this handler does not offer, and its per-batch timing metric,
        which TorchServe's PredictionTime already gives."""
        received, started = time.time(), time.perf_counter()
        batch = self.inference.infer(self.requests.batch([row.get("body", row.get("data")) for row in data]))
        responses = self.respond(batch, context)
        self.monitoring.record(batch, received, 1000 * (time.perf_counter() - started))
        return responses

    def respond(self, batch: Any, context: Any) -> list[str]:
        """One JSON text per request, with its status. Encoded already: TorchServe would encode
        a dict with indent=2, which takes Python's slow encoder and doubles the bytes sent."""
        responses = []
        for idx, (status, text) in enumerate(batch.answers()):
            context.set_response_content_type(idx, "application/json")
            if status == self.modules.request.BAD_REQUEST:
                context.set_response_status(status, self.modules.request.BAD_REQUEST_PHRASE, idx=idx)
            responses.append(text)
        return responses


# TorchServe takes a handler module's only class, or else its `handle` function: this module
# has helper classes, so the entry point is a function around one handler per worker.
_service = ForgemlHandler()


def handle(data: list[dict[str, Any]] | None, context: Any) -> list[str] | None:
    """TorchServe's entry point; it first calls it with `data=None` to initialise the worker."""
    if not _service.initialized:
        _service.initialize(context)
    return None if data is None else _service.handle(data, context)


def load_archive_modules(model_dir: str) -> SimpleNamespace:
    """The archive's modules, each loaded from `model_dir` (see the module's docstring)."""
    contract = load_module(model_dir, CONTRACT_FILE)
    return SimpleNamespace(
        contract=contract,
        transform=load_module(model_dir, contract.TRANSFORM_FILE),
        request=load_module(model_dir, contract.REQUEST_FILE),
        inference=load_module(model_dir, contract.INFERENCE_FILE),
        monitoring=load_module(model_dir, contract.MONITORING_FILE),
    )


def load_module(model_dir: str, file: str) -> ModuleType:
    """Import a file of the archive under a name of its own, whatever else is on sys.path; in
    sys.modules, as an import would put it (dataclasses look their module up there)."""
    name = f"forgeml_archive_{os.path.splitext(file)[0]}"
    spec = importlib.util.spec_from_file_location(name, os.path.join(model_dir, file))
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def set_torch_threads(context: Any) -> None:
    """`serve.torch_threads` from the archive's model-config.yaml: on a small machine torch's
    intra-op threads (one per core) compete with TorchServe's frontend for the cores, and a
    one-record forward gains nothing from them. 0 or unset: torch's default."""
    threads = ((context.model_yaml_config or {}).get("handler") or {}).get("torch_threads")
    if threads:
        torch.set_num_threads(threads)


def dimensions(labels: tuple[tuple[str, str], ...]) -> list[Dimension]:
    """A new list each call: TorchServe appends its default dimensions to the one it is given."""
    return [Dimension(name, dimension_value(value)) for name, value in labels]


@functools.lru_cache(maxsize=4096)
def dimension_value(value: Any) -> str:
    """`value` as a metric label TorchServe's metric lines can carry (no ',', ':', '|')."""
    return UNSAFE_IN_DIMENSION.sub("_", str(value)) or "_"
