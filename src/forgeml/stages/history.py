"""history: every deploy, rollback and alert in the registry, oldest first: when, which version,
the gate's verdict and numbers, forced or not, the cause (an alert of `forgeml watch`), and who
ran it on which host.

    forgeml history           # a table for people
    forgeml history --json    # the same events as JSON, for scripts
"""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig

from forgeml.serving.registry import Registry


def run(cfg: DictConfig) -> dict[str, Any]:
    registry = Registry(cfg.serve.model_store)
    events = [
        {"model": name, **event} for name in registry.load()["models"] for event in registry.events(name)
    ]
    events.sort(key=lambda event: event["at"])
    return {"registry": str(registry.path), "events": events}
