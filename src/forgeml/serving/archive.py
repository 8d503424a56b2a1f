"""The model archive (.mar): everything a stock TorchServe needs to serve a forgeml model.

    handler.py           forgeml/serving/handler.py (torch, numpy, stdlib and ts only)
    model.pt2            the exported program from models/
    preprocessor.json    the fitted preprocessing from models/
    transform.py         forgeml/data/transform.py, unchanged: the handler applies it
    input_schema.json    the request contract: features, types, categories, ranges, limits,
                         and the inference log's settings from the `monitor` config
                         (sample rate, rotation, columns redacted and hashed)
    model-config.yaml    workers, batching, timeouts and torch threads from the `serve` config
    decision_threshold.json  a binary model's decision threshold, when `evaluate` picked one

Built by torch-model-archiver from the model artifact in models/, never from today's conf/.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import yaml

from forgeml.config import check_ranges
from forgeml.data import transform
from forgeml.errors import ForgeError
from forgeml.io import write_json, write_text
from forgeml.layout import DECISION_THRESHOLD

# TorchServe's rule for model names and versions (they become URL path segments)
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
ARCHIVE_MANIFEST = "MAR-INF/MANIFEST.json"
# the handler runs without forgeml, so it names these files itself (handler.py, top of file)
HANDLER = Path(__file__).with_name("handler.py")
SCHEMA_FILE, PREPROCESSOR_FILE, TRANSFORM_FILE = (
    "input_schema.json",
    "preprocessor.json",
    "transform.py",
)
DECISION_FILE = DECISION_THRESHOLD


def input_schema(preprocessor: dict[str, Any], max_instances: int, monitor: Any = None) -> dict[str, Any]:
    """What a request may contain, derived from the fitted preprocessing, and how much of it the
    handler logs (`monitor`: the `monitor` config; None: no inference log)."""
    features = []
    for feature in preprocessor["features"]:
        entry = {"name": feature["name"], "type": feature["type"]}
        if feature["type"] == "numeric":
            entry |= {"min": feature["min"], "max": feature["max"], "missing": "training median"}
        elif feature["type"] == "categorical":
            entry |= {"categories": feature["categories"], "unknown": "unknown bucket (all zeros)"}
        elif feature["type"] == "image":
            entry |= {
                "encoding": "PNG or JPEG as base64",
                "size": feature["size"],
                "channels": feature["channels"],
            }
        elif feature["type"] == "datetime":
            entry |= {"format": feature["format"] or "ISO 8601, YYYY/MM/DD, ...", "missing": "missing flag"}
        elif feature["type"] == "text":
            entry |= {"max_tokens": feature["max_tokens"], "vocabulary_size": len(feature["vocabulary"])}
        features.append(entry)
    return {
        "format": "forgeml.input_schema/1",
        "task": preprocessor["task"],
        "target": preprocessor["target"],
        "labels": preprocessor.get("labels"),
        "features": features,
        "max_instances": max_instances,
        "monitoring": inference_log_settings(monitor, preprocessor["features"]),
    }


def inference_log_settings(monitor: Any, features: list[dict[str, Any]]) -> dict[str, Any]:
    """The handler's share of requests logged, its log rotation and the columns it leaves out
    (`redact`) or hashes (`hash`); None: nothing logged."""
    if monitor is None:
        return {"sample_rate": 0.0, "log_max_bytes": 0, "log_backups": 0, "redact": [], "hash": []}
    check_ranges("monitor", monitor)
    return {
        "sample_rate": float(monitor.sample_rate),
        "log_max_bytes": int(monitor.log_max_bytes),
        "log_backups": int(monitor.log_backups),
        **private_columns(monitor, features),
    }


def private_columns(monitor: Any, features: list[dict[str, Any]]) -> dict[str, list[str]]:
    """`monitor.redact` and `monitor.hash`, checked against the model's features: a typo would
    otherwise log the very column it was meant to hide."""
    types = {feature["name"]: feature["type"] for feature in features}
    redact, hashed = list(monitor.redact), list(monitor.hash)
    for key, names in (("redact", redact), ("hash", hashed)):
        for name in names:
            if name not in types:
                raise ForgeError(
                    f"monitor.{key}: {name!r} is not a feature of the model; its features: {', '.join(types)}"
                )
    for name in hashed:
        if name in redact:
            raise ForgeError(f"monitor.hash and monitor.redact both name {name!r}: choose one")
        if types[name] != "categorical":
            raise ForgeError(
                f"monitor.hash: {name!r} is {types[name]}, and hashed values are no categories to "
                "compare; leave it out of the log with monitor.redact"
            )
    return {"redact": redact, "hash": hashed}


def model_config(serve: Any) -> dict[str, Any]:
    """TorchServe's per-model settings (model-config.yaml), from the `serve` config."""
    check_ranges("serve", serve)
    return {
        "minWorkers": serve.workers,
        "maxWorkers": serve.workers,
        "batchSize": serve.batch_size,
        "maxBatchDelay": serve.max_batch_delay,
        "responseTimeout": serve.response_timeout,
        "startupTimeout": serve.startup_timeout,
        # read by the handler (context.model_yaml_config), so the setting travels with the archive
        "handler": {"torch_threads": serve.torch_threads},
    }


def build_archive(
    models_dir: str | Path,
    work_dir: str | Path,
    name: str,
    version: str,
    serve: Any,
    handler: Path = HANDLER,
    monitor: Any = None,
    decision: dict[str, Any] | None = None,
) -> Path:
    """Build `<work_dir>/<name>.mar` and return its path; nothing of a failed build remains.
    Give each build its own `work_dir`: the archive is hashed and copied from there, where no
    parallel build can replace it. `handler` is for baselines; `monitor` (the `monitor` config)
    sets the inference log, None: no inference log; `decision`: the decision threshold to carry."""
    for what, value in (("serve.model_name", name), ("serve.version", version)):
        if not NAME_PATTERN.match(value):
            raise ForgeError(
                f"{what}={value!r} is not a valid TorchServe name: use letters, digits, '_', '-', '.'"
            )
    models_dir, work_dir = Path(models_dir), Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".package.", dir=work_dir) as work:
        staging = Path(work)
        preprocessor = json.loads((models_dir / PREPROCESSOR_FILE).read_text(encoding="utf-8"))
        write_json(staging / SCHEMA_FILE, input_schema(preprocessor, serve.max_instances, monitor))
        write_text(staging / "model-config.yaml", yaml.safe_dump(model_config(serve)))
        shutil.copyfile(models_dir / PREPROCESSOR_FILE, staging / PREPROCESSOR_FILE)
        shutil.copyfile(transform.__file__, staging / TRANSFORM_FILE)
        shutil.copyfile(handler, staging / "handler.py")
        extra = [SCHEMA_FILE, PREPROCESSOR_FILE, TRANSFORM_FILE]
        if decision is not None:
            write_json(staging / DECISION_FILE, decision)
            extra.append(DECISION_FILE)
        command = [
            *archiver_command(),
            *("--model-name", name, "--version", version),
            *("--serialized-file", str(models_dir.resolve() / "model.pt2")),
            *("--handler", "handler.py", "--config-file", "model-config.yaml"),
            *("--extra-files", ",".join(extra), "--export-path", "out", "--force"),
        ]
        (staging / "out").mkdir()
        # the archiver stages files under $TMPDIR/<name>: a private one keeps parallel builds apart
        env = {**os.environ, "TMPDIR": str(staging)}
        result = subprocess.run(command, cwd=staging, env=env, capture_output=True, text=True)
        if result.returncode != 0:
            raise ForgeError(f"torch-model-archiver failed:\n{result.stderr.strip()}")
        os.replace(staging / "out" / f"{name}.mar", work_dir / f"{name}.mar")
    return work_dir / f"{name}.mar"


def archive_identity(archive: Path) -> tuple[str, str]:
    """(model name, version) written in the archive by `forgeml package`."""
    if not archive.is_file():
        raise ForgeError(f"no archive {archive}; build it with `forgeml package`")
    model = archive_manifest(archive)["model"]
    return model["modelName"], model["modelVersion"]


def archiver_command() -> list[str]:
    try:
        import model_archiver  # noqa: F401
    except ImportError:
        raise ForgeError("torch-model-archiver is not installed: pip install 'forgeml[serve]'") from None
    return [sys.executable, "-m", "model_archiver.model_packaging"]


def archive_manifest(path: str | Path) -> dict[str, Any]:
    """The MANIFEST.json TorchServe reads: model name, version, handler, files."""
    with zipfile.ZipFile(path) as archive:
        return json.loads(archive.read(ARCHIVE_MANIFEST))
