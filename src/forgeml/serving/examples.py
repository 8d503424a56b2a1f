"""A request the endpoint accepts, built from the archive's own contract: what a user sends first.

Each feature gets a typical training value from the archive's preprocessor.json: a numeric
feature its training median, a categorical one its first category, a datetime the middle of the
training years, a text its most frequent words, an image a grey picture of the model's size.
"""

from __future__ import annotations

import base64
import io
import json
import shlex
import zipfile
from datetime import datetime
from pathlib import Path
from typing import Any

from forgeml.contract import PREPROCESSOR_FILE
from forgeml.errors import ForgeError

# how many of a text feature's most frequent words make its example
TEXT_WORDS = 3
# the example text's stand-in where a text feature's vocabulary is empty
EMPTY_TEXT = "example text"


def example_record(preprocessor: dict[str, Any]) -> dict[str, Any]:
    """One record: every feature the model reads, with a typical training value."""
    return {feature["name"]: example_value(feature) for feature in preprocessor["features"]}


def example_value(feature: dict[str, Any]) -> Any:
    kind = feature["type"]
    if kind == "numeric":
        return feature["fill"]
    if kind == "categorical":
        return feature["categories"][0] if feature["categories"] else None
    if kind == "datetime":
        return datetime(round(feature["year_mean"]), 6, 1).isoformat()
    if kind == "text":
        return " ".join(feature["vocabulary"][:TEXT_WORDS]) or EMPTY_TEXT
    if kind == "image":
        return grey_png(feature["size"], feature["channels"])
    raise ForgeError(f"feature '{feature['name']}' has a type no example is made for: {kind}")


def grey_png(size: list[int], channels: int) -> str:
    """A mid-grey PNG of the model's input size, as base64 text (the request's image encoding)."""
    from PIL import Image

    mode = "L" if channels == 1 else "RGB"
    out = io.BytesIO()
    Image.new(mode, (size[1], size[0]), color=128 if mode == "L" else (128, 128, 128)).save(out, format="PNG")
    return base64.b64encode(out.getvalue()).decode("ascii")


def archived_preprocessor(archive: Path) -> dict[str, Any]:
    """The fitted preprocessing packaged in `archive`: the features the endpoint reads."""
    if not archive.is_file():
        raise ForgeError(f"no archive {archive}; build it with `forgeml package` (or `dvc repro`)")
    with zipfile.ZipFile(archive) as files:
        return json.loads(files.read(PREPROCESSOR_FILE))


def curl_line(url: str, body: dict[str, Any], key_file: str | None, certificate: str | None) -> str:
    """The shell line that sends `body` to `url` with the inference token read from the key file."""
    token = (
        '$(python3 -c \'import json,sys; print(json.load(open(sys.argv[1]))["inference"]["key"])\' '
        f"{shlex.quote(key_file)})"
        if key_file
        else "INFERENCE_KEY"
    )
    parts = ["curl", "-sS", *(["--cacert", shlex.quote(certificate)] if certificate else [])]
    parts += ["-H", f'"Authorization: Bearer {token}"', "-H", shlex.quote("Content-Type: application/json")]
    parts += ["-d", shlex.quote(json.dumps(body)), shlex.quote(url)]
    return " ".join(parts)
