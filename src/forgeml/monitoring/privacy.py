"""Inference-log privacy: the key of the hashes the serving handler writes for `monitor.hash`
columns, and the reference categories hashed alike, so drift compares hashes with hashes.

The key is 32 random bytes in `<serve.runtime_dir>/inference-log.key` (mode 0600), created by
`forgeml serve start` when absent and kept across restarts: the same value keeps the same hash
for as long as the key file lives. Workers find it through $FORGEML_INFERENCE_LOG_KEY.
"""

from __future__ import annotations

import os
import secrets
import tempfile
from pathlib import Path
from typing import Any

from forgeml.data.transform import MISSING_CATEGORY, keyed_hashes
from forgeml.errors import ForgeError

KEY_FILE = "inference-log.key"
KEY_BYTES = 32


def log_key_file(runtime_dir: str | Path) -> Path:
    """The key file of a server's runtime directory, created (0600, random) if absent. Written
    to a private temporary file and linked into place, so no reader sees it half written and
    of two concurrent starts one key wins."""
    path = Path(runtime_dir).resolve() / KEY_FILE
    if path.is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".key.", dir=path.parent)  # mode 0600
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(secrets.token_bytes(KEY_BYTES))
        os.link(tmp, path)
    except FileExistsError:
        pass
    finally:
        os.unlink(tmp)
    return path


def read_log_key(runtime_dir: str | Path) -> bytes:
    path = Path(runtime_dir).resolve() / KEY_FILE
    try:
        return path.read_bytes()
    except OSError as error:
        raise ForgeError(
            f"monitor.hash columns are logged as hashes keyed by {path}, which cannot be read "
            f"({error.strerror}); run `forgeml monitor` with the serve.runtime_dir the server used"
        ) from None


def private_profile(
    profile: dict[str, Any], redacted: list[str], hashed: list[str], runtime_dir: str | Path
) -> dict[str, Any]:
    """`profile` as the inference log sees the features: the `redacted` ones left out (the
    log has no value to test), the category frequencies of the `hashed` ones keyed by their
    hashes (the missing-value category stays as it is)."""
    features = {name: sketch for name, sketch in profile["features"].items() if name not in redacted}
    key = read_log_key(runtime_dir) if hashed else b""
    for name in hashed:
        frequencies = features[name]["frequencies"]
        names = [None if category == MISSING_CATEGORY else category for category in frequencies]
        hashes = [MISSING_CATEGORY if h is None else h for h in keyed_hashes(key, names)]
        hashed_frequencies = dict(zip(hashes, frequencies.values(), strict=True))
        features[name] = {**features[name], "frequencies": hashed_frequencies}
    return {**profile, "features": features}
