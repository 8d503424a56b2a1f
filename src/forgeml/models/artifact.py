"""The model artifact in models/: an exported program plus everything needed to use it.

    models/model.pt2          torch.export program, dynamic batch dimension
    models/model.json         resolved config, its hash, task, labels, validation metrics
    models/preprocessor.json  the fitted preprocessing the model was trained with
    models/data_contract.json the contract of the data it was trained on (data/contract.py)

Evaluation, batch prediction and packaging rebuild from these files, never from today's conf/.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import shutil
import sys
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from forgeml.data.preprocessing import feature_columns
from forgeml.data.transform import encode_features
from forgeml.errors import ForgeError
from forgeml.io import atomic_path, quiet_logger, read_json, write_json
from forgeml.layout import DATA_CONTRACT, MANIFEST, PREPROCESSOR, PROGRAM

# where torch.export warns when it cannot trace a net
SHAPES_LOGGER = "torch.fx.experimental.symbolic_shapes"


def config_hash(config: dict[str, Any]) -> str:
    """Stable short hash of a resolved config: same config, same hash, on any machine."""
    canonical = json.dumps(config, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def model_hash(model: torch.nn.Module, spec: dict[str, Any]) -> str:
    """Hash of what the model computes: its weights and its preprocessing.

    The exported file's bytes differ from save to save, so they cannot name a version; the
    weights can: the same data, config and seed give the same hash, new data a new one.
    """
    digest = hashlib.sha256(json.dumps(spec, sort_keys=True).encode())
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def check_exportable(net: torch.nn.Module, input_dim: int) -> None:
    """Refuse, before any training, a net that torch.export cannot trace (data-dependent control
    flow, unsupported operations): the model artifact and the archive are its exported program.
    A one-row batch is exported first, which takes seconds, not an epoch."""
    was_training = net.training
    # a net torch cannot trace makes it warn and print the traced graph before it raises: the
    # refusal below says what failed, so that is held back, and passed on only when tracing works
    printed = io.StringIO()
    try:
        with quiet_logger(SHAPES_LOGGER, logging.ERROR), contextlib.redirect_stderr(printed):
            torch.export.export(net.eval(), (torch.zeros(1, input_dim),))
        sys.stderr.write(printed.getvalue())
    except Exception as error:
        reason = next(
            (line.strip() for line in str(error).splitlines() if line.strip()), type(error).__name__
        )
        name = f"{type(net).__module__}.{type(net).__qualname__}"
        raise ForgeError(
            f"model {name} cannot be exported with torch.export, so it could not be served: "
            f"{type(error).__name__}: {reason}"
        ) from error
    finally:
        net.train(was_training)


def export_model(
    model: torch.nn.Module,
    spec: dict[str, Any],
    config: dict[str, Any],
    models_dir: str | Path,
    metrics: dict[str, float],
) -> dict[str, Any]:
    """Write the three artifact files atomically; returns the manifest."""
    models_dir = Path(models_dir)
    example = torch.zeros(4, spec["input_dim"])
    batch = torch.export.Dim("batch", min=1, max=1 << 20)
    program = torch.export.export(model.eval(), (example,), dynamic_shapes={"x": {0: batch}})
    with atomic_path(models_dir / PROGRAM) as tmp:
        torch.export.save(program, tmp)
    processed = Path(config["paths"]["processed_dir"])
    copy_atomically(processed / PREPROCESSOR, models_dir / PREPROCESSOR)
    if (processed / DATA_CONTRACT).is_file():
        copy_atomically(processed / DATA_CONTRACT, models_dir / DATA_CONTRACT)
    else:  # data prepared before forgeml wrote contracts: no other model's contract may stay
        (models_dir / DATA_CONTRACT).unlink(missing_ok=True)
    manifest = {
        "format": "forgeml.model/1",
        "config_hash": config_hash(config),
        "model_hash": model_hash(model, spec),
        "task": spec["task"],
        "labels": spec.get("labels"),
        "input_dim": spec["input_dim"],
        "metrics": metrics,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "torch_version": torch.__version__,
        "config": config,
    }
    write_json(models_dir / MANIFEST, manifest)
    return manifest


def copy_atomically(source: Path, target: Path) -> None:
    with atomic_path(target) as tmp:
        shutil.copyfile(source, tmp)


@dataclass
class ModelArtifact:
    manifest: dict[str, Any]
    spec: dict[str, Any]
    program: torch.nn.Module

    @classmethod
    def load(cls, models_dir: str | Path) -> ModelArtifact:
        models_dir = Path(models_dir)
        if not (models_dir / MANIFEST).is_file():
            raise ForgeError(f"no trained model in {models_dir}/ (run `forgeml train` first)")
        program = torch.export.load(models_dir / PROGRAM).module()
        return cls(read_json(models_dir / MANIFEST), read_json(models_dir / PREPROCESSOR), program)

    @property
    def config(self) -> dict[str, Any]:
        return self.manifest["config"]

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        """Class probabilities (rows x classes) or values (rows) for raw feature rows."""
        inputs = torch.from_numpy(encode_features(self.spec, feature_columns(frame, self.spec)))
        with torch.inference_mode():
            return self.program(inputs).numpy()
