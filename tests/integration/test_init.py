"""`forgeml init`: what a new project holds, that this repository is such a project, and that a
refused init writes nothing."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from tests.helpers.config import PROJECT_ROOT

# the files this repository holds as the example project, exactly as `forgeml init` writes them
EXAMPLE_FILES = [
    "conf/config.yaml", "dvc.yaml", ".gitignore", ".dvcignore", ".dvc/config", "serve/Dockerfile",
    "serve/k8s/config.properties", "serve/k8s/metrics.yaml", "serve/k8s/inferenceservice.yaml",
    "serve/k8s/hpa.yaml", "serve/k8s/rollout/step-2-5.yaml", "serve/k8s/rollout/step-3-25.yaml",
    "serve/k8s/rollout/step-4-50.yaml", "serve/k8s/rollout/step-5-100.yaml",
]  # fmt: skip


def init(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {key: value for key, value in os.environ.items() if key != "FORGEML_CONFIG_DIR"}
    command = [sys.executable, "-m", "forgeml.cli", "init", *args]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def listing(root: Path) -> list[str]:
    return sorted(str(path.relative_to(root)) for path in root.rglob("*"))


@pytest.fixture
def table(tmp_path: Path) -> Path:
    path = tmp_path / "churn.csv"
    pd.DataFrame(
        {"tenure": [1, 5, 9, 3], "plan": ["a", "b", "a", "b"], "churned": ["y", "n", "n", "y"]}
    ).to_csv(path, index=False)
    return path


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("not_empty", "is not empty"),
        ("missing_file", "data file not found: nope.csv"),
        ("unknown_target", "--target churn is not a column of churn.csv; its columns: tenure, plan, churned"),
    ],
)
def test_refused_init_exits_2_and_leaves_nothing_behind(tmp_path, table, case, message):
    (tmp_path / "occupied").mkdir()
    (tmp_path / "occupied" / "notes.txt").write_text("mine")
    arguments = {
        "not_empty": ["occupied", "--data", "churn.csv", "--target", "churned"],
        "missing_file": ["fresh", "--data", "nope.csv", "--target", "churned"],
        "unknown_target": ["fresh", "--data", "churn.csv", "--target", "churn"],
    }[case]
    before = listing(tmp_path)
    result = init(*arguments, cwd=tmp_path)
    assert result.returncode == 2
    assert message in result.stderr
    assert listing(tmp_path) == before
    assert (tmp_path / "occupied" / "notes.txt").read_text() == "mine"


def test_this_repository_is_the_project_init_writes(tmp_path):
    result = init("example", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    project = tmp_path / "example"
    for name in EXAMPLE_FILES:
        assert (project / name).read_text() == (PROJECT_ROOT / name).read_text(), name
    assert yaml.safe_load((project / "params.yaml").read_text()) == yaml.safe_load(
        (PROJECT_ROOT / "params.yaml").read_text()
    )
    assert (project / ".git").is_dir()


def test_init_with_data_writes_a_project_of_its_own(tmp_path, table):
    result = init("churn", "--data", "churn.csv", "--target", "churned", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    project = tmp_path / "churn"
    assert "dvc repro" in result.stdout
    assert (project / "data/raw/churn.csv").read_bytes() == table.read_bytes()
    params = yaml.safe_load((project / "params.yaml").read_text())
    assert params["data"]["name"] == params["serve"]["model_name"] == "churn"
    assert params["data"]["path"] == "data/raw/churn.csv"
    assert params["data"]["target"] == "churned"
    assert "override data: churn" in (project / "conf/config.yaml").read_text()
    # the pipeline depends on the project's files only, never on forgeml's source
    stages = yaml.safe_load((project / "dvc.yaml").read_text())["stages"]
    deps = {dep for stage in stages.values() for dep in stage["deps"]}
    evaluated = {
        "reports/metrics.json",
        "reports/reference_predictions.parquet",
        "reports/calibration.json",
        "reports/decision_threshold.json",
    }
    assert deps == {"data/raw", "src", "data/processed", "models", "serve/inference-log", *evaluated}
    assert all("forgeml_version" in stage["params"] for stage in stages.values())
    dockerfile = (project / "serve/Dockerfile").read_text()
    assert "ARG MODEL_NAME=churn\n" in dockerfile and "breast" not in dockerfile
    hpa = yaml.safe_load((project / "serve/k8s/hpa.yaml").read_text())
    assert hpa["spec"]["scaleTargetRef"]["name"] == "churn-predictor"
    workflow = yaml.safe_load((project / ".github/workflows/forgeml.yml").read_text())
    assert set(workflow["jobs"]) == {"pipeline", "monitor"}


def test_the_repository_has_one_pipeline_file_and_no_template_is_taken_for_one():
    """DVC collects every dvc.yaml in a repository: a template of that name made `dvc repro`
    here fail to parse it (its params live in the project it is written to)."""
    tracked = subprocess.run(
        ["git", "ls-files", "--", "*dvc.yaml"], cwd=PROJECT_ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    assert tracked == ["dvc.yaml"]
