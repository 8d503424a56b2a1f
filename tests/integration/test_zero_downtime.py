"""Changing what serves without a failed request, on the default (secure) config: a deploy, a
rollback and a restart under 16 concurrent clients, with one key throughout."""

from __future__ import annotations

import copy
import time
from pathlib import Path

import pandas as pd
import pytest

from forgeml.serving.local_server import LocalServer
from forgeml.stages import deploy, package, rollback, serve
from tests.helpers.load import steady_load
from tests.helpers.serving import MODEL, packaged_and_served, records, serving_config

pytestmark = pytest.mark.slow

CLIENTS = 16
# answers each phase must see, so that every change happens under load
SETTLE_ANSWERS = 50


def wait_for_answers(load, more: int) -> None:
    target = load.answered + more
    deadline = time.monotonic() + 120
    while load.answered < target and time.monotonic() < deadline:
        time.sleep(0.05)


def test_deploy_rollback_and_restart_under_load_fail_no_request(trained_project, tmp_path):
    cfg = serving_config(trained_project, tmp_path)
    assert cfg.serve.model_api is False and cfg.serve.token_auth is True  # the defaults
    test = pd.read_parquet(Path(trained_project.paths.processed_dir) / "test.parquet")
    body = {"instances": records(test.drop(columns=["target"]).head(2))}
    candidate = copy.deepcopy(cfg)
    candidate.serve.version = "v2"
    with packaged_and_served(cfg):
        server = LocalServer(cfg.serve)
        key, backend = server.token("inference"), serve.status(cfg)["backend"]["pid"]
        v1 = serve.status(cfg)["models"][MODEL]["default_version"]
        with steady_load(f"{server.url('inference')}/predictions/{MODEL}", key, body, CLIENTS) as load:
            wait_for_answers(load, SETTLE_ANSWERS)
            package.run(candidate)
            assert deploy.run(candidate)["default_version"] == "v2"
            wait_for_answers(load, SETTLE_ANSWERS)
            assert rollback.run(cfg)["default_version"] == v1
            wait_for_answers(load, SETTLE_ANSWERS)
            restarted = serve.restart(cfg)
            wait_for_answers(load, SETTLE_ANSWERS)
        assert load.failed == 0, load.statuses
        assert load.answered >= 4 * SETTLE_ANSWERS
        assert restarted["backend"]["pid"] != backend, "a new backend answers after the restart"
        assert restarted["models"][MODEL]["default_version"] == v1
        assert server.token("inference") == key, "the clients' key is the same after all three"
