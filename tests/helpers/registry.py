"""A registry entry with only what the registry itself reads."""

from __future__ import annotations


def entry(version: str, accuracy: float = 0.9) -> dict:
    return {"version": version, "config_hash": "c", "data_hash": "d", "metrics": {"test/accuracy": accuracy}}
