"""`forgeml <stage> --params params.yaml key=value ...` applies each override to the snapshot or
refuses it; none is dropped (a deploy once restarted a TLS server on plain HTTP that way)."""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from forgeml.cli import apply_overrides
from forgeml.config import ForgeConfig
from forgeml.errors import ForgeError


@pytest.fixture
def snapshot(make_config):
    return OmegaConf.merge(OmegaConf.structured(ForgeConfig), make_config())


def test_plain_overrides_are_applied_with_their_types(snapshot):
    apply_overrides(
        snapshot, ["serve.tls=true", "serve.inference_port=19273", "model.hidden=[32]"], Path("p")
    )
    assert snapshot.serve.tls is True
    assert snapshot.serve.inference_port == 19273
    assert list(snapshot.model.hidden) == [32]


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("data=wine", "chooses a config group.*forgeml compose data=wine"),
        ("+serve.extra=1", "takes plain key=value overrides"),
        ("~serve.tls", "takes plain key=value overrides"),
        ("seed=1,2", "takes plain key=value overrides"),
    ],
)
def test_what_a_snapshot_cannot_take_is_refused_naming_it(snapshot, override, message):
    with pytest.raises(ForgeError, match=message):
        apply_overrides(snapshot, [override], Path("params.yaml"))


def test_a_wrong_type_is_refused_by_the_schema(snapshot):
    with pytest.raises(Exception, match=r"serve\.inference_port"):
        apply_overrides(snapshot, ["serve.inference_port=abc"], Path("params.yaml"))
