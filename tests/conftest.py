"""Shared fixtures: the config composed with paths under a temporary directory (forgeml's shipped
config, never this repository's conf/), and one trained project for the whole test run. Helpers
that are not fixtures live in tests/helpers/.

The lanes: everything under tests/integration is marked `integration` (processes, servers,
browsers, real training); `make test-fast` runs tests/unit alone, `make test` runs both."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
from omegaconf import DictConfig

from tests.helpers.config import compose_config

INTEGRATION = Path(__file__).parent / "integration"
# the integration modules that take longest (the full suite's --durations), longest first
LONGEST_FIRST = (
    "test_production_loop",
    "test_wheel",
    "test_images_pipeline",
    "test_feature_types_pipeline",
    "test_training",
    "test_dvc",
    "test_serving_operations",
    "test_project",
    "test_readme_quickstart",
    "test_serving",
)
TRAINED_EPOCHS = "trainer.max_epochs=8"
# written once the shared project is trained and evaluated: the other workers read it from then on
TRAINED_MARK = "trained.done"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark the integration lane by directory, and run it first, its longest modules first: the
    workers of `--dist loadfile` take modules in this order, so none is left with a long module
    at the end while the other idles (the longest first is the classic schedule for that)."""
    for item in items:
        if INTEGRATION in item.path.parents:
            item.add_marker(pytest.mark.integration)
    items.sort(key=run_order)


def run_order(item: pytest.Item) -> tuple[bool, int]:
    """Integration before unit; within each, LONGEST_FIRST's modules first, in its order."""
    name = item.path.stem
    rank = LONGEST_FIRST.index(name) if name in LONGEST_FIRST else len(LONGEST_FIRST)
    return INTEGRATION not in item.path.parents, rank


@pytest.fixture
def make_config(tmp_path: Path) -> Callable[..., DictConfig]:
    return lambda *overrides: compose_config(tmp_path, *overrides)


def train_once(workdir: Path) -> DictConfig:
    """breast_cancer prepared, trained (a few epochs) and evaluated in `workdir`, unless it was."""
    from forgeml.stages import evaluate, prepare, train

    cfg = compose_config(workdir, TRAINED_EPOCHS)
    if not (workdir / TRAINED_MARK).is_file():
        prepare.run(cfg)
        train.run(cfg)
        evaluate.run(cfg)
        (workdir / TRAINED_MARK).touch()
    return cfg


@pytest.fixture(scope="session")
def trained_project(tmp_path_factory: pytest.TempPathFactory) -> DictConfig:
    """One trained breast_cancer project for the whole test run, which tests only read. Under
    pytest-xdist the first worker to need it trains it in the run's shared temporary directory
    while the others wait on a file lock, then read the same files."""
    if "PYTEST_XDIST_WORKER" not in os.environ:
        return train_once(tmp_path_factory.mktemp("trained"))
    from filelock import FileLock

    shared = tmp_path_factory.getbasetemp().parent / "trained"
    with FileLock(f"{shared}.lock"):
        shared.mkdir(exist_ok=True)
        return train_once(shared)
