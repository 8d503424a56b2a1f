"""Shared fixtures: the config composed with paths under a temporary directory (forgeml's shipped
config, never this repository's conf/), and one trained project for the whole test run. Helpers
that are not fixtures live in tests/helpers/."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from omegaconf import DictConfig

from tests.helpers.config import compose_config


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
