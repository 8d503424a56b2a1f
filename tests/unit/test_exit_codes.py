"""One meaning per exit code across commands: the gate's refusal is 1 from `deploy` as from
`gate`; bad usage or input is 2."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from forgeml.cli import report_error
from forgeml.errors import EXIT_REFUSED, EXIT_USAGE, ForgeError, Refused
from forgeml.serving.registry import Registry
from forgeml.stages import deploy


def test_a_refusal_exits_1_and_an_error_exits_2(capsys):
    assert report_error("deploy", Refused("gate refused")) == EXIT_REFUSED == 1
    assert report_error("train", ForgeError("unknown key")) == EXIT_USAGE == 2
    assert "forgeml deploy: error: gate refused" in capsys.readouterr().err


def test_deploy_gate_refusal_is_a_refusal_quoting_the_numbers(tmp_path):
    registry = Registry(tmp_path)
    metrics = {"test/accuracy": 0.7}
    registry.record("m", {"version": "v2", "config_hash": "c", "data_hash": "d", "metrics": metrics})
    gate = OmegaConf.create({"thresholds": {"test/accuracy": 0.9}, "max_regression": 0.0, "force": False})
    with pytest.raises(Refused, match=r"test/accuracy 0\.7.*--force deploys anyway"):
        deploy.gate(OmegaConf.create({"gate": gate}), registry, "m", "v2")
