"""A forgeml model archive served without TorchServe: what every engine prototype of the
bake-off (bench/engine_bakeoff.py, issue 21) shares.

The archive (.mar) is a zip (engine_bakeoff.py unpacks it); unpacked, its backend-free modules
(request.py, inference.py, monitoring.py, with contract.py and transform.py handed in) answer a
batch of request bodies with (HTTP status, JSON text) per request, a bad request failing
alone. An engine's adapter only has to hand a batch of raw bodies in and each answer back with
its status. The modules are loaded by path under private names, as handler.py loads them inside
TorchServe (see its docstring for why); the same rule, not a shared function, because
handler.py may import nothing outside the archive.

Imports the standard library, numpy and torch (through the archive's modules), and
prometheus_client for the metrics; nothing of forgeml, so that it runs in an engine's own
virtual environment with only the unpacked archive at hand.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import threading
import time
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import prometheus_client

# the one archive file named here: the contract, which names the others (as in handler.py)
CONTRACT_FILE = "contract.py"
MANIFEST = "MAR-INF/MANIFEST.json"


def manifest(model_dir: str | Path) -> dict[str, Any]:
    return json.loads((Path(model_dir) / MANIFEST).read_text())["model"]


def batching(model_dir: str | Path) -> tuple[int, float]:
    """(batch size, longest wait in seconds) from the archive's model-config.yaml, where
    `forgeml package` writes the `serve` config's batching for TorchServe: the same archive
    batches the same on every engine. Its top-level keys are flat `name: value` lines."""
    lines = (Path(model_dir) / "model-config.yaml").read_text().splitlines()
    settings = dict(line.split(": ", 1) for line in lines if ": " in line and not line.startswith(" "))
    return int(settings["batchSize"]), int(settings["maxBatchDelay"]) / 1000


class PrometheusMetrics:
    """monitoring.py's MetricsSink on prometheus_client: the archive's metric names (contract.py),
    labelled by their own dimensions, ModelVersion and ModelName as TorchServe labels them."""

    def __init__(self, contract: ModuleType, model_name: str, registry: Any = prometheus_client.REGISTRY):
        self.model_name = model_name
        self.lock = threading.Lock()
        self.metrics: dict[str, Any] = {}
        for kind, name, _unit, dimensions in contract.HANDLER_METRICS:
            labels = [*dimensions, "ModelVersion", "ModelName"]
            metric = prometheus_client.Counter if kind == "counter" else prometheus_client.Histogram
            self.metrics[name] = find_or_register(metric, name, labels, registry)

    def count(self, name: str, value: int, **labels: str) -> None:
        self.metrics[name].labels(**labels, ModelName=self.model_name).inc(value)

    def observe(self, name: str, values: list[float], **labels: str) -> None:
        histogram = self.metrics[name].labels(**labels, ModelName=self.model_name)
        for value in values:
            histogram.observe(value)


def find_or_register(metric: type, name: str, labels: list[str], registry: Any) -> Any:
    """One collector per name in a process that holds several versions (prometheus_client
    refuses a second one)."""
    existing = registry._names_to_collectors.get(name) or registry._names_to_collectors.get(f"{name}_total")
    return existing or metric(name, name, labels, registry=registry)


class ArchiveModel:
    """One unpacked archive (one model version) answering batches of raw request bodies."""

    def __init__(self, model_dir: str | Path, torch_threads: int = 1):
        import torch

        if torch_threads:
            torch.set_num_threads(torch_threads)
        model_dir = str(model_dir)
        about = manifest(model_dir)
        self.name, self.version = about["modelName"], about["modelVersion"]
        self.modules = load_archive_modules(model_dir)
        contract, transform = self.modules.contract, self.modules.transform
        self.inference = self.modules.inference.Inference(
            model_dir, about["serializedFile"], transform, contract
        )
        self.requests = self.modules.request.RequestContract(
            self.inference.schema, self.inference.preprocessor, transform
        )
        self.monitoring = self.modules.monitoring.Monitoring(
            self.inference.schema,
            transform,
            contract,
            (self.name, self.version),
            PrometheusMetrics(contract, self.name),
        )

    def answer(self, bodies: list[Any]) -> list[tuple[int, str]]:
        """(HTTP status, JSON text) per body: parse -> inference -> answers -> monitoring."""
        received, started = time.time(), time.perf_counter()
        batch = self.inference.infer(self.requests.batch(bodies))
        answers = batch.answers()
        self.monitoring.record(batch, received, 1000 * (time.perf_counter() - started))
        return answers


def load_archive_modules(model_dir: str) -> SimpleNamespace:
    contract = load_module(model_dir, CONTRACT_FILE)
    return SimpleNamespace(
        contract=contract,
        transform=load_module(model_dir, contract.TRANSFORM_FILE),
        request=load_module(model_dir, contract.REQUEST_FILE),
        inference=load_module(model_dir, contract.INFERENCE_FILE),
        monitoring=load_module(model_dir, contract.MONITORING_FILE),
    )


def load_module(model_dir: str, file: str) -> ModuleType:
    """A file of the archive under a name of its own, in sys.modules (dataclasses look their
    module up there)."""
    name = f"forgeml_archive_{os.path.splitext(file)[0]}"
    spec = importlib.util.spec_from_file_location(name, os.path.join(model_dir, file))
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
