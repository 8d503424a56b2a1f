"""Alert rules, the signed webhook and its outbox, and `forgeml watch`'s window state: with the
network call and the monitor replaced, so no process or server starts."""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import logging
import os
import signal
import threading
import urllib.error
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
from omegaconf import OmegaConf

from forgeml.errors import ForgeError, Refused
from forgeml.monitoring import decay
from forgeml.monitoring import webhook as webhook_module
from forgeml.monitoring.alerts import alert_payload, alert_rules, fired
from forgeml.monitoring.webhook import SIGNATURE_HEADER, Outbox, Webhook, shown
from forgeml.report import gate_numbers
from forgeml.serving import deployments
from forgeml.serving.registry import Registry
from forgeml.stages import rollback as rollback_stage
from forgeml.stages import watch

SECRET_ENV = "FORGEML_TEST_WEBHOOK_SECRET"


def report(verdict: str = "no_drift", **fields) -> dict:
    """A drift report (decay.window_report's fields) of one window."""
    message = {
        "drift": "drift: 2 of 7 features drifted (29%, threshold 50%); the predictions drifted. "
        "Retraining recommended.",
        "decay": "decay: measured accuracy 0.700 is 0.200 below the evaluation's. Retraining recommended.",
    }.get(verdict, "no drift: 0 of 7 features drifted.")
    return {
        "verdict": verdict,
        "exit_code": {"drift": 3, "decay": 3}.get(verdict, 0),
        "message": message,
        "window": {"start": "2026-01-01T00:00:00+00:00", "end": "2026-01-01T01:00:00+00:00"},
        "rows": {"reference": 1000, "current": 200, "rejected": 0},
        "latency": {"requests": 200, "p50_ms": 2.0, "p99_ms": 5.0},
        "share_drifted": 0.29,
        "drifted_features": ["age", "income"],
        "prediction": {"drifted": True},
        "estimated": {"accuracy": 0.9},
        "measured": None,
        **fields,
    }


def monitor_config(*rules: dict, **keys) -> OmegaConf:
    """The monitor keys the alerts read, as the shipped YAML sets them, with `rules`."""
    return OmegaConf.create(
        {
            "alerts": list(rules),
            "webhook": {
                "url": "http://127.0.0.1:9/hook",
                "secret_env": SECRET_ENV,
                "timeout_s": 5.0,
                "retries": 3,
            },
            "alert_thresholds": {"rejection_rate": 0.05, "p99_latency_ms": 1000.0},
            "min_estimated_accuracy": 0.8,
            "max_metric_drop": 0.05,
            "min_samples": 100,
            **keys,
        }
    )


def fired_on(monitor, window: dict) -> list[str]:
    return [firing.rule.on.value for firing in fired(alert_rules(monitor), window, monitor)]


ALL_RULES = [
    {"on": on, "actions": ["webhook"]}
    for on in ("drift", "decay", "estimated_drop", "measured_drop", "rejection_rate", "p99_latency")
]


def test_each_rule_fires_on_its_own_field_only():
    monitor = monitor_config(*ALL_RULES)
    assert fired_on(monitor, report()) == []
    assert fired_on(monitor, report("drift")) == ["drift"]
    assert fired_on(monitor, report("decay")) == ["decay"]
    assert fired_on(monitor, report(estimated={"accuracy": 0.7})) == ["estimated_drop"]
    labelled = {"labelled_rows": 150, "metrics": {"accuracy": 0.8}, "drops": {"accuracy": 0.1}}
    assert fired_on(monitor, report(measured=labelled)) == ["measured_drop"]
    assert fired_on(monitor, report(measured={**labelled, "labelled_rows": 20})) == []
    assert fired_on(monitor, report(rows={"reference": 1000, "current": 180, "rejected": 20})) == [
        "rejection_rate"
    ]
    assert fired_on(monitor, report(latency={"requests": 200, "p50_ms": 3.0, "p99_ms": 1500.0})) == [
        "p99_latency"
    ]


def test_rejections_fire_even_when_too_few_rows_were_left_for_a_verdict():
    everything_refused = report("insufficient_data", rows={"reference": 1000, "current": 0, "rejected": 300})
    assert fired_on(monitor_config(*ALL_RULES), everything_refused) == ["rejection_rate"]
    a_few_refused = report("insufficient_data", rows={"reference": 1000, "current": 0, "rejected": 30})
    assert fired_on(monitor_config(*ALL_RULES), a_few_refused) == []


def test_the_rejection_rate_counts_the_requests_served_not_only_those_sampled_into_the_log():
    sampled = {"reference": 1000, "current": 100, "rejected": 20, "served": 1000}  # rate 0.1
    assert fired_on(monitor_config(*ALL_RULES), report(rows=sampled)) == []
    assert fired_on(monitor_config(*ALL_RULES), report(rows={**sampled, "rejected": 60})) == [
        "rejection_rate"
    ]


def test_the_cause_quotes_the_verdict_without_its_advice():
    (firing,) = fired(alert_rules(monitor_config(ALL_RULES[0])), report("drift"), monitor_config())
    assert (
        firing.cause
        == "alert: drift (2 of 7 features drifted (29%, threshold 50%); the predictions drifted.)"
    )


def test_a_bare_yaml_on_key_is_read_as_on():
    monitor = monitor_config()
    monitor.alerts = OmegaConf.create("- on: drift\n  actions: [rollback]\n")
    (rule,) = alert_rules(monitor)
    assert rule.on.value == "drift" and [action.value for action in rule.actions] == ["rollback"]


@pytest.mark.parametrize(
    ("rule", "keys", "message"),
    [
        (
            {"on": "drfit", "actions": ["webhook"]},
            {},
            r"alerts\[0\].on='drfit' is not one of: drift, decay, ",
        ),
        (
            {"on": "drift", "actions": ["page"]},
            {},
            r"actions\[0\]='page' is not one of: webhook, rollback, retrain",
        ),
        ({"on": "drift", "actions": ["webhook"]}, {"webhook": {"url": None}}, "needs monitor.webhook.url"),
        (
            {"on": "estimated_drop", "actions": ["rollback"]},
            {"min_estimated_accuracy": None},
            "needs monitor.min_est",
        ),
        ({"on": "drift", "actions": "webhook"}, {}, "expected a list"),
    ],
)
def test_a_rule_that_cannot_work_is_refused_naming_the_key(rule, keys, message):
    monitor = monitor_config(rule)
    monitor.merge_with(keys)
    with pytest.raises(ForgeError, match=message):
        alert_rules(monitor)


class Receiver:
    """Stands in for urlopen: records each request, answers from `answers` (an exception or None)."""

    def __init__(self, *answers):
        self.answers, self.requests = list(answers), []

    def __call__(self, request, timeout):
        self.requests.append(request)
        answer = self.answers.pop(0) if self.answers else None
        if answer is not None:
            raise answer
        return io.BytesIO(b"ok")


def hook(monkeypatch, receiver: Receiver, waits: list | None = None) -> Webhook:
    monkeypatch.setattr(webhook_module.urllib.request, "urlopen", receiver)
    sleep = waits.append if waits is not None else lambda seconds: None
    return Webhook("http://127.0.0.1:9/hook", SECRET_ENV, 5.0, 3, sleep=sleep)


def server_error() -> urllib.error.HTTPError:
    return urllib.error.HTTPError("http://127.0.0.1:9/hook", 503, "Unavailable", {}, None)


def test_signature_is_the_hmac_of_the_exact_body_sent(monkeypatch):
    monkeypatch.setenv(SECRET_ENV, "s3cret")
    receiver = Receiver()
    assert hook(monkeypatch, receiver).send({"verdict": "drift", "id": "a1"}) is None
    (request,) = receiver.requests
    expected = hmac.new(b"s3cret", request.data, hashlib.sha256).hexdigest()
    assert request.get_header(SIGNATURE_HEADER.capitalize()) == f"sha256={expected}"
    assert json.loads(request.data) == {"verdict": "drift", "id": "a1"}


def test_without_a_secret_deliveries_go_unsigned_with_one_warning(monkeypatch, caplog):
    monkeypatch.delenv(SECRET_ENV, raising=False)
    receiver = Receiver()
    webhook = hook(monkeypatch, receiver)
    with caplog.at_level(logging.WARNING, logger=webhook_module.__name__):
        webhook.send({"id": "a"})
        webhook.send({"id": "b"})
    assert all(request.get_header(SIGNATURE_HEADER.capitalize()) is None for request in receiver.requests)
    assert len([r for r in caplog.records if "unsigned" in r.getMessage()]) == 1


def test_failed_tries_are_retried_with_exponential_backoff(monkeypatch):
    waits = []
    receiver = Receiver(server_error(), urllib.error.URLError("refused"), None)
    assert hook(monkeypatch, receiver, waits).send({"id": "a"}) is None
    assert len(receiver.requests) == 3 and waits == [1.0, 2.0]


def test_a_client_error_is_final_and_not_retried(monkeypatch):
    refused = urllib.error.HTTPError("http://127.0.0.1:9/hook", 401, "Unauthorized", {}, None)
    receiver = Receiver(refused)
    assert hook(monkeypatch, receiver).send({"id": "a"}) == "HTTP 401 Unauthorized"
    assert len(receiver.requests) == 1


def test_outbox_keeps_a_failed_delivery_and_sends_it_at_the_next_run(monkeypatch, tmp_path):
    down = Receiver(*[server_error()] * 4)
    outcome = Outbox(tmp_path / "outbox.json").deliver(
        hook(monkeypatch, down), {"id": "n1", "verdict": "drift"}
    )
    assert outcome.startswith("not delivered (HTTP 503 Unavailable)") and len(down.requests) == 4
    up = Receiver()
    restarted = Outbox(tmp_path / "outbox.json")
    assert [payload["id"] for payload in restarted.pending()] == ["n1"]
    assert restarted.flush(hook(monkeypatch, up)) == ["n1"]
    assert json.loads(up.requests[0].data) == {"id": "n1", "verdict": "drift"}
    assert restarted.pending() == []


def test_payload_carries_the_rule_verdict_numbers_and_report(tmp_path):
    (firing,) = fired(alert_rules(monitor_config(ALL_RULES[0])), report("drift"), monitor_config())
    payload = alert_payload(firing, report("drift"), "reports/drift.json", "churn", "3")
    assert payload["rule"] == {"on": "drift", "actions": ["webhook"]}
    assert (payload["verdict"], payload["model"], payload["version"]) == ("drift", "churn", "3")
    assert payload["numbers"]["drifted_features"] == ["age", "income"]
    assert payload["numbers"]["rejection_rate"] == 0.0 and payload["report"] == "reports/drift.json"
    assert payload["window"]["end"] == "2026-01-01T01:00:00+00:00"


def watch_config(make_config, *rules: str):
    """The shipped config, windows of an hour, one check, `rules` as `{on:...,actions:[...]}`."""
    alerts = f"monitor.alerts=[{','.join(rules)}]"
    return make_config("monitor.window_duration=1h", "watch.max_runs=1", "serve.model_name=m", alerts)


def fake_monitor(tmp_path: Path, verdict: str, windows: list):
    """monitor.run: writes the drift report of `verdict` and remembers the windows it judged."""

    def run(cfg):
        windows.append(cfg.monitor.window_end)
        path = tmp_path / "drift.json"
        path.write_text(json.dumps(report(verdict)))
        return {"verdict": verdict, "exit_code": 3, "report": str(path)}

    return run


def test_a_window_is_judged_once_also_after_a_restart(monkeypatch, tmp_path, make_config):
    judged = []
    monkeypatch.setattr(watch.monitor, "run", fake_monitor(tmp_path, "no_drift", judged))
    cfg = watch_config(make_config)
    first = watch.run(cfg)
    second = watch.run(cfg)  # a new process reads the state file
    assert len(judged) == 1 and len(first["judged"]) == 1 and second["judged"] == []
    end = pd.Timestamp(judged[0])
    assert end == end.floor("1h")
    state = json.loads((tmp_path / "reports" / "watch_state.json").read_text())
    assert pd.Timestamp(state["last_window_end"]) == end


def registry_with_two_deploys(store: Path, forced: bool = False) -> Registry:
    registry = Registry(store)
    for version in ("1", "2"):
        registry.record("m", {"version": version, "metrics": {}})
        registry.record_event("m", version, "deploy", forced=forced and version == "1")
    return registry


class NoServer:
    """The running server, as rollback.run sees it: the switch itself is replaced."""

    def __init__(self, serve, given=()):
        self.api = self

    def model_status(self, model):
        return {}


def test_a_rollback_action_serves_the_previous_version_and_records_the_cause(
    monkeypatch, tmp_path, make_config
):
    """The registry side of a rollback; the server switch is isolated here (the integration
    tests switch a real server)."""
    registry = registry_with_two_deploys(tmp_path / "serve" / "model-store")
    switched = []
    monkeypatch.setattr(rollback_stage, "running_server", NoServer)
    monkeypatch.setattr(
        deployments, "switch", lambda server, registry, model, version: switched.append(version)
    )
    monkeypatch.setattr(watch.monitor, "run", fake_monitor(tmp_path, "drift", []))
    cfg = watch_config(make_config, "{on:drift,actions:[rollback]}")
    (judged,) = watch.run(cfg)["judged"]
    assert judged["actions"] == [{"on": "drift", "action": "rollback", "outcome": "rolled back to 1"}]
    assert switched == ["1"] and registry.serving("m") == "1"
    event = registry.events("m")[-1]
    assert event["action"] == "rollback" and event["replaced"] == "2"
    assert event["cause"].startswith("alert: drift (2 of 7 features drifted")
    # the shift outlasts the rollback: the next window does not walk back another version
    with pytest.raises(Refused, match="serves after an automatic rollback"):
        watch.roll_back(cfg, "alert: drift (again)")


def test_no_automatic_rollback_to_a_version_that_skipped_the_gate(monkeypatch, tmp_path, make_config):
    registry = registry_with_two_deploys(tmp_path / "serve" / "model-store", forced=True)
    monkeypatch.setattr(watch.monitor, "run", fake_monitor(tmp_path, "drift", []))
    (judged,) = watch.run(watch_config(make_config, "{on:drift,actions:[rollback]}"))["judged"]
    assert judged["actions"][0]["outcome"].startswith("refused: 1 was deployed with --force")
    assert registry.serving("m") == "2"
    event = registry.events("m")[-1]
    assert (event["action"], event["alert_action"]) == ("alert", "rollback")
    assert event["outcome"].startswith("refused") and event["cause"].startswith("alert: drift")


def test_an_alert_event_changes_nothing_that_serves_and_history_shows_its_outcome(tmp_path):
    registry = registry_with_two_deploys(tmp_path)
    registry.record_event(
        "m", "2", "alert", cause="alert: drift (x)", alert_action="webhook", outcome="delivered"
    )
    assert registry.deployed("m") == ["1", "2"] and registry.serving("m") == "2"
    (alert,) = [event for event in registry.events("m") if event["action"] == "alert"]
    assert gate_numbers(alert) == "webhook: delivered"


def test_a_retrain_the_gate_refuses_is_recorded_not_raised(monkeypatch, tmp_path, make_config):
    registry = registry_with_two_deploys(tmp_path / "serve" / "model-store")
    monkeypatch.setattr(watch.monitor, "run", fake_monitor(tmp_path, "drift", []))
    repro = SimpleNamespace(args=watch.RETRAIN_COMMAND, returncode=0, stdout="", stderr="")
    monkeypatch.setattr(watch.subprocess, "run", lambda *args, **kwargs: repro)
    monkeypatch.setattr(watch, "archive_identity", lambda archive: ("m", "3"))

    def refuse(cfg, **details):
        raise Refused("m 3: test/accuracy 0.8000 is below the required minimum 0.9000")

    monkeypatch.setattr(watch.deploy, "run", refuse)
    (judged,) = watch.run(watch_config(make_config, "{on:drift,actions:[retrain]}"))["judged"]
    assert judged["actions"][0]["outcome"].startswith("refused: m 3: test/accuracy 0.8000")
    assert registry.serving("m") == "2"
    event = registry.events("m")[-1]
    assert (event["action"], event["alert_action"]) == ("alert", "retrain")


def test_sigterm_while_waiting_for_the_next_window_stops_the_watch(monkeypatch, tmp_path, make_config):
    judged = []
    monkeypatch.setattr(watch.monitor, "run", fake_monitor(tmp_path, "no_drift", judged))

    def next_window_in(moment):
        threading.Timer(0.1, os.kill, (os.getpid(), signal.SIGTERM)).start()
        return 30.0

    monkeypatch.setattr(watch, "seconds_until", next_window_in)
    cfg = watch_config(make_config)
    cfg.watch.max_runs = 2  # without the signal: a second check, 30 s later
    handler = signal.getsignal(signal.SIGTERM)
    result = watch.run(cfg)
    assert result["checks"] == 1 and len(judged) == 1
    assert signal.getsignal(signal.SIGTERM) is handler


def test_logs_name_the_webhook_host_not_its_token():
    assert (
        shown("https://user:pw@hooks.example.com:8443/services/T0/B0/XYZ?k=1")
        == "https://hooks.example.com:8443/..."
    )


def test_the_window_report_carries_the_latency_the_p99_rule_reads():
    served = pd.DataFrame({"latency_ms": [float(ms) for ms in range(1, 101)] + [None]})
    assert decay.latency(served) == {"requests": 100, "p50_ms": 50.5, "p99_ms": pytest.approx(99.01)}
    assert decay.latency(pd.DataFrame({"rejected": ["bad"]})) is None


def test_a_retrain_that_packaged_nothing_new_deploys_nothing(monkeypatch, tmp_path, make_config):
    registry = registry_with_two_deploys(tmp_path / "serve" / "model-store")
    repro = SimpleNamespace(args=watch.RETRAIN_COMMAND, returncode=0, stdout="", stderr="")
    monkeypatch.setattr(watch.subprocess, "run", lambda *args, **kwargs: repro)
    monkeypatch.setattr(watch, "archive_identity", lambda archive: ("m", "2"))
    outcome = watch.retrain(watch_config(make_config), "alert: drift (x)")
    assert outcome == watch.Outcome("retrained: the packaged version 2 serves already, nothing deployed")
    assert [event["action"] for event in registry.events("m")] == ["deploy", "deploy"]


def test_while_the_receiver_is_down_the_outbox_tries_only_its_oldest_notice(monkeypatch, tmp_path):
    outbox = Outbox(tmp_path / "outbox.json")
    outbox.save([{"id": "n1"}, {"id": "n2"}, {"id": "n3"}])
    down = Receiver(*[server_error()] * 4)
    assert outbox.flush(hook(monkeypatch, down)) == []
    assert {json.loads(request.data)["id"] for request in down.requests} == {"n1"}
    assert [payload["id"] for payload in outbox.pending()] == ["n1", "n2", "n3"]
    assert outbox.flush(hook(monkeypatch, Receiver())) == ["n1", "n2", "n3"]
    assert outbox.pending() == []
