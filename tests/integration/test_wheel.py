"""forgeml as a user gets it: a wheel built from the checkout, installed in a fresh venv, used in a
project outside this repository. The project's generated CI workflow runs step by step there.

The fresh venv sees the test environment's packages (torch, DVC, ...) through a path file placed
after its own site-packages, so nothing is downloaded; forgeml itself comes only from the wheel."""

from __future__ import annotations

import json
import os
import shutil
import site
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from sklearn.datasets import load_breast_cancer

from forgeml import __version__
from tests.helpers.config import PROJECT_ROOT

pytestmark = pytest.mark.slow

FAST = ["trainer.max_epochs=3", "trainer.enable_progress_bar=false", "logger=none", "monitor.wandb=false"]
GIT_IDENTITY = {
    "GIT_AUTHOR_NAME": "forgeml-test", "GIT_AUTHOR_EMAIL": "test@example.invalid",
    "GIT_COMMITTER_NAME": "forgeml-test", "GIT_COMMITTER_EMAIL": "test@example.invalid",
}  # fmt: skip


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    command = [
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "--no-deps",
        "--no-build-isolation",
        "-q",
        "-w",
        str(out),
        ".",
    ]
    subprocess.run(command, cwd=PROJECT_ROOT, check=True, capture_output=True, timeout=300)
    [built] = out.glob("forgeml-*.whl")
    return built


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv without forgeml, over the test environment's other packages."""
    root = tmp_path_factory.mktemp("venv") / "env"
    subprocess.run([sys.executable, "-m", "venv", str(root)], check=True, timeout=300)
    [own] = (root / "lib").glob("python*/site-packages")
    # a plain path entry: the test environment's packages, but not its editable forgeml (a .pth there)
    (own / "zz_test_environment.pth").write_text(site.getsitepackages()[0] + "\n")
    dvc = root / "bin" / "dvc"
    dvc.write_text(f"#!{root}/bin/python\nimport sys\nfrom dvc.cli import main\nsys.exit(main())\n")
    dvc.chmod(0o755)
    return root


def environment(venv: Path, wheel: Path) -> dict[str, str]:
    test_bin = os.path.dirname(sys.executable)
    path = [entry for entry in os.environ["PATH"].split(os.pathsep) if entry != test_bin]
    env = {
        key: value for key, value in os.environ.items() if key not in ("FORGEML_CONFIG_DIR", "VIRTUAL_ENV")
    }
    return {
        **env,
        **GIT_IDENTITY,
        "PATH": os.pathsep.join([str(venv / "bin"), *path]),
        "DVC_NO_ANALYTICS": "1",
        # the workflow's install step installs this checkout's wheel (torch is there already)
        "FORGEML_SPEC": f"forgeml[serve] @ {wheel.as_uri()}",
        "TORCH_SPEC": "torch",
        "TORCH_INDEX": "https://pypi.org/simple",
    }


def sh(script: str, cwd: Path, env: dict[str, str], check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(
        ["bash", "-eo", "pipefail", "-c", script],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"{script} exited {result.returncode}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        )
    return result


@pytest.fixture(scope="module")
def project(venv: Path, wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """The wheel installed (the workflow's own install step), then `forgeml init` with a CSV."""
    env = environment(venv, wheel)
    workflow = yaml.safe_load(
        (PROJECT_ROOT / "src/forgeml/templates/project/workflow/forgeml.yml").read_text()
    )
    [install] = [
        step["run"] for step in workflow["jobs"]["pipeline"]["steps"] if step.get("name") == "Install forgeml"
    ]
    root = tmp_path_factory.mktemp("user")
    sh(install, root, env)
    frame = load_breast_cancer(as_frame=True).frame.rename(columns={"target": "churned"})
    frame.to_csv(root / "churn.csv", index=False)
    sh("forgeml init churn --data churn.csv --target churned", root, env)
    project = root / "churn"
    sh(f"forgeml compose {' '.join(FAST)} && git add -A && git commit -qm 'forgeml init'", project, env)
    return project, env


def test_wheel_ships_the_config_groups_plugins_and_templates(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for group in ("data", "model", "trainer", "logger", "callbacks", "serve", "monitor", "gate"):
        assert any(name.startswith(f"forgeml/conf/{group}/") for name in names), group
    assert {
        "forgeml/conf/forgeml_base.yaml",
        "forgeml/conf/hydra/default.yaml",
        "forgeml/conf/hparams_search/optuna.yaml",
        "forgeml/conf/experiment/wine.yaml",
        "forgeml/templates/serve/Dockerfile",
        "forgeml/templates/project/dvc.yaml.in",
        "forgeml/templates/project/workflow/forgeml.yml",
        "hydra_plugins/forgeml_searchpath/__init__.py",
        "hydra_plugins/forgeml_schemas/__init__.py",
    } <= names


def test_forgeml_runs_from_the_wheel_not_the_checkout(project):
    path, env = project
    code = "import forgeml, hydra_plugins.forgeml_searchpath as p; print(forgeml.__file__); print(p.__file__)"
    files = sh(f"python -c '{code}'", path, env).stdout.split()
    assert all(str(PROJECT_ROOT) not in file and "site-packages" in file for file in files), files
    assert sh("forgeml --version", path, env).stdout.strip() == f"forgeml {__version__}"


def test_generated_workflow_steps_run_green(project, tmp_path):
    """Every `run:` step of every job, in order; `uses:` steps replaced by what they do here."""
    path, env = project
    workflow = yaml.safe_load((path / ".github/workflows/forgeml.yml").read_text())
    env = {**env, **{key: value for key, value in workflow["env"].items() if key not in env}}
    outputs = {}
    for name, job in workflow["jobs"].items():
        for step in job["steps"]:
            if "run" in step:
                outputs[step.get("name")] = sh(step["run"], path, env).stdout
            elif step["uses"].startswith("actions/upload-artifact"):
                matches = sorted(path.glob(step["with"]["path"]))
                assert matches, f"{name}: nothing matches {step['with']['path']}"
                for match in matches:
                    shutil.copy(match, tmp_path / match.name)
    assert json.loads((path / "reports/metrics.json").read_text())["test/accuracy"] > 0.85
    assert (tmp_path / "churn.mar").is_file()
    assert "passed" in outputs["Promotion gate (fails the job when the model is refused)"]
    assert "no retraining" in outputs["Drift check; retrain when the traffic drifted"]


def test_workflow_gate_step_fails_the_job_on_a_refused_model(project):
    path, env = project
    workflow = yaml.safe_load((path / ".github/workflows/forgeml.yml").read_text())
    [gate] = [step["run"] for step in workflow["jobs"]["pipeline"]["steps"] if "gate" in step.get("name", "")]
    config = path / "conf/config.yaml"
    original = config.read_text()
    config.write_text(original + "gate:\n  thresholds:\n    test/accuracy: 1.01\n")
    try:
        result = sh(gate, path, env, check=False)
    finally:
        config.write_text(original)
    assert result.returncode == 1
    assert "refused" in result.stdout and "test/accuracy" in result.stdout


def test_scheduled_job_retrains_when_the_traffic_drifted(project):
    path, env = project
    workflow = yaml.safe_load((path / ".github/workflows/forgeml.yml").read_text())
    [check] = [
        step["run"] for step in workflow["jobs"]["monitor"]["steps"] if "Drift" in step.get("name", "")
    ]
    write_shifted_traffic(path)
    try:
        result = sh(check, path, env)
    finally:
        shutil.rmtree(path / "serve/inference-log")
        (path / "serve/inference-log").mkdir()
        (path / "serve/inference-log/.gitkeep").touch()
    assert "drift: retraining" in result.stdout


def test_dvc_exp_run_and_ddp_compose_from_the_package(project):
    path, env = project
    sh("dvc exp run -S 'model.hidden=[32]'", path, env)
    assert yaml.safe_load((path / "params.yaml").read_text())["model"]["hidden"] == [32]
    assert json.loads((path / "models/model.json").read_text())["config"]["model"]["hidden"] == [32]
    job = yaml.safe_load(sh("forgeml train trainer=ddp --cfg job", path, env).stdout)
    assert (job["trainer"]["strategy"], job["trainer"]["devices"]) == ("ddp", 2)


def write_shifted_traffic(project: Path, rows: int = 200) -> None:
    """An inference log whose inputs moved far from the training data."""
    frame = pd.read_csv(project / "data/raw/churn.csv").drop(columns=["churned"]).head(rows)
    frame = frame * 3.0 + frame.std()
    log = project / "serve/inference-log"
    records = [
        {"ts": "2026-01-01T00:00:00.000Z", "model": "churn", "version": "1", "input": record, "prediction": 1}
        for record in json.loads(frame.to_json(orient="records"))
    ]
    (log / "worker-1.jsonl").write_text("".join(json.dumps(record) + "\n" for record in records))
    assert np.isfinite(frame.to_numpy()).all()
