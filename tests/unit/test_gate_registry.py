"""The promotion gate and the model registry."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from forgeml.errors import ForgeError
from forgeml.serving.gate import promotion_gate
from forgeml.serving.registry import Registry, RegistryError, data_hash
from tests.helpers.registry import entry


def test_gate_refuses_a_model_below_the_threshold_and_quotes_the_numbers():
    decision = promotion_gate({"test/accuracy": 0.81}, None, {"test/accuracy": 0.9}, 0.02)
    assert not decision.passed
    assert decision.reasons == ["test/accuracy 0.8100 is below the required minimum 0.9000"]


def test_gate_treats_error_metrics_as_maxima():
    assert promotion_gate({"test/rmse": 40.0}, None, {"test/rmse": 50.0}, 0.02).passed
    refused = promotion_gate({"test/rmse": 60.0}, None, {"test/rmse": 50.0}, 0.02)
    assert "above the allowed maximum 50.0000" in refused.summary()


def test_gate_refuses_a_regression_against_the_deployed_model():
    deployed = {"test/accuracy": 0.95, "test/rmse": 10.0}
    worse = promotion_gate({"test/accuracy": 0.90, "test/rmse": 10.0}, deployed, {}, 0.02)
    assert not worse.passed and "worse than the deployed 0.9500 by 0.0500" in worse.reasons[0]
    slightly_worse = promotion_gate({"test/accuracy": 0.94, "test/rmse": 10.1}, deployed, {}, 0.02)
    assert slightly_worse.passed
    better = promotion_gate({"test/accuracy": 0.97, "test/rmse": 9.0}, deployed, {"test/accuracy": 0.9}, 0.0)
    assert better.passed


def test_gate_names_a_metric_that_was_not_measured():
    decision = promotion_gate({"test/r2": 0.5}, None, {"test/accuracy": 0.9}, 0.02)
    assert "test/accuracy was not measured (measured: test/r2)" in decision.reasons[0]


def test_registry_records_versions_and_what_serves(tmp_path):
    registry = Registry(tmp_path)
    registry.record("m", entry("v1"))
    registry.record("m", entry("v2"))
    registry.record("m", entry("v2", accuracy=0.95))
    assert [e["version"] for e in registry.versions("m")] == ["v1", "v2"]
    assert registry.version("m", "v2")["metrics"] == {"test/accuracy": 0.95}
    assert registry.serving("m") is None
    registry.record_event("m", "v2", "deploy", forced=False)
    registry.record_event("m", "v1", "rollback")
    assert registry.serving("m") == "v1"
    assert [e["action"] for e in registry.load()["models"]["m"]["events"]] == ["deploy", "rollback"]
    with pytest.raises(ForgeError, match="registered: v1, v2"):
        registry.record_event("m", "v9", "deploy")


def test_registry_survives_a_crash_mid_write(tmp_path, monkeypatch):
    registry = Registry(tmp_path)
    registry.record("m", entry("v1"))
    before = registry.path.read_text()

    def crash(self, text, *args, **kwargs):
        with open(self, "w") as file:
            file.write(text[: len(text) // 2])
        raise OSError("disk full")

    monkeypatch.setattr(Path, "write_text", crash)
    with pytest.raises(OSError):
        registry.record("m", entry("v2"))
    monkeypatch.undo()
    assert registry.path.read_text() == before
    assert [e["version"] for e in registry.versions("m")] == ["v1"]
    assert not list(tmp_path.glob(".*.tmp*"))


def test_data_hash_prefers_dvc_lock(tmp_path):
    processed = tmp_path / "data" / "processed"
    processed.mkdir(parents=True)
    (processed / "train.parquet").write_bytes(b"rows")
    own = data_hash(processed, tmp_path / "dvc.lock")
    assert own.startswith("sha256:")
    lock = {"stages": {"prepare": {"outs": [{"path": str(processed), "md5": "abc.dir"}]}}}
    (tmp_path / "dvc.lock").write_text(json.dumps(lock))
    assert data_hash(processed, tmp_path / "dvc.lock") == "dvc:abc.dir"


def test_gate_refuses_a_candidate_that_was_never_evaluated():
    decision = promotion_gate({}, {"test/accuracy": 1.0}, {}, 0.02)
    assert not decision.passed
    assert "never evaluated; run `forgeml evaluate`" in decision.summary()


def test_rollbacks_pop_the_deployed_stack_and_what_serves_follows(tmp_path):
    registry = Registry(tmp_path)
    for version in ("v1", "v2", "v3"):
        registry.record("m", entry(version))
        registry.record_event("m", version, "deploy", forced=False)
    registry.record_event("m", "v2", "rollback")
    assert (registry.deployed("m"), registry.serving("m")) == (["v1", "v2"], "v2")
    registry.record_event("m", "v1", "rollback")
    assert (registry.deployed("m"), registry.serving("m")) == (["v1"], "v1")
    event = registry.events("m")[-1]
    assert event["user"] and event["host"]


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ('{"format": "forgeml.registry/1", "models": {', "not valid JSON"),
        ("[]", 'expected an object with "format"'),
        ('{"format": "forgeml.registry/1", "models": []}', '"models" is not an object'),
        (
            '{"format": "forgeml.registry/1", "models": {"m": {"versions": [{}], "events": []}}}',
            "m.versions[0]",
        ),
        (
            '{"format": "forgeml.registry/1", "models": {"m": {"versions": [], '
            '"events": [{"version": "v1", "action": "promote"}]}}}',
            "unknown action 'promote'",
        ),
    ],
)
def test_damaged_registry_is_refused_naming_the_file_and_the_fault(tmp_path, text, problem):
    registry = Registry(tmp_path)
    registry.path.write_text(text)
    with pytest.raises(RegistryError) as failure:
        registry.load()
    assert str(registry.path) in str(failure.value) and problem in str(failure.value)
    with pytest.raises(RegistryError):
        registry.record("m", entry("v1"))
    assert registry.path.read_text() == text
