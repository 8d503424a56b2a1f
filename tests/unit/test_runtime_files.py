"""The files a local TorchServe starts with: Java properties escaping, allowed_urls, log4j."""

from __future__ import annotations

import os
import re
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import pytest

from forgeml.config import check_ranges
from forgeml.errors import ForgeError
from forgeml.serving.runtime_files import (
    LOGGERS,
    PER_REQUEST_LINES,
    allowed_urls,
    log4j_config,
    read_properties,
    render_properties,
)
from forgeml.serving.server import jvm_options


@pytest.mark.parametrize(
    "value",
    ["file://\\/tmp\\/store/[A-Za-z0-9_.-]+\\.mar", " leading space", "tab\there", "ünï €𝄞", "a=b:c#d"],
)
def test_property_values_read_back_unchanged(value):
    text = render_properties({"key": value})
    assert text.isascii()
    assert read_properties(text) == {"key": value}


def test_regex_backslashes_are_doubled_for_java():
    assert "\\\\.mar" in render_properties({"allowed_urls": allowed_urls(Path("/srv/store"))})


def test_allowed_urls_admits_only_plain_archive_names_in_the_store():
    pattern = allowed_urls(Path("/srv/my.store"))
    assert re.fullmatch(pattern, "file:///srv/my.store/model-1_v2.mar")
    for url in (
        "file:///srv/myXstore/model.mar",
        "file:///srv/my.store/%2e%2e/etc/passwd.mar",
        "file:///srv/my.store/../etc/model.mar",
        "file:///srv/my.store/.versions/m/v1.mar",
        "file:///srv/my.store/model.mar.zip",
        "http://example.com/srv/my.store/model.mar",
    ):
        assert not re.fullmatch(pattern, url), url


def test_every_log_is_size_rotated_and_nothing_goes_to_the_console(tmp_path):
    root = ElementTree.fromstring(log4j_config(tmp_path, 1000, 2))
    appenders = root.find("Appenders")
    assert appenders.find("Console") is None
    rolling = appenders.findall("RollingFile")
    assert {a.get("name") for a in rolling} == {name for name, _ in LOGGERS.values()}
    for appender in rolling:
        assert appender.find("Policies/SizeBasedTriggeringPolicy").get("size") == "1000"
        assert appender.find("DefaultRolloverStrategy").get("max") == "2"
    levels = {logger.get("level") for logger in root.iter("Logger")} | {
        root.find("Loggers/Root").get("level")
    }
    assert "debug" not in levels and "all" not in levels


def test_log_rotation_settings_are_checked(make_config):
    with pytest.raises(ForgeError, match=r"^serve\.log_max_bytes=0 must be positive$"):
        check_ranges("serve", make_config("serve.log_max_bytes=0").serve)
    with pytest.raises(ForgeError, match=r"^serve\.log_backups=0 must be at least 1$"):
        check_ranges("serve", make_config("serve.log_backups=0").serve)


def test_the_frontends_per_request_info_lines_are_dropped_and_other_lines_kept(tmp_path):
    root = ElementTree.fromstring(log4j_config(tmp_path, 1000, 2))
    filters = {
        logger.get("name"): logger.find("RegexFilter")
        for logger in root.iter("Logger")
        if logger.find("RegexFilter") is not None
    }
    assert set(filters) == set(PER_REQUEST_LINES)
    for found in filters.values():
        assert (found.get("useRawMsg"), found.get("onMatch")) == ("true", "DENY")
    dropped = re.compile(filters["org.pytorch.serve"].get("regex"))
    assert dropped.fullmatch("Backend response time: {}")
    assert dropped.fullmatch("result={}, pattern={}")
    assert not dropped.fullmatch("Backend worker process died.")


@pytest.mark.parametrize(("cores", "parallelism"), [(1, 2), (2, 2), (16, 15)])
def test_the_jvms_common_pool_gets_at_least_two_threads(monkeypatch, cores, parallelism):
    # with fewer, TorchServe's frontend starts a thread for every batch (server.jvm_options)
    monkeypatch.setattr(os, "cpu_count", lambda: cores)
    assert jvm_options() == f"-Djava.util.concurrent.ForkJoinPool.common.parallelism={parallelism}"


def test_serve_start_refuses_bad_log_rotation_before_starting_anything(make_config):
    from forgeml.stages import serve

    cfg = make_config("serve.log_backups=0")
    with pytest.raises(ForgeError, match=r"^serve\.log_backups=0 must be at least 1$"):
        serve.start(cfg)
    assert not Path(cfg.serve.runtime_dir).exists()
