"""Real DVC in a temporary project made by `forgeml init` (the example project: bundled data)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from dvc.repo import Repo

from forgeml.io import read_json
from forgeml.layout import SPLITS
from tests.helpers.cli import commit_all, run

FAST = ["trainer.max_epochs=3", "trainer.enable_progress_bar=false", "logger=none"]


def copy_project(destination: Path) -> Path:
    """A new project, as `forgeml init` writes it: git and DVC repositories, conf/, dvc.yaml."""
    run(["forgeml", "init", str(destination)], destination.parent)
    return destination


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    repo = copy_project(tmp_path_factory.mktemp("dvc") / "project")
    run(["forgeml", "compose", *FAST], repo)
    commit_all(repo)
    return repo


def params(repo: Path) -> dict:
    return yaml.safe_load((repo / "params.yaml").read_text())


def test_repro_runs_the_pipeline_and_a_second_repro_does_nothing(repo):
    run(["dvc", "repro"], repo)
    for output in (
        "data/processed/train.parquet",
        "data/processed/reference_profile.json",
        "models/model.pt2",
    ):
        assert (repo / output).is_file(), output
    metrics = read_json(repo / "reports" / "metrics.json")
    assert metrics["test/accuracy"] >= 0.9
    assert (repo / "dvc.lock").is_file()
    assert (repo / "serve" / "model-store" / "breast_cancer.mar").is_file()
    artifacts = Repo(str(repo)).artifacts.read()["dvc.yaml"]
    assert artifacts["forgeml-model"].type == "model"
    assert (repo / artifacts["forgeml-model"].path).is_file()
    again = run(["dvc", "repro"], repo)
    assert "Data and pipelines are up to date" in again.stdout
    assert "Running stage" not in again.stdout


def test_exp_run_composes_conf_and_changes_params_and_result(repo):
    run(["dvc", "repro"], repo)
    commit_all(repo)
    before = read_json(repo / "reports" / "metrics.json")
    overrides = ["data=wine", "model.hidden=[64,64]", *FAST]
    run(["dvc", "exp", "run", *[arg for o in overrides for arg in ("-S", o)]], repo)
    changed = params(repo)
    assert changed["data"]["name"] == "wine"
    assert changed["model"]["hidden"] == [64, 64]
    after = read_json(repo / "reports" / "metrics.json")
    assert after != before and after["test/accuracy"] >= 0.8
    assert read_json(repo / "models" / "model.json")["config"]["data"]["name"] == "wine"

    composed = copy_project(repo.parent / "composed")
    run(["forgeml", "compose", *overrides], composed)
    assert (composed / "params.yaml").read_text() == (repo / "params.yaml").read_text()


def test_exp_run_refuses_a_typo_through_the_schema(repo):
    result = run(["dvc", "exp", "run", "-S", "model.hiden=3"], repo, check=False)
    assert result.returncode != 0
    assert "Key 'hiden' not in 'MLPConfig'" in result.stdout + result.stderr


def test_exp_run_works_right_after_init_on_a_table_with_empty_targets(tmp_path):
    """init commits what it wrote and summarises the data; the summary's remedy for rows without a
    target (`data.on_missing_target=drop`) is one `-S` away."""
    rng = np.random.default_rng(0)
    table = pd.DataFrame({"age": rng.integers(18, 80, 90), "plan": rng.choice(["a", "b"], 90), "same": 1})
    table["vote"] = np.where(table["age"] > 45, "yes", "no").astype(object)
    table.loc[[4, 50], "vote"] = None
    table.to_csv(tmp_path / "votes.csv", index=False)
    init = run(["forgeml", "init", "votes", "--data", "votes.csv", "--target", "vote", "--json"], tmp_path)
    summary = json.loads(init.stdout)["init"]["summary"]
    assert (summary["rows"], summary["empty_targets"], summary["constant_columns"]) == (90, 2, ["same"])
    project = tmp_path / "votes"
    assert run(["git", "status", "--porcelain"], project).stdout == ""
    assert run(["dvc", "repro", "prepare"], project, check=False).returncode != 0
    overrides = ["data.on_missing_target=drop", "model.hidden=[32]", *FAST]
    run(["dvc", "exp", "run", *[arg for o in overrides for arg in ("-S", o)]], project)
    rows = sum(len(pd.read_parquet(project / "data" / "processed" / f"{s}.parquet")) for s in SPLITS)
    assert rows == 88
