"""rollback: make the version that was the default before the last deploy the default again.

A version the server no longer holds (after a restart) is registered again from the registry's
copy of its archive. The rollback is recorded in the registry.
"""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig

from forgeml.errors import ForgeError
from forgeml.serving.registry import Registry
from forgeml.serving.server import TorchServe


def run(cfg: DictConfig) -> dict[str, Any]:
    server = TorchServe(cfg.serve)
    if server.pid() is None:
        raise ForgeError("no TorchServe running; start one with `forgeml serve start`")
    registry = Registry(cfg.serve.model_store)
    name = cfg.serve.model_name
    rolled_back = server.rollback(name, registry)
    registry.record_event(name, rolled_back["default_version"], "rollback")
    return rolled_back
