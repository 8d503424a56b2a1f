"""Rollouts decided by live traffic on a real server (gateway + TorchServe), under load: a good
candidate is promoted through every step; one that rejects what production accepts is aborted at
its first canary step; one that answers differently is refused by its shadow step before it
answers any client. No client request fails in any of them."""

from __future__ import annotations

import copy
import shutil
from pathlib import Path
from typing import Any

import pandas as pd
import psutil
import pytest
from omegaconf import DictConfig

from forgeml.contract import GATEWAY_ANSWERS
from forgeml.errors import EXIT_DRIFT
from forgeml.io import read_json, write_json
from forgeml.layout import DECISION_THRESHOLD
from forgeml.serving.local_server import LocalServer
from forgeml.serving.management import http_request
from forgeml.serving.rollout import SHADOW_NICENESS, prioritize
from forgeml.stages import history, package, rollout, serve
from tests.helpers.load import steady_load
from tests.helpers.serving import MODEL, ask, packaged_and_served, records, serving_config

pytestmark = pytest.mark.slow

# closed-loop clients keep the server busy; shadow copies need moments with at most one request
# in flight (gateway.SHADOW_MAX_BUSY), which two clients leave
CLIENTS = 2
STEP_REQUESTS = 30


@pytest.fixture(scope="module")
def live(trained_project, tmp_path_factory) -> DictConfig:
    """v1 deployed on the default (secure) config; rollouts of 30 requests a step."""
    cfg = serving_config(trained_project, tmp_path_factory.mktemp("rollout"), version="v1")
    cfg.serve.rollout.merge_with({"min_requests": STEP_REQUESTS, "min_minutes": 0})
    with packaged_and_served(cfg):
        yield cfg


@pytest.fixture(scope="module")
def body(live, trained_project) -> dict[str, Any]:
    """Two records production labels with its first class, neither with certainty."""
    test = pd.read_parquet(Path(trained_project.paths.processed_dir) / "test.parquet")
    rows = records(test.drop(columns=["target"]).head(60))
    _, answer = ask(live, {"instances": rows})
    first = next(iter(answer["predictions"][0]["probabilities"]))
    chosen = [
        row
        for row, p in zip(rows, answer["predictions"], strict=True)
        if p["label"] == first and p["probabilities"][first] < 1.0
    ]
    assert len(chosen) >= 2
    return {"instances": chosen[:2]}


def candidate(live: DictConfig, version: str, tmp_path: Path, **serve_settings: Any) -> DictConfig:
    cfg = copy.deepcopy(live)
    cfg.serve.version = version
    cfg.serve.merge_with(serve_settings)
    cfg.candidate = version
    return cfg


def roll_out_under_load(live: DictConfig, cfg: DictConfig, body: dict[str, Any]) -> tuple[dict, Any]:
    server = LocalServer(live.serve)
    url = f"{server.url('inference')}/predictions/{MODEL}"
    with steady_load(url, server.token("inference"), body, CLIENTS) as load:
        result = rollout.run(cfg)
    return result, load


def rollout_events(live: DictConfig, version: str) -> list[dict[str, Any]]:
    return [e for e in history.run(live)["events"] if e["action"] == "rollout" and e["version"] == version]


def test_a_good_candidate_is_promoted_through_every_step(live, body, tmp_path):
    good = candidate(live, "v2", tmp_path)
    good.serve.rollout.steps = ["shadow", 50, 100]
    package.run(good)
    result, load = roll_out_under_load(live, good, body)
    assert load.failed == 0, load.statuses
    assert result["default_version"] == "v2"
    assert [step["step"] for step in result["steps"]] == ["shadow", "50%", "100%"]
    assert all(step["verdict"] == "passed" for step in result["steps"])
    assert result["steps"][0]["candidate"]["agreement"] == 1.0
    assert load.routes["candidate"] > 0 and load.routes["production"] > 0
    steps = [(e["step"], e.get("verdict")) for e in rollout_events(live, "v2")]
    assert steps == [("begin", None), ("shadow", "passed"), ("50%", "passed"), ("100%", "passed")]
    assert all(e["candidate"]["requests"] >= STEP_REQUESTS for e in rollout_events(live, "v2")[1:])
    last = history.run(live)["events"][-1]
    assert (last["action"], last["version"], last["rollout"]) == ("deploy", "v2", True)
    assert serve.status(live)["models"][MODEL]["default_version"] == "v2"
    assert "rollouts" not in serve.status(live)
    # Prometheus sees who answered: the gateway's counter beside the handler's metrics
    _, metrics = http_request("GET", LocalServer(live.serve).url("metrics") + "/metrics", None)
    assert f'{GATEWAY_ANSWERS}{{model="{MODEL}",route="candidate",code="200"}}' in metrics
    assert "forgeml_predictions" in metrics


def test_a_canary_that_rejects_what_production_accepts_is_aborted_at_its_first_step(live, body, tmp_path):
    before = serve.status(live)["models"][MODEL]["default_version"]
    strict = candidate(live, "strict", tmp_path, max_instances=1)
    strict.serve.rollout.steps = [25, 100]
    package.run(strict)
    result, load = roll_out_under_load(live, strict, body)
    assert result["exit_code"] == EXIT_DRIFT
    assert [step["step"] for step in result["steps"]] == ["25%"]
    assert "rejects" in result["steps"][0]["verdict"]
    assert load.failed == 0, "production answered every request the candidate refused"
    assert serve.status(live)["models"][MODEL]["default_version"] == before
    assert rollout_events(live, "strict")[-1]["step"] == "abort"


def test_a_candidate_that_answers_differently_is_refused_by_its_shadow(live, body, tmp_path):
    """A decision threshold of 1 on the first class turns first-class labels into the second:
    the shadow's answers disagree with production's, and no client sees one."""
    before = serve.status(live)["models"][MODEL]["default_version"]
    flipped = candidate(live, "flipped", tmp_path)
    flipped.paths.reports_dir = str(tmp_path / "reports")
    shutil.copytree(live.paths.reports_dir, flipped.paths.reports_dir)
    _, answer = ask(live, body)
    first, second = list(answer["predictions"][0]["probabilities"])
    model_hash = read_json(Path(live.paths.models_dir) / "model.json")["model_hash"]
    decision = {"target": "f1", "positive_class": first, "positive_index": 0, "threshold": 1.0}
    write_json(Path(flipped.paths.reports_dir) / DECISION_THRESHOLD, {**decision, "model_hash": model_hash})
    package.run(flipped)
    result, load = roll_out_under_load(live, flipped, body)
    assert result["exit_code"] == EXIT_DRIFT
    assert [step["step"] for step in result["steps"]] == ["shadow"]
    assert result["steps"][0]["candidate"]["agreement"] < live.serve.rollout.min_agreement
    assert "agrees with production" in result["steps"][0]["verdict"]
    assert load.failed == 0 and load.routes["candidate"] == 0, "the shadow answered no client"
    assert serve.status(live)["models"][MODEL]["default_version"] == before
    assert second != first


def test_a_shadows_workers_yield_the_cores_to_productions_and_get_them_back(live):
    """While a version answers shadow copies its workers run at the lowest priority; once it
    answers clients (a canary step, a promotion, an abort) at the normal one."""
    server = LocalServer(live.serve)
    version = server.api.default_version(MODEL)

    def niceness() -> set[int]:
        return {psutil.Process(int(w["pid"])).nice() for w in server.api.describe(MODEL, version)["workers"]}

    prioritize(server, MODEL, version, shadow=True)
    try:
        assert niceness() == {SHADOW_NICENESS}
    finally:
        prioritize(server, MODEL, version, shadow=False)
    assert niceness() == {0}
