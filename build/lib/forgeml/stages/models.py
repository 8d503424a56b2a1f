"""models: the registered versions of each model, newest last, and which one serves now."""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig

from forgeml.serving.registry import Registry


def run(cfg: DictConfig) -> dict[str, Any]:
    registry = Registry(cfg.serve.model_store)
    listing = {}
    for name in registry.load()["models"]:
        serving = registry.serving(name)
        listing[name] = [
            {
                "version": entry["version"],
                "serving": entry["version"] == serving,
                "created_at": entry["created_at"],
                "config_hash": entry["config_hash"],
                "data_hash": entry["data_hash"],
                "metrics": entry["metrics"],
            }
            for entry in registry.versions(name)
        ]
    return {"registry": str(registry.path), "models": listing}
