"""One meaning per exit code across commands: the gate's refusal is 1 from `deploy` as from
`gate`; bad usage or input is 2."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from forgeml.cli import report_error
from forgeml.config import GateConfig
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
    gate = OmegaConf.structured(GateConfig(thresholds={"test/accuracy": 0.9}, max_regression=0.0))
    with pytest.raises(Refused, match=r"test/accuracy 0\.7.*--force deploys anyway"):
        deploy.gate(OmegaConf.create({"gate": gate}), registry, "m", "v2")


def test_deploy_without_the_live_evidence_gate_require_asks_for_is_refused(tmp_path):
    registry = Registry(tmp_path)
    registry.record(
        "m", {"version": "v2", "config_hash": "c", "data_hash": "d", "metrics": {"test/accuracy": 0.9}}
    )
    gate = OmegaConf.structured(GateConfig(require=["offline", "shadow"]))
    with pytest.raises(
        Refused, match=r"gate.require has shadow, and v2 has passed none: run `forgeml rollout v2`"
    ):
        deploy.gate(OmegaConf.create({"gate": gate}), registry, "m", "v2")
    registry.record_event("m", "v2", "rollout", step="shadow", verdict="passed")
    assert deploy.gate(OmegaConf.create({"gate": gate}), registry, "m", "v2")["gate"] == "gate passed"
    assert deploy.gate(OmegaConf.create({"gate": gate}), registry, "m", "v2", live=False)["forced"] is False
