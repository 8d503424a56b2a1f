"""history: every deploy and rollback in the registry, oldest first: when, which version, the
gate's verdict and numbers, forced or not, and who ran it on which host.

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


def render(result: dict[str, Any]) -> None:
    """The events as a table on the terminal."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"deployments recorded in {result['registry']}")
    for column in ("time", "model", "action", "version", "gate", "forced", "user@host"):
        table.add_column(column)
    for event in result["events"]:
        table.add_row(
            event["at"],
            event["model"],
            event["action"],
            event["version"],
            gate_numbers(event),
            "FORCED" if event.get("forced") else "no",
            f"{event.get('user', '?')}@{event.get('host', '?')}",
        )
    Console().print(table)


def gate_numbers(event: dict[str, Any]) -> str:
    """The verdict and the metrics it compared (a rollback names the version it replaced)."""
    if event["action"] == "rollback":
        return f"back from {event.get('replaced', '?')}"
    metrics = ", ".join(f"{name} {value:.4f}" for name, value in (event.get("metrics") or {}).items())
    return f"{event.get('gate', '?')}\n{metrics or 'no test metrics'}"
