"""`forgeml watch` end to end: the trained breast_cancer project, a drifted inference log in the
serving handler's format, a real HTTP receiver on 127.0.0.1 (a free port, in a thread) that
checks each delivery's signature as a user's endpoint would, and a real TorchServe that a
rollback or retrain alert switches (the retrain's `dvc repro` is stood in for by a real
`forgeml package` process of a new version: the pipeline itself is DVC's, tested in test_dvc)."""

from __future__ import annotations

import copy
import hashlib
import hmac
import json
import shutil
import sys
import threading
from collections.abc import Iterator
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pandas as pd
import pytest
from omegaconf import DictConfig

from forgeml.cli import main
from forgeml.monitoring import webhook
from forgeml.serving.registry import Registry
from forgeml.stages import deploy, package, serve, watch
from tests.helpers.serving import packaged_and_served, serving_config

pytestmark = pytest.mark.slow

SECRET = "integration-secret"
SHIFTED = ["mean radius", "mean texture", "worst smoothness", "area error", "mean symmetry"]
MODEL = "breast_cancer"


class Receiver(ThreadingHTTPServer):
    """Records every POST (headers, raw body); answers the status codes of `answers` in turn,
    then 200."""

    def __init__(self, answers: list[int]) -> None:
        super().__init__(("127.0.0.1", 0), ReceiverHandler)
        self.answers, self.deliveries = list(answers), []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/forgeml"


class ReceiverHandler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.deliveries.append((dict(self.headers), body))
        status = self.server.answers.pop(0) if self.server.answers else 200
        self.send_response(status)
        self.end_headers()

    def log_message(self, *args) -> None:
        """Quiet: pytest shows the assertions."""


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver([])
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def signed_by_secret(headers: dict[str, str], body: bytes) -> bool:
    """What a receiver checks: the header is the HMAC-SHA256 of the raw body under the secret."""
    expected = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(headers.get("X-Forgeml-Signature", ""), expected)


@pytest.fixture
def project(trained_project: DictConfig, tmp_path: Path, monkeypatch) -> DictConfig:
    """The trained project with this test's own reports and logs, a drifted inference log in the
    last whole day, and a registry in which version 1 serves."""
    cfg = trained_project.copy()
    shutil.copytree(trained_project.paths.reports_dir, tmp_path / "reports")
    cfg.paths.reports_dir = str(tmp_path / "reports")
    cfg.paths.log_dir = str(tmp_path / "logs")
    cfg.monitor.log_dir = str(tmp_path / "inference-log")
    cfg.serve.model_store = str(tmp_path / "store")
    write_drifted_log(cfg)
    registry = Registry(cfg.serve.model_store)
    registry.record(MODEL, {"version": "1", "metrics": {}})
    registry.record_event(MODEL, "1", "deploy", forced=False, gate="gate passed")
    monkeypatch.setenv("FORGEML_WEBHOOK_SECRET", SECRET)
    monkeypatch.chdir(tmp_path)  # outside the repository: forgeml's shipped config
    return cfg


def write_drifted_log(cfg: DictConfig) -> None:
    """Every prepared row, SHIFTED moved by 3 std, as logged requests: half stamped in the last
    whole day, half now (also in it, should midnight pass before the watch runs)."""
    processed = Path(cfg.paths.processed_dir)
    rows = pd.concat([pd.read_parquet(processed / f"{split}.parquet") for split in ("train", "val", "test")])
    rows = rows.drop(columns=cfg.data.target).reset_index(drop=True)
    for name in SHIFTED:
        rows[name] = rows[name] + 3 * rows[name].std()
    now = pd.Timestamp(datetime.now(timezone.utc))
    stamps = [(now.floor("1d") - pd.Timedelta(hours=1)).isoformat(), now.isoformat()]
    records = rows.to_dict("records")
    logged = [
        {
            "ts": stamps[i % 2],
            "model": MODEL,
            "version": "1",
            "latency_ms": 2.0,
            "id": f"r{i}",
            "input": record,
        }
        for i, record in enumerate(records)
    ]
    lines = [json.dumps(record) for record in logged]
    log_dir = Path(cfg.monitor.log_dir)
    log_dir.mkdir(parents=True, exist_ok=True)
    (log_dir / "worker-101.jsonl").write_text("\n".join(lines) + "\n")


def watch_once(cfg: DictConfig, receiver: Receiver, *overrides: str) -> int:
    paths = [f"paths.{key}={value}" for key, value in cfg.paths.items() if key != "root_dir"]
    return main(
        [
            "watch",
            "--once",
            *paths,
            f"monitor.log_dir={cfg.monitor.log_dir}",
            f"serve.model_store={cfg.serve.model_store}",
            "monitor.window_duration=1d",
            "monitor.share_threshold=0.15",
            "monitor.wandb=false",
            "monitor.alerts=[{on:drift,actions:[webhook]}]",
            f"monitor.webhook.url={receiver.url}",
            *overrides,
        ]
    )


def test_watch_once_delivers_a_signed_webhook_and_history_shows_it(project, receiver, capsys):
    assert watch_once(project, receiver) == 0
    ((headers, body),) = receiver.deliveries
    assert signed_by_secret(headers, body)
    notice = json.loads(body)
    assert notice["verdict"] == "drift" and notice["rule"] == {"on": "drift", "actions": ["webhook"]}
    assert (notice["model"], notice["version"]) == (MODEL, "1")
    assert sorted(notice["numbers"]["drifted_features"]) == sorted(SHIFTED)
    assert Path(notice["report"]).is_file() and notice["window"]["end"].endswith("00:00:00+00:00")
    assert headers["X-Forgeml-Delivery"] == notice["id"]
    alert = Registry(project.serve.model_store).events(MODEL)[-1]
    assert (alert["action"], alert["alert_action"], alert["outcome"]) == ("alert", "webhook", "delivered")
    assert alert["cause"].startswith("alert: drift (") and "5 of 30 features drifted" in alert["cause"]
    capsys.readouterr()
    assert main(["history", "--json", f"serve.model_store={project.serve.model_store}"]) == 0
    listed = json.loads(capsys.readouterr().out)["history"]["events"]
    assert [(e["action"], e.get("alert_action")) for e in listed] == [("deploy", None), ("alert", "webhook")]
    # the same window again (a cron job's next run before the day ends): nothing sent twice
    assert watch_once(project, receiver) == 0
    assert len(receiver.deliveries) == 1


def test_a_receiver_that_fails_twice_gets_the_same_signed_notice_three_times(project, receiver, monkeypatch):
    monkeypatch.setattr(webhook, "BACKOFF_S", 0.01)
    receiver.answers = [503, 502]
    assert watch_once(project, receiver) == 0
    bodies = [body for _, body in receiver.deliveries]
    assert len(bodies) == 3 and len(set(bodies)) == 1
    assert all(signed_by_secret(headers, body) for headers, body in receiver.deliveries)
    assert Registry(project.serve.model_store).events(MODEL)[-1]["outcome"] == "delivered"


def test_an_undelivered_notice_waits_in_the_outbox_and_goes_out_at_the_next_run(
    project, receiver, monkeypatch
):
    monkeypatch.setattr(webhook, "BACKOFF_S", 0.01)
    receiver.answers = [503, 503]
    assert watch_once(project, receiver, "monitor.webhook.retries=1") == 0
    outbox = Path(project.paths.reports_dir) / "webhook_outbox.json"
    (queued,) = json.loads(outbox.read_text())["pending"]
    event = Registry(project.serve.model_store).events(MODEL)[-1]
    assert event["outcome"].startswith("not delivered (HTTP 503")
    assert watch_once(project, receiver) == 0  # the window was judged: only the outbox is sent
    headers, body = receiver.deliveries[-1]
    assert len(receiver.deliveries) == 3 and json.loads(body)["id"] == queued["id"]
    assert signed_by_secret(headers, body)
    assert json.loads(outbox.read_text())["pending"] == []


@pytest.fixture(scope="module")
def served(trained_project, tmp_path_factory) -> DictConfig:
    """breast_cancer v1 then v2 deployed on a running TorchServe (model API on); a drifted log."""
    workdir = tmp_path_factory.mktemp("watched")
    cfg = serving_config(trained_project, workdir, model_api=True, version="v1")
    cfg.monitor.log_dir = str(workdir / "inference-log")
    write_drifted_log(cfg)
    with packaged_and_served(cfg):
        v2 = copy.deepcopy(cfg)
        v2.serve.version = "v2"
        package.run(v2)
        deploy.run(v2)
        yield cfg


def watching(cfg: DictConfig, workdir: Path, actions: list[str]) -> DictConfig:
    """One check of the last whole day, with this test's reports, a drift rule doing `actions`."""
    watched = copy.deepcopy(cfg)
    shutil.copytree(cfg.paths.reports_dir, workdir / "reports")
    watched.paths.reports_dir = str(workdir / "reports")
    watched.paths.log_dir = str(workdir / "logs")
    watched.monitor.merge_with(
        {
            "window_duration": "1d",
            "share_threshold": 0.15,
            "wandb": False,
            "alerts": [{"on": "drift", "actions": actions}],
        }
    )
    watched.watch.max_runs = 1
    return watched


def default_version(cfg: DictConfig) -> str:
    return serve.status(cfg)["models"][MODEL]["default_version"]


def test_a_rollback_alert_rolls_a_real_torchserve_back_and_records_why(served, tmp_path):
    assert default_version(served) == "v2"
    (judged,) = watch.run(watching(served, tmp_path, ["rollback"]))["judged"]
    assert judged["actions"] == [{"on": "drift", "action": "rollback", "outcome": "rolled back to v1"}]
    assert default_version(served) == "v1"
    event = Registry(served.serve.model_store).events(MODEL)[-1]
    assert (event["action"], event["version"], event["replaced"]) == ("rollback", "v1", "v2")
    assert event["cause"].startswith("alert: drift (") and "5 of 30 features drifted" in event["cause"]


def test_a_retrain_alert_deploys_the_new_package_through_the_gate(served, tmp_path, monkeypatch):
    settings = {
        "paths.models_dir": served.paths.models_dir,
        "paths.reports_dir": served.paths.reports_dir,
        "serve.model_store": served.serve.model_store,
        "serve.version": "v3",
    }
    packaging = [sys.executable, "-m", "forgeml.cli", "package", *(f"{k}={v}" for k, v in settings.items())]
    monkeypatch.setattr(watch, "RETRAIN_COMMAND", tuple(packaging))
    monkeypatch.chdir(tmp_path)  # outside the repository: forgeml's shipped config
    (judged,) = watch.run(watching(served, tmp_path, ["retrain"]))["judged"]
    assert judged["actions"][0]["outcome"] == "retrained and deployed (gate passed)"
    assert default_version(served) == "v3"
    event = Registry(served.serve.model_store).events(MODEL)[-1]
    assert (event["action"], event["version"], event["gate"]) == ("deploy", "v3", "gate passed")
    assert event["cause"].startswith("alert: drift (") and "5 of 30 features drifted" in event["cause"]
