"""rollback: make the version that was the default before the last deploy the default again."""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig

from forgeml.errors import ForgeError
from forgeml.serving.server import TorchServe


def run(cfg: DictConfig) -> dict[str, Any]:
    server = TorchServe(cfg.serve)
    if server.pid() is None:
        raise ForgeError("no TorchServe running; start one with `forgeml serve start`")
    return server.rollback(cfg.serve.model_name)
