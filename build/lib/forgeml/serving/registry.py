"""The model registry: every packaged version, kept beside the archives in the model store.

`serve/model-store/registry.json` records, per model name, each version with its config hash,
data hash, test metrics, archive checksum and creation time, plus every deploy and rollback
(the last one names what serves now). A copy of each version's archive is kept under
`.versions/<name>/<version>.mar` in the model store, so any registered version can be served
again after the working archive was rebuilt. Read-modify-write happens
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
# hidden, so TorchServe's load_models=ALL does not take it for a model
VERSIONS_DIR = ".versions"


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

    def archive_copy(self, name: str, version: str) -> Path:
        return self.path.parent.resolve() / VERSIONS_DIR / name / f"{version}.mar"

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

    def serving(self, name: str) -> str | None:
        """The version the last deploy or rollback made the default, if any."""
        events = self.load()["models"].get(name, {}).get("events", [])
        return events[-1]["version"] if events else None

    def record(self, name: str, entry: dict[str, Any]) -> dict[str, Any]:
        """Add (or replace) a version: re-packaging the same version updates its entry."""
        entry = {**entry, "created_at": entry.get("created_at") or _now()}
        with self._editing() as registry:
            model = registry["models"].setdefault(name, {"versions": [], "events": []})
            model["versions"] = [v for v in model["versions"] if v["version"] != entry["version"]]
            model["versions"].append(entry)
        return entry

    def record_event(self, name: str, version: str, action: str, **details: Any) -> None:
        """Log a deploy or rollback: the registry traces which version served when."""
        self.version(name, version)
        with self._editing() as registry:
            events = registry["models"][name]["events"]
            events.append({"version": version, "action": action, "at": _now(), **details})


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
