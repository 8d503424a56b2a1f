"""What commands print for people fits an 80-column terminal: summary metrics (per-class ones
are in `--json`), version ids whole, one line per event."""

from __future__ import annotations

from rich.console import Console

from forgeml.report import show

VERSION = "7e3363a361f889ef"
METRICS = {
    "test/accuracy": 0.9649,
    "test/f1_macro": 0.9621,
    "test/auroc": 0.995,
    **{f"test/recall/class_{k}": 0.9 for k in range(4)},
    **{f"test/precision/class_{k}": 0.9 for k in range(4)},
}


def printed(stage: str, result: dict, monkeypatch) -> list[str]:
    console = Console(width=80, record=True, soft_wrap=False, highlight=False)
    monkeypatch.setattr("forgeml.report.console", lambda: console)
    show(stage, result)
    return console.export_text().splitlines()


def test_models_table_fits_80_columns_with_whole_versions_and_summary_metrics(monkeypatch):
    entry = {
        "version": VERSION,
        "serving": True,
        "created_at": "2026-12-07T21:20:05+00:00",
        "metrics": METRICS,
    }
    lines = printed("models", {"registry": "serve/model-store", "models": {"churn": [entry]}}, monkeypatch)
    assert max(map(len, lines)) <= 80
    assert any(VERSION in line for line in lines)
    text = "\n".join(lines)
    assert "accuracy 0.9649" in text and "class_0" not in text
    assert len(lines) <= 8


def test_history_is_one_line_per_event_with_the_gate_summary(monkeypatch):
    events = [
        {"at": "2026-12-07T21:20:05+00:00", "model": "churn", "action": "deploy", "version": VERSION,
         "gate": "gate passed", "metrics": METRICS, "user": "ci", "host": "runner"},
        {"at": "2026-12-07T22:00:00+00:00", "model": "churn", "action": "rollback", "version": "v1",
         "replaced": VERSION, "cause": "alert: drift (age)", "user": "ci", "host": "runner"},
    ]  # fmt: skip
    console = Console(width=400, record=True, highlight=False)
    monkeypatch.setattr("forgeml.report.console", lambda: console)
    show("history", {"registry": "serve/model-store", "events": events})
    lines = console.export_text().splitlines()
    assert len(lines) == 3
    assert f"deploy {VERSION}: gate passed; accuracy 0.9649" in lines[1] and "class_0" not in lines[1]
    assert f"rollback v1: back from {VERSION} (alert: drift (age))" in lines[2]


def test_history_shows_each_rollout_step_with_its_verdict_and_the_candidates_numbers(monkeypatch):
    numbers = {"requests": 41, "failed": 0, "p99_ms": 12.5, "agreement": 0.95}
    at, who = "2026-12-07T21:20:05+00:00", {"model": "churn", "user": "ci", "host": "runner"}
    events = [
        {"at": at, "action": "rollout", "version": "v2", "step": "begin", "gate": "gate passed", **who},
        {"at": at, "action": "rollout", "version": "v2", "step": "shadow", "verdict": "passed",
         "candidate": numbers, "production": {"requests": 41}, **who},
        {"at": at, "action": "rollout", "version": "v2", "step": "50%", "verdict": "error rate 0.100 > "
         "serve.rollout.max_error_rate=0.001", "candidate": {**numbers, "agreement": None}, **who},
        {"at": at, "action": "rollout", "version": "v2", "step": "abort", "verdict": "50%: error rate",
         **who},
        {"at": at, "action": "deploy", "version": "v2", "gate": "promoted after every rollout step passed",
         "rollout": True, **who},
    ]  # fmt: skip
    console = Console(width=400, record=True, highlight=False)
    monkeypatch.setattr("forgeml.report.console", lambda: console)
    show("history", {"registry": "serve/model-store", "events": events})
    lines = console.export_text().splitlines()[1:]
    assert "rollout v2: begin: gate passed -" in lines[0]
    assert "rollout v2: shadow: passed (41 requests, 0 failed, p99 12.5 ms, agreement 0.95) -" in lines[1]
    assert "rollout v2: 50%: error rate 0.100 > serve.rollout.max_error_rate=0.001 (41 requests, " in lines[2]
    assert "agreement" not in lines[2]
    assert "rollout v2: abort: 50%: error rate -" in lines[3]
    assert "deploy v2: promoted after every rollout step passed - ci@runner" in lines[4]


def test_package_prints_the_version_and_summary_metrics_not_the_metrics_json(monkeypatch):
    result = {
        "archive": "serve/model-store/churn.mar",
        "model": "churn",
        "version": VERSION,
        "metrics": METRICS,
    }
    lines = printed("package", result, monkeypatch)
    assert lines[0] == f"packaged churn version {VERSION}: serve/model-store/churn.mar"
    assert "{" not in "\n".join(lines) and "class_0" not in "\n".join(lines)
