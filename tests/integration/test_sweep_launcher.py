"""`forgeml train -m hydra/launcher=local`: a sweep's jobs run through submitit (its local
executor, the same code path as `hydra/launcher=slurm` short of the queue), each its own process
with its own model."""

from __future__ import annotations

import os
import subprocess
import sys

from forgeml.stages import prepare
from tests.helpers.config import compose_config, package_config_env


def test_submitit_local_launcher_runs_each_sweep_job_as_its_own_process(tmp_path):
    prepare.run(compose_config(tmp_path))
    command = [
        os.path.join(os.path.dirname(sys.executable), "forgeml"),
        "train",
        "-m",
        "hydra/launcher=local",
        "model.hidden=8,16",
        "trainer.max_epochs=1",
        "trainer.accelerator=cpu",
        "trainer.enable_progress_bar=false",
        "logger=none",
    ]
    env = package_config_env()
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    assert "Submitit 'local' sweep output dir" in result.stdout + result.stderr
    (sweep,) = (tmp_path / "logs" / "multiruns").iterdir()
    jobs = sorted(path for path in sweep.iterdir() if path.name.isdigit())
    assert [job.name for job in jobs] == ["0", "1"]
    for job, hidden in zip(jobs, (8, 16), strict=True):
        assert (job / "models" / "model.pt2").is_file()
        assert (job / ".hydra" / "overrides.yaml").read_text().count(f"model.hidden={hidden}") == 1
    # submitit's own record of two jobs, each with its log and its pickled result
    results = list((sweep / ".submitit").glob("*/*_result.pkl"))
    assert len(results) == 2
    assert not (tmp_path / "models").exists()
