"""package: the model artifact in models/ -> serve/model-store/<serve.model_name>.mar.

The archive is self-contained (handler, exported program, preprocessing, input schema and
model-config.yaml with `serve.workers`, `serve.batch_size`, `serve.max_batch_delay`,
`serve.torch_threads`, `serve.response_timeout`): a stock TorchServe with torch, numpy and
PyYAML serves it.
Its version is `serve.version`, or else the model's hash (weights + preprocessing), so a model
retrained on new data is a new version and an identical one is not. A decision threshold that
`evaluate` picked for this model (reports/decision_threshold.json) goes into the archive, and
into the version: the same weights with another threshold answer differently.

Every package is recorded in the model registry beside the archives (version, config hash, data
hash, test metrics from reports/metrics.json, archive sha256), with a copy of the archive. The
archive is built in a private directory, hashed and copied from there, recorded, and only then
renamed into place: a parallel `forgeml package` cannot swap it in between, and a registry that
cannot be read stops the stage before anything is written.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from forgeml.errors import ForgeError
from forgeml.io import atomic_path, read_json
from forgeml.layout import EVALUATION, MANIFEST, METRICS, archive_file
from forgeml.models.rare_classes import read_decision
from forgeml.serving.archive import build_archive
from forgeml.serving.registry import Registry, data_hash, sha256_of

log = logging.getLogger(__name__)


def run(cfg: DictConfig) -> dict[str, Any]:
    manifest_path = Path(cfg.paths.models_dir) / MANIFEST
    if not manifest_path.is_file():
        raise ForgeError(f"no trained model in {cfg.paths.models_dir}/ (run `forgeml train` first)")
    manifest = read_json(manifest_path)
    name = cfg.serve.model_name
    decision = read_decision(cfg.paths.reports_dir, manifest.get("model_hash"))
    version = cfg.serve.version or archive_version(manifest, decision)
    store = Path(cfg.serve.model_store)
    archive = archive_file(store, name)
    registry = Registry(store)
    registry.load()  # a damaged registry stops here, before the archive is touched
    store.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".build.", dir=store) as work:
        built = build_archive(
            cfg.paths.models_dir,
            work,
            name,
            version,
            cfg.serve,
            monitor=cfg.monitor,
            decision=decision,
            max_pixels=image_max_pixels(manifest),
        )
        with atomic_path(registry.archive_copy(name, version)) as tmp:
            shutil.copyfile(built, tmp)
        entry = registry.record(
            name,
            {
                "version": version,
                "config_hash": manifest["config_hash"],
                # which calibration (reports/calibration.json) is this version's: replay's CBPE
                "model_hash": manifest.get("model_hash"),
                "data_hash": data_hash(cfg.paths.processed_dir),
                "metrics": test_metrics(Path(cfg.paths.reports_dir), manifest["config_hash"]),
                "archive": str(archive),
                "sha256": sha256_of(built),
            },
        )
        os.replace(built, archive)
    return {"archive": str(archive), "model": name, **entry}


def image_max_pixels(manifest: dict[str, Any]) -> int | None:
    """`data.image.max_pixels` of the config the model was trained with, not today's conf/."""
    data = (manifest.get("config") or {}).get("data") or {}
    return (data.get("image") or {}).get("max_pixels")


def archive_version(manifest: dict[str, Any], decision: dict[str, Any] | None) -> str:
    """The model's hash, or with a decision threshold a hash of both."""
    model = manifest.get("model_hash") or manifest["config_hash"]
    if decision is None:
        return model
    chosen = json.dumps([model, decision["positive_index"], decision["threshold"]])
    return hashlib.sha256(chosen.encode()).hexdigest()[:16]


def test_metrics(reports: Path, config_hash: str) -> dict[str, float]:
    """The model's test metrics, if `evaluate` measured this very model (else none: the gate
    then refuses it until it is evaluated)."""
    evaluation = reports / EVALUATION
    if not evaluation.is_file() or read_json(evaluation).get("config_hash") != config_hash:
        log.warning("no evaluation of this model in %s: run `forgeml evaluate` first", reports)
        return {}
    return read_json(reports / METRICS)
