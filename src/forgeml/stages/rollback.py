"""rollback: make the version deployed before the current one the default again.

What was deployed comes from the registry's events, so a rollback works the same after a
restart; a version the server no longer holds is registered again from the registry's copy of
its archive. The rollback is recorded in the registry.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from omegaconf import DictConfig

from forgeml.serving import deployments
from forgeml.serving.local_server import running_server
from forgeml.serving.registry import Registry


def run(cfg: DictConfig, given: Iterable[str] = (), **details: Any) -> dict[str, Any]:
    """On the running server, without a restart. `given`: the settings the command line named
    (one contradicting the running server is refused); `details` go into the registry's event
    (`forgeml watch` records the alert's cause)."""
    registry = Registry(cfg.serve.model_store)
    registry.load()  # a damaged registry stops here, before the server is touched
    server = running_server(cfg.serve, given)
    return deployments.rollback(server, registry, cfg.serve.model_name, **details)
