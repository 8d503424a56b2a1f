"""Shared fixtures: compose the real conf/ with paths under a temporary directory, force CPU and
small limits, then call the same stage functions the CLI calls."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

PROJECT_ROOT = Path(__file__).resolve().parents[1]
CONF_DIR = PROJECT_ROOT / "conf"


def compose_config(workdir: Path, *overrides: str) -> DictConfig:
    """The real config with every output under `workdir`, CPU only, no progress bar, no logger."""
    base = [
        f"paths.data_dir={workdir}/data",
        f"paths.models_dir={workdir}/models",
        f"paths.reports_dir={workdir}/reports",
        f"paths.log_dir={workdir}/logs",
        "trainer.accelerator=cpu",
        "trainer.enable_progress_bar=false",
        "logger=none",
    ]
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        return compose("config", overrides=[*base, *overrides])


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
