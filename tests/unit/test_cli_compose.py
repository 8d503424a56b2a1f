"""`forgeml monitor key=value` composes its config once, through Hydra's Compose API, and writes
no run directory; with Hydra's own flags (`--cfg job`, `-m`) it is Hydra's app as before."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hydra.core.config_store import ConfigStore

from forgeml import cli


@pytest.fixture
def stage_runs(monkeypatch, tmp_path: Path) -> list[tuple[str, Any]]:
    """The (stage, config) of every stage `cli.main` runs, instead of running it; in an empty
    directory, so forgeml's shipped config composes alone."""
    runs: list[tuple[str, Any]] = []
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("FORGEML_CONFIG_DIR", raising=False)
    monkeypatch.setattr(
        cli, "run_stage", lambda stage, cfg, as_json=False, given=frozenset(): runs.append((stage, cfg)) or {}
    )
    return runs


@pytest.fixture
def compositions(monkeypatch) -> list[str]:
    """The root schema's loads from Hydra's ConfigStore: one per composition of the config."""
    loads: list[str] = []
    load = ConfigStore.load

    def counted(store: ConfigStore, config_path: str) -> Any:
        loads.append(config_path)
        return load(store, config_path)

    monkeypatch.setattr(ConfigStore, "load", counted)
    return loads


def schema_loads(loads: list[str]) -> int:
    return sum(path.startswith("forgeml_schema") for path in loads)


def test_monitor_composes_its_config_once_and_writes_no_run_directory(stage_runs, compositions, tmp_path):
    assert cli.main(["monitor", "monitor.windows=3", f"paths.log_dir={tmp_path / 'logs'}"]) == 0
    [(stage, cfg)] = stage_runs
    assert stage == "monitor" and cfg.monitor.windows == 3
    assert schema_loads(compositions) == 1
    assert not (tmp_path / "logs").exists()


def test_monitor_on_a_project_conf_directory_composes_it(stage_runs, tmp_path):
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "config.yaml").write_text("defaults:\n  - /forgeml_base@_here_\n  - _self_\nseed: 7\n")
    assert cli.main(["monitor"]) == 0
    [(_, cfg)] = stage_runs
    assert cfg.seed == 7


def test_monitor_with_a_typo_is_a_config_error_naming_the_key(stage_runs, capsys):
    assert cli.main(["monitor", "monitor.windowz=3"]) == 2
    assert "monitor.windowz" in capsys.readouterr().err and not stage_runs


def test_monitor_with_cfg_job_prints_the_config_through_hydra(stage_runs, capsys):
    assert cli.main(["monitor", "--cfg", "job", "monitor.windows=5"]) == 0
    assert "windows: 5" in capsys.readouterr().out and not stage_runs


def test_monitor_sweep_runs_each_job_through_hydra(stage_runs, tmp_path):
    assert cli.main(["monitor", "-m", "monitor.windows=1,2", f"paths.log_dir={tmp_path / 'logs'}"]) == 0
    assert [cfg.monitor.windows for _, cfg in stage_runs] == [1, 2]
    assert (tmp_path / "logs" / "multiruns").is_dir()
