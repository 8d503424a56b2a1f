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
import pandas as pd
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


def chile_like_table(rng: np.random.Generator, rows: int, wide: bool = False) -> pd.DataFrame:
    """Rows like carData::Chile's 7 features (a region, a town size of 7 values, sex, age,
    education, a log-normal income, a status-quo score); `wide` adds a 60-valued categorical (Zipf shares),
    a heavy-tailed amount and a 0/1 flag."""
    table = pd.DataFrame(
        {
            "region": rng.choice(["C", "M", "N", "S", "SA"], rows, p=[0.22, 0.04, 0.19, 0.27, 0.28]),
            "population": rng.choice(
                [3750.0, 15000.0, 25000.0, 50000.0, 125000.0, 175000.0, 250000.0],
                rows,
                p=[0.05, 0.15, 0.1, 0.1, 0.1, 0.2, 0.3],
            ),
            "sex": rng.choice(["F", "M"], rows),
            "age": np.clip(rng.normal(38.0, 14.7, rows).round(), 18.0, 95.0),
            "education": rng.choice(["P", "PS", "S"], rows, p=[0.28, 0.17, 0.55]),
            "income": rng.lognormal(np.log(25000.0), 0.9, rows).round(-2),
            "statusquo": rng.normal(0.0, 1.0, rows),
        }
    )
    if wide:
        zipf = 1.0 / np.arange(1, 61)
        table["city"] = rng.choice([f"city{i}" for i in range(60)], rows, p=zipf / zipf.sum())
        table["amount"] = rng.lognormal(0.0, 1.5, rows)
        table["flag"] = (rng.random(rows) < 0.1).astype(float)
    return table
