"""The model archive (.mar): everything a stock TorchServe needs to serve a forgeml model,
flat in one directory (the names are forgeml/contract.py's):

    handler.py           forgeml/serving/handler.py, TorchServe's adapter (stdlib, torch, ts)
    request.py           forgeml/serving/request.py, the request contract
    inference.py         forgeml/serving/inference.py, the program applied to requests
    monitoring.py        forgeml/serving/monitoring.py, the inference log and the metrics
    contract.py          forgeml/contract.py, the names the archive and forgeml agree on
    transform.py         forgeml/data/transform.py, unchanged: the preprocessing training applies
    model.pt2            the exported program from models/
    preprocessor.json    the fitted preprocessing from models/
    input_schema.json    the request contract: features, types, categories, ranges, limits
                         (an image's pixel budget), and the inference log's settings from the
                         `monitor` config (sample rate, rotation, extra fields logged, fields
                         redacted and hashed)
    model-config.yaml    workers, batching, timeouts and torch threads from the `serve` config
    decision_threshold.json  a binary model's decision threshold, when `evaluate` picked one
    data_contract.json   the contract of the data the model was trained on (data/contract.py),
                         which `prepare` holds new training data to while this version serves

Built by torch-model-archiver from the model artifact in models/, never from today's conf/.
"""

from __future__ import annotations

import importlib.util
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

from forgeml import contract
from forgeml.config import check_logged_columns, check_ranges, check_sample_rate
from forgeml.errors import ForgeError
from forgeml.io import read_json, write_json, write_text
from forgeml.serving.log_settings import sampling_settings

# TorchServe's rule for model names and versions (they become URL path segments)
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
ARCHIVE_MANIFEST = "MAR-INF/MANIFEST.json"
# the archive's Python modules: its file name -> forgeml's module (found, not imported: the
# packaging imports no torch)
MODULES = {
    contract.HANDLER_FILE: "forgeml.serving.handler",
    contract.REQUEST_FILE: "forgeml.serving.request",
    contract.INFERENCE_FILE: "forgeml.serving.inference",
    contract.MONITORING_FILE: "forgeml.serving.monitoring",
    contract.CONTRACT_FILE: "forgeml.contract",
    contract.TRANSFORM_FILE: "forgeml.data.transform",
}
# an image may hold this many times the pixels of the model's input, and at least
# MIN_PIXEL_BUDGET: the size is checked from the header, before a small file unpacks to gigabytes
PIXEL_BUDGET_FACTOR = 64
MIN_PIXEL_BUDGET = 1024 * 1024


def input_schema(
    preprocessor: dict[str, Any], max_instances: int, monitor: Any = None, max_pixels: int | None = None
) -> dict[str, Any]:
    """What a request may contain, derived from the fitted preprocessing, and how much of it the
    handler logs (`monitor`: the `monitor` config; None: no inference log). `max_pixels`:
    `data.image.max_pixels`, an image's pixel budget (None: pixel_budget of the input size)."""
    if max_pixels is not None and max_pixels < 1:
        raise ForgeError(f"data.image.max_pixels={max_pixels} must be at least 1 (or null)")
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
                "max_pixels": max_pixels or pixel_budget(feature["size"]),
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


def pixel_budget(size: list[int]) -> int:
    """How many pixels an image sent to a model of input `size` ([height, width]) may hold."""
    return max(PIXEL_BUDGET_FACTOR * size[0] * size[1], MIN_PIXEL_BUDGET)


def inference_log_settings(monitor: Any, features: list[dict[str, Any]]) -> dict[str, Any]:
    """The handler's sample rate and log rotation (log_settings.py: a running server may take
    others from its settings file), the request fields it logs beside the features
    (`log_extra_fields`) and those it leaves out (`redact`) or hashes (`hash`); sample rate 0:
    nothing logged."""
    if monitor is None:
        return {
            "sample_rate": 0.0,
            "log_max_bytes": 0,
            "log_backups": 0,
            "log_extra_fields": [],
            "redact": [],
            "hash": [],
        }
    check_ranges("monitor", monitor)
    check_sample_rate(monitor.sample_rate)
    return {
        **sampling_settings(monitor),
        "log_extra_fields": list(monitor.log_extra_fields),
        **check_logged_columns(monitor, {feature["name"]: feature["type"] for feature in features}),
    }


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
    handler: Path | None = None,
    monitor: Any = None,
    decision: dict[str, Any] | None = None,
    max_pixels: int | None = None,
) -> Path:
    """Build `<work_dir>/<name>.mar` and return its path; nothing of a failed build remains.
    Give each build its own `work_dir`: the archive is hashed and copied from there, where no
    parallel build can replace it. `handler` (another adapter) is for baselines; `monitor` (the
    `monitor` config) sets the inference log, None: no inference log; `decision`: the decision
    threshold to carry; `max_pixels`: an image's pixel budget (input_schema)."""
    for what, value in (("serve.model_name", name), ("serve.version", version)):
        if not NAME_PATTERN.match(value):
            raise ForgeError(
                f"{what}={value!r} is not a valid TorchServe name: use letters, digits, '_', '-', '.'"
            )
    models_dir, work_dir = Path(models_dir).resolve(), Path(work_dir).resolve()
    work_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".package.", dir=work_dir) as work:
        staging = Path(work)
        schema = input_schema(
            read_json(models_dir / contract.PREPROCESSOR_FILE), serve.max_instances, monitor, max_pixels
        )
        extra = stage_files(staging, models_dir, schema, serve, decision)
        copy_modules(staging, handler)
        command = [
            *archiver_command(),
            *("--model-name", name, "--version", version),
            *("--serialized-file", str(models_dir / contract.PROGRAM_FILE)),
            *("--handler", contract.HANDLER_FILE, "--config-file", contract.MODEL_CONFIG_FILE),
            *("--extra-files", ",".join(extra), "--export-path", "out", "--force"),
        ]
        (staging / "out").mkdir()
        # the archiver copies the files to $TMPDIR/<name>; a relative TMPDIR is not taken (tempfile
        # falls back to the shared system one), so each build gets an absolute one of its own
        (staging / "tmp").mkdir()
        env = {**os.environ, "TMPDIR": str(staging / "tmp")}
        result = subprocess.run(command, cwd=staging, env=env, capture_output=True, text=True)
        if result.returncode != 0:
            raise ForgeError(f"torch-model-archiver failed:\n{result.stderr.strip()}")
        os.replace(staging / "out" / f"{name}.mar", work_dir / f"{name}.mar")
    return work_dir / f"{name}.mar"


def stage_files(
    staging: Path, models_dir: Path, schema: dict[str, Any], serve: Any, decision: dict[str, Any] | None
) -> list[str]:
    """Write the archive's data files (all but the program) into `staging`; their names."""
    write_json(staging / contract.SCHEMA_FILE, schema)
    write_text(staging / contract.MODEL_CONFIG_FILE, yaml.safe_dump(model_config(serve)))
    shutil.copyfile(models_dir / contract.PREPROCESSOR_FILE, staging / contract.PREPROCESSOR_FILE)
    staged = [contract.SCHEMA_FILE, contract.PREPROCESSOR_FILE]
    if (models_dir / contract.DATA_CONTRACT_FILE).is_file():  # models trained before contracts: none
        shutil.copyfile(models_dir / contract.DATA_CONTRACT_FILE, staging / contract.DATA_CONTRACT_FILE)
        staged.append(contract.DATA_CONTRACT_FILE)
    if decision is not None:
        write_json(staging / contract.DECISION_FILE, decision)
        staged.append(contract.DECISION_FILE)
    return staged + [file for file in MODULES if file != contract.HANDLER_FILE]


def copy_modules(directory: Path, handler: Path | None = None) -> None:
    """Copy the archive's Python modules from forgeml into `directory`, under their names in
    the archive (the handler from `handler`, if given)."""
    for file, module in MODULES.items():
        source = handler if handler is not None and file == contract.HANDLER_FILE else None
        shutil.copyfile(source or importlib.util.find_spec(module).origin, Path(directory) / file)


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


def archived_data_contract(path: str | Path) -> dict[str, Any] | None:
    """The data contract an archive carries; None for an archive built before forgeml wrote one."""
    with zipfile.ZipFile(path) as archive:
        if contract.DATA_CONTRACT_FILE not in archive.namelist():
            return None
        return json.loads(archive.read(contract.DATA_CONTRACT_FILE))


def archive_manifest(path: str | Path) -> dict[str, Any]:
    """The MANIFEST.json TorchServe reads: model name, version, handler, files."""
    with zipfile.ZipFile(path) as archive:
        return json.loads(archive.read(ARCHIVE_MANIFEST))
