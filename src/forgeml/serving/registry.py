"""The model registry: every packaged version, kept beside the archives in the model store.

`serve/model-store/registry.json` records, per model name, each version with its config hash,
data hash, test metrics, archive checksum and creation time, plus the history of deployments
(the last entry is what serves now; `rollback` steps back through it). Read-modify-write happens
under a file lock and every write replaces the file atomically, so a crash mid-write leaves the
previous registry intact and two writers never lose each other's entries.
"""

from __future__ import annotations

import fcntl
import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml

from forgeml.errors import ForgeError
from forgeml.io import read_json, write_json

FORMAT = "forgeml.registry/1"
REGISTRY_FILE = "registry.json"


def sha256_of(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def data_hash(processed_dir: str | Path, lock_file: str | Path = "dvc.lock") -> str:
    """DVC's hash of the processed data when dvc.lock has it, else a hash of the split files."""
    lock = Path(lock_file)
    if lock.is_file():
        stages = (yaml.safe_load(lock.read_text()) or {}).get("stages", {})
        for out in stages.get("prepare", {}).get("outs", []):
            if Path(out.get("path", "")) == Path(processed_dir) and out.get("md5"):
                return f"dvc:{out['md5']}"
    digest = hashlib.sha256()
    for split in sorted(Path(processed_dir).glob("*.parquet")):
        digest.update(split.name.encode() + bytes.fromhex(sha256_of(split)))
    return f"sha256:{digest.hexdigest()[:32]}"


class Registry:
    def __init__(self, model_store: str | Path) -> None:
        self.path = Path(model_store) / REGISTRY_FILE

    def load(self) -> dict[str, Any]:
        if not self.path.is_file():
            return {"format": FORMAT, "models": {}}
        return read_json(self.path)

    @contextmanager
    def _editing(self) -> Iterator[dict[str, Any]]:
        """The registry, locked against other writers, written back atomically on success."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_suffix(".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            registry = self.load()
            yield registry
            write_json(self.path, registry)

    def versions(self, name: str) -> list[dict[str, Any]]:
        return self.load()["models"].get(name, {}).get("versions", [])

    def version(self, name: str, version: str) -> dict[str, Any]:
        for entry in self.versions(name):
            if entry["version"] == version:
                return entry
        known = ", ".join(e["version"] for e in self.versions(name)) or "none"
        raise ForgeError(f"model '{name}' has no registered version '{version}' (registered: {known})")

    def deployed(self, name: str) -> dict[str, Any] | None:
        history = self.load()["models"].get(name, {}).get("deployments", [])
        return self.version(name, history[-1]["version"]) if history else None

    def record(self, name: str, entry: dict[str, Any]) -> dict[str, Any]:
        """Add (or replace) a version: re-packaging the same version updates its entry."""
        entry = {**entry, "created_at": entry.get("created_at") or _now()}
        with self._editing() as registry:
            model = registry["models"].setdefault(name, {"versions": [], "deployments": []})
            model["versions"] = [v for v in model["versions"] if v["version"] != entry["version"]]
            model["versions"].append(entry)
        return entry

    def mark_deployed(self, name: str, version: str, forced: bool = False) -> None:
        self.version(name, version)
        with self._editing() as registry:
            history = registry["models"][name]["deployments"]
            history.append({"version": version, "at": _now(), "forced": forced})

    def roll_back(self, name: str) -> str:
        """Step back to the version deployed before the current one; returns it."""
        with self._editing() as registry:
            history = registry["models"].get(name, {}).get("deployments", [])
            if len(history) < 2:
                raise ForgeError(f"model '{name}' has no earlier deployment to roll back to")
            history.pop()
            return history[-1]["version"]


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
