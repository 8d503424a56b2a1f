"""deploy: put the packaged version of the model on the running TorchServe.

Registers serve/model-store/<serve.model_name>.mar (the model API must be on: start the server
with `serve.model_api=true`), waits until its workers are READY, then makes it the default
version. The previous version stays registered, so `forgeml rollback` can return to it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from forgeml.errors import ForgeError
from forgeml.serving.server import TorchServe


def run(cfg: DictConfig) -> dict[str, Any]:
    server = TorchServe(cfg.serve)
    if server.pid() is None:
        raise ForgeError("no TorchServe running; start one with `forgeml serve start`")
    return server.deploy(Path(cfg.serve.model_store) / f"{cfg.serve.model_name}.mar")
