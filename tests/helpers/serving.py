"""A real TorchServe for integration tests: the trained project's config with its own model
store, runtime directory and free ports, packaged, started and deployed."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from forgeml.serving.processes import free_ports
from forgeml.serving.server import PORT_KEYS, TorchServe
from forgeml.stages import deploy, package, serve

MAX_INSTANCES = 64


def serving_config(trained: DictConfig, workdir: Path, **serve_settings: Any) -> DictConfig:
    """The trained project's config with its own store, runtime directory and free ports."""
    cfg = copy.deepcopy(trained)
    cfg.serve.merge_with(
        {
            **dict(zip(PORT_KEYS, free_ports(len(PORT_KEYS)), strict=True)),
            "model_store": str(workdir / "store"),
            "runtime_dir": str(workdir / "runtime"),
            "max_instances": MAX_INSTANCES,
            **serve_settings,
        }
    )
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
        TorchServe(cfg.serve).stop()
