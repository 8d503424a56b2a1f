"""A real TorchServe on loopback, started, queried, redeployed and stopped through forgeml.

One server (free ports, its own runtime directory) serves the session's trained breast_cancer
model for the whole module; its batching waits long enough to batch concurrent requests. No test
depends on another having run: a test that deploys another version rolls it back, and the tests
that start or stop a server start their own."""

from __future__ import annotations

import copy
import http.client
import json
import re
import shutil
import threading
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import psutil
import pytest
from omegaconf import DictConfig

from forgeml.errors import ForgeError
from forgeml.io import read_json, write_json
from forgeml.layout import DECISION_THRESHOLD
from forgeml.serving.local_server import LocalServer
from forgeml.serving.management import http_request
from forgeml.serving.registry import Registry
from forgeml.stages import deploy, package, predict, rollback, serve
from tests.helpers.serving import (
    MAX_INSTANCES,
    MODEL,
    ask,
    huge_integer,
    packaged_and_served,
    records,
    serving_config,
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def served(trained_project, tmp_path_factory) -> DictConfig:
    """breast_cancer packaged (batches of up to 8, waiting 300 ms) on a running TorchServe."""
    cfg = serving_config(
        trained_project,
        tmp_path_factory.mktemp("served"),
        model_api=True,
        batch_size=8,
        max_batch_delay=300,
    )
    with packaged_and_served(cfg):
        yield cfg


@pytest.fixture(scope="module")
def test_rows(trained_project) -> pd.DataFrame:
    test = pd.read_parquet(Path(trained_project.paths.processed_dir) / "test.parquet")
    return test.drop(columns=["target"]).head(12)


def backend_calls(cfg: DictConfig) -> int:
    """How many batches the workers have received: each logs one line per batch."""
    log = LocalServer(cfg.serve).backend().logs_dir / "model_log.log"
    return log.read_text().count("Backend received inference at")


def labels_and_probabilities(answer: dict[str, Any]) -> tuple[list[Any], list[list[float]]]:
    predictions = answer["predictions"]
    return [p["label"] for p in predictions], [list(p["probabilities"].values()) for p in predictions]


def test_start_waits_until_every_worker_is_ready_and_binds_loopback(served):
    status = serve.status(served)
    assert status["models"][MODEL]["versions"] == {status["models"][MODEL]["default_version"]: ["READY"]}
    assert Path(status["key_file"]).is_file()
    for api in ("inference", "management", "metrics"):
        assert status[f"{api}_url"].startswith("http://127.0.0.1:")
    # the backend behind the gateway: loopback, its own keys, kept valid while it runs
    backend = LocalServer(served.serve).backend()
    properties = backend.running_properties()
    for api in ("inference", "management", "metrics"):
        assert properties[f"{api}_address"].startswith("http://127.0.0.1:")
    assert properties["metrics_mode"] == "prometheus"
    assert properties["disable_token_authorization"] == "false"
    assert int(properties["token_expiration_min"]) >= 365 * 24 * 60
    # the frontend JVM runs with the flags forgeml gives it (server.jvm_options)
    command = psutil.Process(backend.pid()).cmdline()
    assert set(properties["vmargs"].split()) <= set(command)
    store = Path(served.serve.model_store).resolve()
    assert re.fullmatch(properties["allowed_urls"], f"file://{store}/{MODEL}.mar")
    for outside in (
        "https://example.com/model.mar",
        f"file://{store}/%2e%2e/other/{MODEL}.mar",
        f"file://{store}/.versions/{MODEL}/v1.mar",
        f"file://{store}x/{MODEL}.mar",
    ):
        assert not re.fullmatch(properties["allowed_urls"], outside), outside


def test_endpoint_answers_equal_forgeml_predict(served, test_rows, tmp_path):
    status, answer = ask(served, {"instances": records(test_rows)})
    test_rows.to_csv(tmp_path / "rows.csv", index=False)
    batch = copy.deepcopy(served)
    batch.input, batch.output = str(tmp_path / "rows.csv"), str(tmp_path / "scored.csv")
    predict.run(batch)
    scored = pd.read_csv(tmp_path / "scored.csv")
    assert status == 200
    served_labels, served_probabilities = labels_and_probabilities(answer)
    assert served_labels == scored["prediction"].tolist()
    labels = list(answer["predictions"][0]["probabilities"])
    np.testing.assert_allclose(
        served_probabilities, scored[[f"probability_{label}" for label in labels]], atol=1e-5
    )


def test_single_record_gets_one_prediction(served, test_rows):
    status, answer = ask(served, records(test_rows)[0])
    assert status == 200
    assert len(answer["predictions"]) == 1


@pytest.mark.parametrize(
    ("case", "field", "message"),
    [
        ("malformed", None, "malformed JSON"),
        ("missing", "mean radius", "missing feature 'mean radius'"),
        ("wrong_type", "mean radius", "is numeric"),
        ("empty", "instances", "is empty"),
        ("too_many", "instances", "too many instances"),
    ],
)
def test_bad_input_gets_400_with_its_message(served, test_rows, case, field, message):
    good = records(test_rows)[0]
    bodies = {
        "malformed": b'{"instances": [{"mean radius": 1',
        "missing": {"instances": [{k: v for k, v in good.items() if k != "mean radius"}]},
        "wrong_type": {"instances": [{**good, "mean radius": "large"}]},
        "empty": {"instances": []},
        "too_many": {"instances": [good] * (MAX_INSTANCES + 1)},
    }
    status, answer = ask(served, bodies[case])
    assert status == 400
    assert message in answer["error"]
    assert answer["field"] == field


@pytest.mark.parametrize(
    ("bad", "field", "message"),
    [
        (lambda row: {**row, "mean area": "huge"}, "mean area", "is numeric"),
        (huge_integer, None, "Exceeds the limit (4300 digits)"),
        (lambda row: b"[" * 50_000 + b"]" * 50_000, None, "nested too deeply"),
        (lambda row: {**row, "mean area": 1e300}, "mean area", "too extreme for the model"),
    ],
    ids=["wrong_type", "5000_digit_integer", "nested_50k_deep", "1e300"],
)
def test_bad_request_in_batch_fails_alone(served, test_rows, bad, field, message):
    rows = records(test_rows)[:3]
    bodies = [rows[0], bad(rows[1]), rows[2]]
    alone = [ask(served, body)[1] for body in (rows[0], rows[2])]
    start = threading.Barrier(len(bodies))

    def send(body: Any) -> tuple[int, Any]:
        start.wait(timeout=30)
        return ask(served, body)

    calls_before = backend_calls(served)
    with ThreadPoolExecutor(len(bodies)) as pool:
        answers = list(pool.map(send, bodies))
    # the frontend copies worker output into the log asynchronously: give it a moment
    deadline = time.monotonic() + 5
    while backend_calls(served) == calls_before and time.monotonic() < deadline:
        time.sleep(0.1)
    assert backend_calls(served) == calls_before + 1, "the three requests were not one batch"
    assert [status for status, _ in answers] == [200, 400, 200]
    assert answers[1][1]["field"] == field
    assert message in answers[1][1]["error"]
    for (_, answer), expected in zip([answers[0], answers[2]], alone, strict=True):
        assert labels_and_probabilities(answer)[0] == labels_and_probabilities(expected)[0]
        np.testing.assert_allclose(
            labels_and_probabilities(answer)[1], labels_and_probabilities(expected)[1], atol=1e-5
        )


def test_400_for_a_huge_value_has_a_short_status_line_and_a_bounded_body(served, test_rows):
    server = LocalServer(served.serve)
    body = json.dumps({**records(test_rows)[0], "mean area": "x" * 900_000}).encode()
    address = urllib.parse.urlsplit(server.url("inference"))
    connection = http.client.HTTPConnection(address.hostname, address.port, timeout=30)
    headers = {"Authorization": f"Bearer {server.token('inference')}", "Content-Type": "application/json"}
    connection.request("POST", f"/predictions/{MODEL}", body, headers)
    response = connection.getresponse()
    answer = response.read()
    connection.close()
    assert (response.status, response.reason) == (400, "Bad Request")
    assert len(answer) < 1000
    assert json.loads(answer)["field"] == "mean area"


def test_request_without_or_with_a_wrong_token_is_refused_with_401(served, test_rows):
    status, answer = ask(served, records(test_rows)[0], token=None)
    assert status == 401
    assert "Token Authorization failed" in answer["message"]
    server = LocalServer(served.serve)
    url = f"{server.url('inference')}/predictions/{MODEL}"
    body = json.dumps(records(test_rows)[0]).encode()
    assert http_request("POST", url, "not-the-key", body)[0] == 401
    # the backend's own key is not a client key
    assert http_request("POST", url, server.backend().token("inference"), body)[0] == 401
    assert http_request("POST", url, server.token("inference"), body)[0] == 200


def test_deploy_v2_then_rollback_serves_v1_again(served, test_rows):
    before = serve.status(served)["models"][MODEL]
    v1, registered = before["default_version"], set(before["versions"]) | {"v2"}
    v2 = copy.deepcopy(served)
    v2.serve.version = "v2"
    package.run(v2)
    deployed = deploy.run(v2)
    assert deployed["default_version"] == "v2"
    assert set(deployed["versions"]) == registered
    assert ask(served, records(test_rows)[0])[0] == 200
    rolled_back = rollback.run(served)
    assert rolled_back["default_version"] == v1
    assert set(rolled_back["versions"]) == registered
    with pytest.raises(ForgeError, match="nothing to roll back to"):
        rollback.run(served)


def test_a_decision_threshold_is_served_as_forgeml_predict_applies_it(served, test_rows, tmp_path):
    """A threshold on the positive class between the rows' probabilities flips some of their
    labels away from the most probable class; the served answer follows it, as predict does."""
    cfg = copy.deepcopy(served)
    cfg.paths.reports_dir = str(tmp_path / "reports")
    shutil.copytree(served.paths.reports_dir, cfg.paths.reports_dir)
    _, answer = ask(served, {"instances": records(test_rows)})
    labels, probabilities = labels_and_probabilities(answer)
    threshold = float(np.quantile(np.array(probabilities)[:, 0], 0.25))
    model_hash = read_json(Path(cfg.paths.models_dir) / "model.json")["model_hash"]
    decision = {"target": "f1", "positive_class": labels_of(answer)[0], "positive_index": 0}
    write_json(
        Path(cfg.paths.reports_dir) / DECISION_THRESHOLD,
        {**decision, "threshold": threshold, "model_hash": model_hash},
    )
    package.run(cfg)
    deploy.run(cfg)
    try:
        status, thresholded = ask(served, {"instances": records(test_rows)})
        test_rows.to_csv(tmp_path / "rows.csv", index=False)
        cfg.input, cfg.output = str(tmp_path / "rows.csv"), str(tmp_path / "scored.csv")
        predict.run(cfg)
    finally:
        rollback.run(served)
    served_labels, _ = labels_and_probabilities(thresholded)
    assert status == 200
    assert served_labels == pd.read_csv(tmp_path / "scored.csv")["prediction"].tolist()
    assert served_labels != labels
    expected = [labels_of(answer)[0] if p[0] >= threshold else labels_of(answer)[1] for p in probabilities]
    assert served_labels == expected


def labels_of(answer: dict[str, Any]) -> list[str]:
    """The model's classes, in the order of each answer's probabilities."""
    return list(answer["predictions"][0]["probabilities"])


def test_second_server_with_the_model_api_off_deploys_in_place(served, tmp_path):
    second = serving_config(served, tmp_path, model_api=False, version="other")
    package.run(second)
    try:
        status = serve.start(second)
        assert status["model_api"] is False
        assert status["models"] == {}, "a packaged version that was never deployed is not served"
        assert "forgeml deploy" in status["note"]
        assert serve.status(served)["running"]
        backend = serve.status(second)["backend"]["pid"]
        deployed = deploy.run(second)
        assert deployed["default_version"] == "other"
        after = serve.status(second)
        assert after["model_api"] is False and after["running"]
        assert after["models"][second.serve.model_name]["default_version"] == "other"
        assert after["backend"]["pid"] == backend, "deployed without a restart"
        assert serve.status(served)["running"], "the first server is untouched"
    finally:
        serve.stop(second)
    assert not serve.status(second)["running"]


def test_start_refuses_a_taken_port_naming_it(served, tmp_path):
    clash = serving_config(served, tmp_path, inference_port=served.serve.inference_port)
    with pytest.raises(ForgeError, match=rf"port {served.serve.inference_port} .* taken"):
        serve.start(clash)


def test_start_without_java_says_so(served, tmp_path, monkeypatch):
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ForgeError, match="needs Java"):
        serve.start(serving_config(served, tmp_path))


def test_crash_looping_worker_fails_start_quoting_the_model_log(served, tmp_path):
    broken_models = tmp_path / "models"
    broken_models.mkdir()
    models = Path(served.paths.models_dir)
    for name in ("model.json", "preprocessor.json"):
        (broken_models / name).write_bytes((models / name).read_bytes())
    (broken_models / "model.pt2").write_bytes(b"not an exported program")
    broken = serving_config(served, tmp_path, startup_timeout=90)
    broken.paths.models_dir = str(broken_models)
    version = package.run(broken)["version"]
    # the registry says this version serves: start loads it
    Registry(broken.serve.model_store).record_event(MODEL, version, "deploy", forced=True)
    with pytest.raises(ForgeError, match="keep dying") as failure:
        serve.start(broken)
    assert "zip" in str(failure.value).lower()
    assert not serve.status(broken)["running"]


def test_stop_leaves_no_process_behind(trained_project, tmp_path):
    cfg = serving_config(trained_project, tmp_path, model_api=True)
    with packaged_and_served(cfg):
        server = LocalServer(cfg.serve)
        backend = server.backend()
        gateway, frontend = server.pid(), backend.pid()
        workers = [w.pid for w in psutil.Process(frontend).children(recursive=True)]
        assert workers
        assert serve.stop(cfg)["stopped"]
        for pid in [gateway, frontend, *workers]:
            assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
        assert not backend.key_file.exists(), "the backend's own keys end with it"
        assert server.key_file.exists(), "the clients' keys stay for the next start"
        assert backend.read_log("ts_log.log")  # the runtime directory stays for its logs
