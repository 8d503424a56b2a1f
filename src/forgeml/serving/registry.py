"""The model registry: every packaged version, kept beside the archives in the model store.

`serve/model-store/registry.json` records, per model name, each version with its config hash,
data hash, test metrics, archive checksum and creation time, plus every deploy and rollback with
its time, gate numbers, user and host: the one record of what served when. Replaying the events
gives the stack of deployed versions (a deploy pushes, a rollback pops); its top is what serves.
A copy of each version's archive is kept under `.versions/<name>/<version>.mar` in the model
store, so any registered version can be served again after the working archive was rebuilt.

The file is validated on every read: a damaged registry stops the command with one line naming
it, before anything is written. Read-modify-write happens under a file lock and every write
replaces the file atomically, so a crash mid-write leaves the previous registry intact and two
writers never lose each other's entries.
"""

from __future__ import annotations

import fcntl
import getpass
import hashlib
import json
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml

from forgeml.errors import ForgeError
from forgeml.io import read_json, write_json
from forgeml.layout import SPLITS, split_file

FORMAT = "forgeml.registry/1"
REGISTRY_FILE = "registry.json"
VERSIONS_DIR = ".versions"
# "alert": what an alert action of `forgeml watch` did without changing what serves; "replay":
# a version's verdict on logged traffic (`forgeml replay`), which changes nothing either;
# "rollout": a step of a rollout (rollout.py) and its verdict
ACTIONS = ("deploy", "rollback", "alert", "replay", "rollout")
# the events that change what serves
SWITCHES = ("deploy", "rollback")


class RegistryError(ForgeError):
    """registry.json cannot be read as a registry: the message names the file and the fault."""


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
    for path in (split_file(processed_dir, split) for split in sorted(SPLITS)):
        if path.is_file():
            digest.update(path.name.encode() + bytes.fromhex(sha256_of(path)))
    return f"sha256:{digest.hexdigest()[:32]}"


class Registry:
    def __init__(self, model_store: str | Path) -> None:
        self.path = Path(model_store) / REGISTRY_FILE

    def archive_copy(self, name: str, version: str) -> Path:
        return self.path.parent.resolve() / VERSIONS_DIR / name / f"{version}.mar"

    def verified_archive(self, name: str, version: str) -> Path:
        """The registry's copy of `version`'s archive, checked to be the archive that was
        packaged (its sha256 is the registry's)."""
        entry = self.version(name, version)
        source = self.archive_copy(name, version)
        if not source.is_file():
            raise ForgeError(f"{name} {version}: the registry's copy of its archive ({source}) is missing")
        if sha256_of(source) != entry["sha256"]:
            raise ForgeError(
                f"{name} {version}: {source} is not the archive that was packaged (its sha256 differs "
                "from the registry's); package that version again"
            )
        return source

    def load(self) -> dict[str, Any]:
        """The registry, validated; RegistryError when the file is damaged."""
        if not self.path.is_file():
            return {"format": FORMAT, "models": {}}
        try:
            registry = read_json(self.path)
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise RegistryError(f"the model registry {self.path} is not valid JSON ({error})") from None
        problem = registry_problem(registry)
        if problem:
            raise RegistryError(f"the model registry {self.path} is damaged: {problem}")
        return registry

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

    def events(self, name: str) -> list[dict[str, Any]]:
        """Every deploy, rollback and alert of `name`, oldest first."""
        return self.load()["models"].get(name, {}).get("events", [])

    def deployed(self, name: str) -> list[str]:
        """The stack of deployed versions, oldest first: a deploy pushes, a rollback pops (and
        the version it names is on top then: rolled back to a version never deployed here, it
        replaces the top)."""
        stack: list[str] = []
        for event in self.events(name):
            if event["action"] not in SWITCHES:
                continue
            if event["action"] == "rollback":
                stack = stack[:-1]
            if stack[-1:] != [event["version"]]:
                stack.append(event["version"])
        return stack

    def serving(self, name: str) -> str | None:
        """The version the last deploy or rollback made the default, if any."""
        stack = self.deployed(name)
        return stack[-1] if stack else None

    def record(self, name: str, entry: dict[str, Any]) -> dict[str, Any]:
        """Add (or replace) a version: re-packaging the same version updates its entry."""
        entry = {**entry, "created_at": entry.get("created_at") or _now()}
        with self._editing() as registry:
            model = registry["models"].setdefault(name, {"versions": [], "events": []})
            model["versions"] = [v for v in model["versions"] if v["version"] != entry["version"]]
            model["versions"].append(entry)
        return entry

    def record_event(self, name: str, version: str, action: str, **details: Any) -> None:
        """Log a deploy, rollback, alert or replay, with who ran it where: the registry traces
        which version served when, and why (an alert's `cause`, a replay's numbers)."""
        self.version(name, version)
        event = {"version": version, "action": action, "at": _now(), **details}
        event |= {"user": _user(), "host": socket.gethostname()}
        with self._editing() as registry:
            registry["models"][name]["events"].append(event)


def registry_problem(registry: Any) -> str | None:
    """What makes `registry` unusable, else None."""
    if not isinstance(registry, dict) or registry.get("format") != FORMAT:
        return f'expected an object with "format": "{FORMAT}"'
    if not isinstance(registry.get("models"), dict):
        return '"models" is not an object'
    for name, model in registry["models"].items():
        if not isinstance(model, dict):
            return f"model {name!r} is not an object"
        for key, required in (("versions", ("version",)), ("events", ("version", "action"))):
            entries = model.get(key)
            if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
                return f"{name}.{key} is not a list of objects"
            for position, entry in enumerate(entries):
                missing = [field for field in required if not isinstance(entry.get(field), str)]
                if missing:
                    return f"{name}.{key}[{position}] has no {missing[0]!r}"
        actions = [event["action"] for event in model["events"]]
        unknown = sorted(set(actions) - set(ACTIONS))
        if unknown:
            return f"{name}.events has an unknown action {unknown[0]!r} (known: {', '.join(ACTIONS)})"
    return None


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry and no $USER, e.g. in a bare container
        return str(os.getuid())


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
