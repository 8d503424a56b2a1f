"""Deployments over the registry: what a server loads at start, deploy and rollback.

The registry's events are the one record of what serves (registry.py): `serve start` loads the
version on top of its deployed stack for every model (none if never deployed), deploy pushes a
version, rollback pops back to the one before. A version is always served from the registry's
copy of its archive (checked against its sha256), placed in the model store under a plain name
`<model>.<version>.mar`, the only kind of name the server's allowed_urls and TorchServe's own
checks accept; so a rebuilt working archive never changes what a restart serves.
"""

from __future__ import annotations

import shutil
from typing import Any

from forgeml.errors import ForgeError
from forgeml.io import atomic_path
from forgeml.serving.local_server import LocalServer
from forgeml.serving.registry import Registry, sha256_of


def served_archive(registry: Registry, model: str, version: str) -> str:
    """The plain file name in the model store of `version`'s archive, copied there from the
    registry's copy after checking it is the archive that was packaged."""
    entry = registry.version(model, version)
    source = registry.verified_archive(model, version)
    served = registry.path.parent.resolve() / f"{model}.{version}.mar"
    if not served.is_file() or sha256_of(served) != entry["sha256"]:
        with atomic_path(served) as tmp:
            shutil.copyfile(source, tmp)
    return served.name


def serving_archives(registry: Registry) -> dict[str, str]:
    """Model name -> archive to load at start: the version the registry says serves."""
    archives = {}
    for model in registry.load()["models"]:
        version = registry.serving(model)
        if version:
            archives[model] = served_archive(registry, model, version)
    return archives


def make_default(server: LocalServer, registry: Registry, model: str, version: str) -> None:
    """Register `version` unless the server holds it, wait until READY, make it the default;
    a version registered here that never gets READY is unregistered again."""
    held = server.api.holds(model, version)
    if not held:
        server.api.register(served_archive(registry, model, version), server.serve.workers)
    try:
        server.wait_ready(model, version)
    except ForgeError:
        if not held:
            server.api.unregister(model, version)
        raise
    server.api.set_default(model, version)


def deploy(server: LocalServer, registry: Registry, model: str, version: str, **gate: Any) -> dict[str, Any]:
    """Make `version` the default and record the deploy with the gate's numbers (`gate`)."""
    switch(server, registry, model, version)
    registry.record_event(model, version, "deploy", **gate)
    return {"model": model, **server.api.model_status(model)}


def switch(server: LocalServer, registry: Registry, model: str, version: str) -> None:
    """Serve `version` of `model` in place: the backend behind the gateway registers it (its
    model API is on, on loopback, for forgeml only) and makes it the default once READY, while
    the version before keeps answering; no restart, no request lost."""
    make_default(server, registry, model, version)


def rollback(server: LocalServer, registry: Registry, model: str, **details: Any) -> dict[str, Any]:
    """Make the version deployed before the current one the default again, and record it with
    `details` (an alert's `cause`)."""
    stack = registry.deployed(model)
    if len(stack) < 2:
        raise ForgeError(
            f"nothing to roll back to: {model} has {len(stack) or 'no'} deployed version(s) in "
            f"{registry.path} ({', '.join(stack) or 'run `forgeml deploy` first'})"
        )
    previous, current = stack[-2:]
    switch(server, registry, model, previous)
    registry.record_event(model, previous, "rollback", replaced=current, **details)
    return {"model": model, **server.api.model_status(model)}
