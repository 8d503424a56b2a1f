"""The config's refusals and choices as the `forgeml` command reports them: exit codes and one-line
messages naming the key, in a directory with or without a project conf/."""

from __future__ import annotations

import os
import subprocess
import sys

import pandas as pd
import yaml

from forgeml import __version__
from tests.helpers.config import PROJECT_ROOT


def forgeml(*args: str, cwd=PROJECT_ROOT) -> subprocess.CompletedProcess:
    """The CLI in `cwd`; outside the repository (tmp_path) it composes forgeml's shipped config."""
    env = {key: value for key, value in os.environ.items() if key != "FORGEML_CONFIG_DIR"}
    command = [sys.executable, "-m", "forgeml.cli", *args]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def test_typo_in_override_names_valid_keys(tmp_path):
    result = forgeml("train", "model.hiden=3", cwd=tmp_path)
    assert result.returncode == 2
    assert "unknown key 'model.hiden'" in result.stderr
    assert "valid keys of model: activation, depth, dropout, hidden" in result.stderr
    assert not (tmp_path / "models").exists()


def test_wrong_type_names_the_key(tmp_path):
    result = forgeml("train", "trainer.max_epochs=abc", cwd=tmp_path)
    assert result.returncode == 2
    assert "trainer.max_epochs" in result.stderr
    assert "could not be converted to Integer" in result.stderr


def test_unknown_group_option_lists_the_choices(tmp_path):
    result = forgeml("train", "data=breast_cancr", cwd=tmp_path)
    assert result.returncode == 2
    assert "Could not find 'data/breast_cancr'" in result.stderr
    for choice in ("breast_cancer", "wine", "diabetes", "digits", "csv"):
        assert choice in result.stderr


def test_committed_params_yaml_is_the_default_composition(tmp_path):
    """params.yaml (what `dvc repro` runs) must not drift from conf/: regenerate with `forgeml compose`."""
    result = forgeml("compose", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "params.yaml").read_text() == (PROJECT_ROOT / "params.yaml").read_text()


def test_a_stage_error_is_one_readable_line(tmp_path):
    result = forgeml("evaluate", f"paths.models_dir={tmp_path}/none", cwd=tmp_path)
    assert result.returncode == 2
    assert (
        result.stderr.strip()
        == f"forgeml evaluate: error: no trained model in {tmp_path}/none/ (run `forgeml train` first)"
    )


def test_without_a_project_config_the_package_config_trains_a_csv(tmp_path):
    (tmp_path / "conf").mkdir()  # a project conf/ without config.yaml: forgeml's defaults alone
    rows = 60
    pd.DataFrame({"x": range(rows), "z": [i % 7 for i in range(rows)], "y": ["a", "b"] * (rows // 2)}).to_csv(
        tmp_path / "x.csv", index=False
    )
    common = ["data=csv", "data.path=x.csv", "data.target=y", "logger=none", "trainer.max_epochs=1"]
    for stage in ("prepare", "train"):
        result = forgeml(stage, *common, "trainer.enable_progress_bar=false", cwd=tmp_path)
        assert result.returncode == 0, result.stderr
    assert (tmp_path / "models" / "model.pt2").is_file()


def test_a_project_option_wins_over_the_package_option_of_the_same_name(tmp_path):
    (tmp_path / "conf" / "model").mkdir(parents=True)
    (tmp_path / "conf" / "config.yaml").write_text("defaults:\n  - /forgeml_base@_here_\n  - _self_\n")
    (tmp_path / "conf" / "model" / "mlp.yaml").write_text(
        "defaults:\n  - /schema/model/mlp@_here_\n  - _self_\nhidden: [7]\n"
    )
    assert forgeml("compose", "--json", cwd=tmp_path).returncode == 0
    params = yaml.safe_load((tmp_path / "params.yaml").read_text())
    assert params["model"]["hidden"] == [7]
    assert params["optimizer"]["lr"] == 0.001  # everything else: forgeml's defaults


def test_a_custom_net_config_is_open_and_forgeml_nets_stay_checked(tmp_path):
    (tmp_path / "conf" / "model").mkdir(parents=True)
    (tmp_path / "conf" / "model" / "mine.yaml").write_text(
        "defaults:\n  - /schema/model/custom@_here_\n  - _self_\n_target_: mynets.Mine\nwidth: 8\n"
    )
    assert forgeml("compose", "model=mine", "model.blocks=3", cwd=tmp_path).returncode == 0
    params = yaml.safe_load((tmp_path / "params.yaml").read_text())
    assert params["model"] == {"_target_": "mynets.Mine", "width": 8, "blocks": 3}
    refused = forgeml("compose", "model=mlp", "model.blocks=3", cwd=tmp_path)
    assert refused.returncode == 2
    assert "unknown key 'model.blocks'" in refused.stderr


def test_a_params_file_composed_by_another_forgeml_is_refused_naming_both_versions(tmp_path):
    assert forgeml("compose", cwd=tmp_path).returncode == 0
    params = tmp_path / "params.yaml"
    params.write_text(params.read_text().replace(f"forgeml_version: {__version__}", "forgeml_version: 0.0.9"))
    result = forgeml("evaluate", "--params", "params.yaml", cwd=tmp_path)
    assert result.returncode == 2
    assert f"composed by forgeml 0.0.9, this is forgeml {__version__}: run `forgeml compose`" in result.stderr
