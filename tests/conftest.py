"""Shared fixtures: compose forgeml's shipped config (the package's conf/, never this
repository's conf/) with paths under a temporary directory, force CPU and small limits, then call
the same stage functions the CLI calls."""

from __future__ import annotations

import importlib.util
import io
import os
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig
from PIL import Image

from forgeml.config import BASE_CONFIG

PROJECT_ROOT = Path(__file__).resolve().parents[1]
# the repository's own project config: tests must not depend on it (a test checks)
PROJECT_CONF = PROJECT_ROOT / "conf"
PACKAGE_MODULE = "forgeml.conf"


def package_config_env(**extra: str) -> dict[str, str]:
    """The environment of a `forgeml` subprocess run in a directory without conf/: it composes
    forgeml's shipped config alone."""
    return {**{k: v for k, v in os.environ.items() if k != "FORGEML_CONFIG_DIR"}, **extra}


def config_sources() -> list[str]:
    """Where the fixtures' compositions look for config files (Hydra's search path)."""
    with initialize_config_module(PACKAGE_MODULE, version_base="1.3"):
        sources = GlobalHydra.instance().config_loader().get_sources()
        return [f"{source.scheme()}://{source.path}" for source in sources]


def compose_config(workdir: Path, *overrides: str) -> DictConfig:
    """The real config with every output under `workdir` (data, models, reports, logs, model store,
    server runtime, inference log), CPU only, no progress bar, no logger."""
    base = [
        f"paths.data_dir={workdir}/data",
        f"paths.models_dir={workdir}/models",
        f"paths.reports_dir={workdir}/reports",
        f"paths.log_dir={workdir}/logs",
        f"serve.model_store={workdir}/serve/model-store",
        f"serve.runtime_dir={workdir}/serve/runtime",
        f"monitor.log_dir={workdir}/serve/inference-log",
        "trainer.accelerator=cpu",
        "trainer.enable_progress_bar=false",
        "logger=none",
    ]
    with initialize_config_module(PACKAGE_MODULE, version_base="1.3"):
        return compose(BASE_CONFIG, overrides=[*base, *overrides])


# a two-feature preprocessing spec for unit tests that need no trained model
TOY_SPEC = {
    "format": "forgeml.preprocessor/1",
    "task": "classification",
    "target": "bought",
    "features": [
        {"name": "age", "type": "numeric", "fill": 30.0, "mean": 40.0, "std": 10.0, "min": 18.0, "max": 90.0},
        {"name": "city", "type": "categorical", "categories": ["berlin", "paris"]},
    ],
    "input_dim": 3,
    "labels": ["no", "yes"],
}


def random_images(count: int, shape: tuple[int, ...], seed: int = 0) -> list[bytes]:
    """`count` PNG files of random pixels, `shape` (height, width[, 3]) each."""
    rng = np.random.default_rng(seed)
    images = []
    for _ in range(count):
        out = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, shape).astype(np.uint8)).save(out, format="PNG")
        images.append(out.getvalue())
    return images


def load_example(name: str = "production_loop") -> ModuleType:
    """A script of examples/, imported by path (examples/ is not a package)."""
    spec = importlib.util.spec_from_file_location(name, PROJECT_ROOT / "examples" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def make_config(tmp_path: Path) -> Callable[..., DictConfig]:
    return lambda *overrides: compose_config(tmp_path, *overrides)


@pytest.fixture(scope="session")
def trained_project(tmp_path_factory: pytest.TempPathFactory) -> DictConfig:
    """breast_cancer prepared, trained (a few epochs) and evaluated once for the whole session."""
    from forgeml.stages import evaluate, prepare, train

    cfg = compose_config(tmp_path_factory.mktemp("trained"), "trainer.max_epochs=8")
    prepare.run(cfg)
    train.run(cfg)
    evaluate.run(cfg)
    return cfg
