"""Compose forgeml's shipped config (the package's conf/, never this repository's conf/) with every
output under a temporary directory, the way the fixtures and the in-process tests do."""

from __future__ import annotations

import os
from pathlib import Path

from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig

from forgeml.config import BASE_CONFIG

PROJECT_ROOT = Path(__file__).resolve().parents[2]
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
