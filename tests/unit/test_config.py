"""The schemas refuse typos and wrong types while composing, before any work."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from hydra import compose, initialize_config_module
from hydra.errors import ConfigCompositionException, MissingConfigException
from omegaconf import OmegaConf

from forgeml import __version__
from forgeml import conf as package_conf
from forgeml.config import BASE_CONFIG, SCHEMAS, FeatureType
from tests.helpers.config import PACKAGE_MODULE, PROJECT_CONF, PROJECT_ROOT, config_sources


def forgeml(*args: str, cwd=PROJECT_ROOT) -> subprocess.CompletedProcess:
    """The CLI in `cwd`; outside the repository (tmp_path) it composes forgeml's shipped config."""
    env = {key: value for key, value in os.environ.items() if key != "FORGEML_CONFIG_DIR"}
    command = [sys.executable, "-m", "forgeml.cli", *args]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def test_tests_compose_the_shipped_config_not_the_repository_conf():
    files = [Path(path.removeprefix("file://")).resolve() for path in config_sources() if "file://" in path]
    assert all(PROJECT_CONF.resolve() not in [path, *path.parents] for path in files), files
    assert "pkg://forgeml.conf" in config_sources()


def schema_defaults(schema: type) -> dict:
    """A schema's concrete defaults, flattened (`???`, required values, left out)."""
    return {
        k: v for k, v in flatten(OmegaConf.to_container(OmegaConf.structured(schema))).items() if v != "???"
    }


def flatten(node: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in node.items():
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value.value if hasattr(value, "value") else value
    return flat


def test_every_schema_default_equals_the_shipped_yaml():
    """The package's YAML is the one source of defaults: where a schema also names a default, the
    option built on that schema has the same value (data is left out: its options are data sets)."""
    package = Path(package_conf.__file__).parent
    checked = 0
    with initialize_config_module(PACKAGE_MODULE, version_base="1.3"):
        for group, name, schema in SCHEMAS:
            if not isinstance(schema, type) or group in (None, "schema/data"):
                continue
            group = group.removeprefix("schema/")
            for option in sorted((package / group).glob("*.yaml")):
                if f"/schema/{group}/{name}@_here_" not in option.read_text():
                    continue
                composed = flatten(
                    OmegaConf.to_container(compose(BASE_CONFIG, [f"{group}={option.stem}"])[group])
                )
                for key, default in schema_defaults(schema).items():
                    if key in composed and not str(composed[key]).startswith("${"):
                        assert composed[key] == default, (
                            f"{option}: {key} {composed[key]!r}, schema {default!r}"
                        )
                        checked += 1
        root = flatten(OmegaConf.to_container(compose(BASE_CONFIG)))
        for key, default in schema_defaults(SCHEMAS[0][2]).items():
            if key in root and not str(root[key]).startswith("${") and not key.startswith("data."):
                assert root[key] == default, f"{key}: yaml {root[key]!r}, schema {default!r}"
                checked += 1
    assert checked > 100


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


def test_features_mapping_is_settable_as_typed(make_config):
    cfg = make_config(
        "data=csv", "data.path=x.csv", "data.target=y", "data.features={age:numeric,city:categorical}"
    )
    assert {k: v.value for k, v in cfg.data.features.items()} == {"age": "numeric", "city": "categorical"}


def test_features_mapping_refuses_an_unknown_type(make_config):
    with pytest.raises(ConfigCompositionException) as error:
        make_config("data.features={age:numric}")
    choices = ", ".join(kind.value for kind in FeatureType)
    assert f"expected one of [{choices}]" in str(error.value.__cause__)


def test_activation_is_checked(make_config):
    with pytest.raises(ConfigCompositionException):
        make_config("model.activation=rleu")


def test_group_typo_raises_missing_config(make_config):
    with pytest.raises(MissingConfigException):
        make_config("trainer=gpus")


def test_every_group_option_composes(make_config):
    options = [
        "data=wine",
        "data=diabetes",
        "data=digits",
        "data=synthetic",
        "model=cnn",
        "trainer=cpu",
        "trainer=gpu",
        "trainer=ddp",
        "logger=csv",
        "logger=tensorboard",
        "logger=wandb",
        "experiment=digits",
        "experiment=diabetes",
    ]
    for option in options:
        group = option.split("=")[0]
        cfg = make_config(option)
        chosen = option.split("=")[1]
        assert group == "experiment" or cfg[group].get("name", chosen) == chosen or cfg[group]._target_
    assert make_config("experiment=digits").model._target_.endswith("CNN")
    assert make_config("trainer=gpu").trainer.precision == "bf16-mixed"


def test_help_and_compose_import_no_heavy_library(tmp_path):
    """--help and compose stay fast by never importing torch, Lightning, DVC or wandb."""
    code = (
        "import sys; from forgeml import cli;"
        "assert cli.main(['--help']) == 0; assert cli.main(['compose', 'seed=7']) == 0;"
        "heavy = [m for m in ('torch', 'pytorch_lightning', 'dvc', 'wandb') if m in sys.modules];"
        "print('HEAVY', heavy)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert "HEAVY []" in result.stdout
    assert "seed: 7" in (tmp_path / "params.yaml").read_text()


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


def test_range_checks_name_the_key_for_every_stage_that_uses_the_group(make_config):
    from forgeml.config import check_ranges
    from forgeml.errors import ForgeError
    from forgeml.serving.archive import inference_log_settings

    cfg = make_config("monitor.log_backups=-1")
    with pytest.raises(ForgeError, match=r"^monitor.log_backups=-1 must be at least 0$"):
        check_ranges("monitor", cfg.monitor)
    with pytest.raises(ForgeError, match=r"monitor.sample_rate=2.0 must lie between 0 and 1"):
        inference_log_settings(make_config("monitor.sample_rate=2").monitor, [])
    check_ranges("monitor", make_config().monitor)


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


def test_a_batch_delay_torchserve_would_read_as_100_ms_is_refused_before_packaging(make_config):
    from forgeml.errors import ForgeError
    from forgeml.serving.archive import model_config

    with pytest.raises(ForgeError, match=r"serve.max_batch_delay=0 must be at least 1 .*100 ms"):
        model_config(make_config("serve.batch_size=8", "serve.max_batch_delay=0").serve)
    assert model_config(make_config().serve)["maxBatchDelay"] >= 1
