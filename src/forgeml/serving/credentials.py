"""The clients' credentials of a local server, managed by forgeml rather than by TorchServe.

TorchServe writes new keys at every start (and lets them expire after an hour), so a restart or
a deploy by restart used to lock every client out. forgeml keeps its own keys instead: created
once per runtime directory, kept across stops, starts, deploys and restarts, replaced only on
request (`forgeml serve rotate-keys`). The gateway checks a
request's bearer token against the SHA-256 hashes in credentials.json (what the server holds);
the keys themselves go to key_file.json (mode 0600, TorchServe's format, so clients and
`forgeml serve example` read it as before), for the user to hand to clients.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from pathlib import Path
from typing import Any

from forgeml.io import write_private

# the APIs a key opens: predictions on the inference port, the management API
APIS = ("inference", "management")
CREDENTIALS = "credentials.json"
KEY_FILE = "key_file.json"
KEY_BYTES = 24


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def ensure(runtime: Path, rotate: bool = False) -> dict[str, str]:
    """The hashes of the runtime directory's keys, creating the keys first when there are none
    (or when `rotate`). The key file is written before the hashes, so a crash in between leaves
    keys that the next call replaces, never hashes without their keys."""
    hashes_file = runtime / CREDENTIALS
    if hashes_file.is_file() and (runtime / KEY_FILE).is_file() and not rotate:
        return load(runtime)
    keys = {api: secrets.token_urlsafe(KEY_BYTES) for api in APIS}
    write_private(runtime / KEY_FILE, encode({api: {"key": key} for api, key in keys.items()}))
    write_private(hashes_file, encode({api: digest(key) for api, key in keys.items()}))
    return load(runtime)


def load(runtime: Path) -> dict[str, str]:
    """API -> SHA-256 hash of its key ({} when the directory has none)."""
    path = runtime / CREDENTIALS
    if not path.is_file():
        return {}
    return json.loads(path.read_text(encoding="utf-8"))


def client_key(runtime: Path, api: str) -> str | None:
    """The key of `api` as a client sends it (None when there is none)."""
    path = runtime / KEY_FILE
    if not path.is_file():
        return None
    return json.loads(path.read_text(encoding="utf-8")).get(api, {}).get("key")


def accepts(hashes: dict[str, str], api: str, authorization: str | None) -> bool:
    """Whether an `Authorization: Bearer <key>` header carries the key of `api`."""
    expected = hashes.get(api)
    scheme, _, token = (authorization or "").partition(" ")
    if not expected or scheme.lower() != "bearer" or not token:
        return False
    return hmac.compare_digest(digest(token.strip()), expected)


def encode(content: Any) -> bytes:
    return json.dumps(content, indent=2).encode()
