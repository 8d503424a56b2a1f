"""rollback: make the version deployed before the current one the default again.

What was deployed comes from the registry's events, so a rollback works the same after a
restart; a version the server no longer holds is registered again from the registry's copy of
its archive. The rollback is recorded in the registry.
"""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig

from forgeml.config import check_ranges
from forgeml.errors import ForgeError
from forgeml.serving import deployments
from forgeml.serving.registry import Registry
from forgeml.serving.server import TorchServe


def run(cfg: DictConfig, **details: Any) -> dict[str, Any]:
    """`details` go into the registry's event (`forgeml watch` records the alert's cause)."""
    check_ranges("serve", cfg.serve)  # a restart starts the server with this config
    registry = Registry(cfg.serve.model_store)
    registry.load()  # a damaged registry stops here, before the server is touched
    server = TorchServe(cfg.serve, inference_log_dir=cfg.monitor.log_dir)  # kept across a restart
    if server.pid() is None:
        raise ForgeError("no TorchServe running; start one with `forgeml serve start`")
    return deployments.rollback(server, registry, cfg.serve.model_name, **details)
