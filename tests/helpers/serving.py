"""A trained model on a real server (forgeml's gateway, TorchServe behind it): its config with
private ports and directories, the server's lifecycle, requests and what the workers logged."""

from __future__ import annotations

import copy
import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd
from omegaconf import DictConfig

from forgeml.serving.local_server import LocalServer
from forgeml.serving.management import http_request
from forgeml.stages import deploy, package, serve
from tests.helpers.ports import serve_ports

MODEL = "breast_cancer"
MAX_INSTANCES = 64
# what a stock TorchServe worker has: the standard library, torch, numpy, PyYAML and ts, plus
# Pillow (PIL), which transform.py imports only when it decodes an image feature
WORKER_MODULES = {*sys.stdlib_module_names, "torch", "numpy", "yaml", "ts", "PIL"}


def serving_config(trained: DictConfig, workdir: Path, **serve_settings: Any) -> DictConfig:
    """The trained project's config with its own store, runtime directory, inference log directory
    and free ports: servers started from one trained project share none of them."""
    cfg = copy.deepcopy(trained)
    cfg.serve.merge_with(
        {
            **serve_ports(),
            "model_store": str(workdir / "store"),
            "runtime_dir": str(workdir / "runtime"),
            "max_instances": MAX_INSTANCES,
            **serve_settings,
        }
    )
    cfg.monitor.log_dir = str(workdir / "inference-log")
    return cfg


@contextmanager
def packaged_and_served(cfg: DictConfig) -> Iterator[None]:
    """The config's model packaged, on a started server (model API on) and deployed; the server
    is stopped whatever happens."""
    package.run(cfg)
    try:
        serve.start(cfg)
        deploy.run(cfg)
        yield
    finally:
        LocalServer(cfg.serve).stop()


def ask(cfg: DictConfig, body: Any, token: str | None = "inference", model: str = MODEL) -> tuple[int, Any]:
    """POST one request to the model's endpoint; `body` bytes are sent as they are."""
    server = LocalServer(cfg.serve)
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    key = server.token(token) if token else None
    return http_request("POST", f"{server.url('inference')}/predictions/{model}", key, data)


def records(rows: pd.DataFrame) -> list[dict[str, Any]]:
    return json.loads(rows.to_json(orient="records"))


def huge_integer(row: dict[str, Any]) -> bytes:
    """`row` with a 5,000-digit integer as its mean area: past Python's int-from-text limit."""
    return (
        json.dumps({**row, "mean area": 1})
        .encode()
        .replace(b'"mean area": 1', b'"mean area": 1' + b"0" * 4999)
    )


def log_lines(cfg: DictConfig) -> list[dict[str, Any]]:
    """Every line of every worker's inference log file."""
    return [
        json.loads(line)
        for path in sorted(Path(cfg.monitor.log_dir).glob("*.jsonl"))
        for line in path.read_text(encoding="utf-8").splitlines()
    ]


def logged(cfg: DictConfig) -> list[dict[str, Any]]:
    """The accepted records' lines (a rejected request's line has its reason instead)."""
    return [line for line in log_lines(cfg) if "rejected" not in line]
