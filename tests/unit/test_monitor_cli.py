"""`forgeml monitor`'s command path: Hydra composes its config once (not first to learn the run
mode), and -m still runs one job per value."""

from __future__ import annotations

from hydra._internal.hydra import Hydra

from forgeml import cli
from forgeml.stages import monitor


def test_monitor_composes_its_config_once_and_still_sweeps_with_m(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # outside the repository: forgeml's shipped config
    composed, runs = [], []
    compose, get_mode = Hydra.compose_config, Hydra.get_mode

    def counted(self, *args, **kwargs):
        composed.append(kwargs.get("run_mode"))
        return compose(self, *args, **kwargs)

    monkeypatch.setattr(Hydra, "compose_config", counted)
    monkeypatch.setattr(monitor, "run", lambda cfg: runs.append(cfg.monitor.p_value) or {"exit_code": 3})
    assert cli.main(["monitor", "monitor.p_value=0.01"]) == 3
    assert len(composed) == 1 and runs == [0.01]
    runs.clear()
    assert cli.main(["monitor", "-m", "monitor.p_value=0.01,0.02"]) == 3
    assert runs == [0.01, 0.02]
    assert Hydra.get_mode is get_mode  # other stages (and later calls) take Hydra's own path
