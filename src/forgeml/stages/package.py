"""package: the model artifact in models/ -> serve/model-store/<serve.model_name>.mar.

The archive is self-contained (handler, exported program, preprocessing, input schema and
model-config.yaml with `serve.workers`, `serve.batch_size`, `serve.max_batch_delay`,
`serve.response_timeout`): a stock TorchServe with torch, numpy and PyYAML serves it.
Its version is `serve.version`, or else the model's config hash.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from forgeml.errors import ForgeError
from forgeml.io import read_json
from forgeml.serving.archive import build_archive


def run(cfg: DictConfig) -> dict[str, Any]:
    manifest_path = Path(cfg.paths.models_dir) / "model.json"
    if not manifest_path.is_file():
        raise ForgeError(f"no trained model in {cfg.paths.models_dir}/ (run `forgeml train` first)")
    manifest = read_json(manifest_path)
    version = cfg.serve.version or manifest["config_hash"]
    archive = build_archive(
        cfg.paths.models_dir, cfg.serve.model_store, cfg.serve.model_name, version, cfg.serve
    )
    return {
        "archive": str(archive),
        "model": cfg.serve.model_name,
        "version": version,
        "sha256": hashlib.sha256(archive.read_bytes()).hexdigest(),
    }
