"""The schemas refuse typos and wrong types while composing, before any work."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_module
from hydra.errors import ConfigCompositionException, MissingConfigException
from omegaconf import DictConfig, OmegaConf

from forgeml import conf as package_conf
from forgeml.config import BASE_CONFIG, SCHEMAS, FeatureType
from tests.helpers.config import PACKAGE_MODULE, PROJECT_CONF, config_sources


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


def package_composition(*overrides: str) -> DictConfig:
    """The shipped config composed with `overrides` alone (no test paths, no forced CPU)."""
    with initialize_config_module(PACKAGE_MODULE, version_base="1.3"):
        return compose(BASE_CONFIG, overrides=list(overrides))


@pytest.mark.parametrize(
    ("option", "key", "value"),
    [
        ("data=wine", "data.name", "wine"),
        ("data=diabetes", "data.task", "regression"),
        ("data=digits", "data.name", "digits"),
        ("data=synthetic", "data.source._target_", "forgeml.data.sources.synthetic"),
        ("model=cnn", "model._target_", "forgeml.models.nets.CNN"),
        ("trainer=cpu", "trainer.accelerator", "cpu"),
        ("trainer=gpu", "trainer.precision", "bf16-mixed"),
        ("trainer=ddp", "trainer.strategy", "ddp"),
        ("logger=csv", "logger._target_", "pytorch_lightning.loggers.CSVLogger"),
        ("logger=tensorboard", "logger._target_", "pytorch_lightning.loggers.TensorBoardLogger"),
        ("logger=wandb", "logger._target_", "pytorch_lightning.loggers.WandbLogger"),
        ("experiment=digits", "model._target_", "forgeml.models.nets.CNN"),
        ("experiment=diabetes", "model.hidden", [64, 32]),
    ],
)
def test_every_group_option_composes_to_its_own_settings(option, key, value):
    """Each option sets what tells it apart from the default composition (taken without a logger:
    the default logger, csv, is one of the options)."""
    assert OmegaConf.select(package_composition(option), key) == value
    assert OmegaConf.select(package_composition("logger=none"), key) != value


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


def test_a_batch_delay_torchserve_would_read_as_100_ms_is_refused_before_packaging(make_config):
    from forgeml.errors import ForgeError
    from forgeml.serving.archive import model_config

    with pytest.raises(ForgeError, match=r"serve.max_batch_delay=0 must be at least 1 .*100 ms"):
        model_config(make_config("serve.batch_size=8", "serve.max_batch_delay=0").serve)
    assert model_config(make_config().serve)["maxBatchDelay"] >= 1
