"""`forgeml doctor`'s checks fail where packaging or serving would, and name the fix."""

from __future__ import annotations

import socket

import pytest
from omegaconf import OmegaConf

from forgeml.serving.prerequisites import java_check, package_check, parse_java_major, ports_check


@pytest.mark.parametrize(
    ("printed", "major"),
    [
        ('openjdk version "17.0.15" 2025-04-15\nOpenJDK Runtime Environment', 17),
        ('java version "1.8.0_402"', 8),
        ('openjdk version "21" 2023-09-19', 21),
        ("no version here", None),
    ],
)
def test_java_major_version_is_read_from_what_java_prints(printed, major):
    assert parse_java_major(printed) == major


def test_missing_java_fails_and_names_the_install(monkeypatch, tmp_path):
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    check = java_check()
    assert not check.passed
    assert "openjdk-17-jre-headless" in check.fix


def test_missing_package_fails_with_its_fix():
    check = package_check("archiver", "no-such-distribution-forgeml", "pip install 'forgeml[serve]'")
    assert (check.passed, check.found, check.fix) == (False, "not installed", "pip install 'forgeml[serve]'")


def test_a_taken_port_is_named_with_its_key_unless_this_project_serves_on_it():
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        taken = listener.getsockname()[1]
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            free = probe.getsockname()[1]
        serve = OmegaConf.create(
            {"host": "127.0.0.1", "inference_port": taken, "management_port": free, "metrics_port": free}
        )
        refused = ports_check(serve, running_pid=None)
        assert not refused.passed
        assert f"{taken} (serve.inference_port)" in refused.found
        assert "serve.inference_port=<port>" in refused.fix
        assert ports_check(serve, running_pid=4242).passed
