"""Alerts: which rules of `monitor.alerts` a judged window fires, and what a notice carries.

    monitor:
      alerts:
        - {"on": drift, actions: [webhook]}
        - {"on": p99_latency, actions: [webhook, rollback]}
      webhook: {url: https://hooks.example/forgeml, secret_env: FORGEML_WEBHOOK_SECRET}
      alert_thresholds: {rejection_rate: 0.05, p99_latency_ms: 1000}

Each `on` reads one field of the window's drift report (decay.window_report, reports/drift.json):

    drift           verdict "drift" (whichever drift rule fired: its message says which)
    decay           verdict "decay"
    estimated_drop  estimated (CBPE) accuracy below monitor.min_estimated_accuracy
    measured_drop   a measured score (delayed labels, at least min_samples of them) more than
                    monitor.max_metric_drop below the evaluation's
    rejection_rate  rejected / all requests above alert_thresholds.rejection_rate
    p99_latency     the 99th percentile of latency_ms above alert_thresholds.p99_latency_ms

rejection_rate and p99_latency also fire on a window too small for a drift verdict (a server
refusing everything logs no features), once it saw at least min_samples requests. The rules are
checked at setup (`alert_rules`): an unknown name lists the valid ones, and a rule that could
never fire or act (a webhook without monitor.webhook.url, estimated_drop without its limit) is
refused naming the key to set. The actions themselves run in stages/watch.py.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from forgeml.config import AlertAction, AlertOn, AlertRule
from forgeml.errors import ForgeError

PAYLOAD_FORMAT = "forgeml.alert/1"
# what a bare `on:` key becomes in YAML 1.1 (OmegaConf's and Hydra's loader)
YAML_ON = True


@dataclass(frozen=True)
class Firing:
    """A rule that fired on a window, and why (quoted in the notice and the registry's event)."""

    rule: AlertRule
    reason: str

    @property
    def cause(self) -> str:
        return f"alert: {self.rule.on.value} ({self.reason})"


def alert_rules(monitor: Any) -> list[AlertRule]:
    """`monitor.alerts`, checked: every message names the entry and the key to change."""
    rules = [parse_rule(position, entry) for position, entry in enumerate(monitor.alerts)]
    for position, rule in enumerate(rules):
        check_rule_can_act(f"monitor.alerts[{position}]", rule, monitor)
    check_webhook(monitor.webhook)
    return rules


def parse_rule(position: int, entry: Any) -> AlertRule:
    key = f"monitor.alerts[{position}]"
    if not isinstance(entry, Mapping):
        raise ForgeError(f"{key}={entry!r}: expected {{on: <event>, actions: [<action>, ...]}}")
    entry = {("on" if name is YAML_ON else name): value for name, value in entry.items()}
    unknown = sorted(set(map(str, entry)) - {"on", "actions"})
    if unknown:
        raise ForgeError(f"{key}: unknown key '{unknown[0]}'; a rule has the keys on, actions")
    on = choice(f"{key}.on", entry.get("on"), AlertOn)
    actions = entry.get("actions")
    if isinstance(actions, str) or not isinstance(actions, Sequence) or not actions:
        raise ForgeError(f"{key}.actions={actions!r}: expected a list, e.g. [webhook]")
    named = [choice(f"{key}.actions[{i}]", action, AlertAction) for i, action in enumerate(actions)]
    return AlertRule(AlertOn(on), [AlertAction(action) for action in named])


def choice(key: str, value: Any, options: type[AlertOn] | type[AlertAction]) -> str:
    valid = [option.value for option in options]
    value = getattr(value, "value", value)
    if value not in valid:
        raise ForgeError(f"{key}={value!r} is not one of: {', '.join(valid)}")
    return value


def check_rule_can_act(key: str, rule: AlertRule, monitor: Any) -> None:
    """A rule that could never fire, or fire into nothing, is a config error, not a silent no-op."""
    needs = {
        "estimated_drop": ("min_estimated_accuracy", monitor.min_estimated_accuracy),
        "measured_drop": ("max_metric_drop", monitor.max_metric_drop),
    }
    needed = needs.get(rule.on.value)
    if needed and needed[1] is None:
        raise ForgeError(f"{key}: on {rule.on.value} needs monitor.{needed[0]} (it is null)")
    if AlertAction.webhook in rule.actions and not monitor.webhook.url:
        raise ForgeError(f"{key}: the webhook action needs monitor.webhook.url (it is null)")


def check_webhook(webhook: Any) -> None:
    if webhook.timeout_s <= 0:
        raise ForgeError(f"monitor.webhook.timeout_s={webhook.timeout_s} must be positive")
    if webhook.retries < 0:
        raise ForgeError(f"monitor.webhook.retries={webhook.retries} must be at least 0")
    if webhook.url and not str(webhook.url).startswith(("http://", "https://")):
        raise ForgeError(f"monitor.webhook.url={webhook.url!r} must be an http:// or https:// URL")


def fired(rules: list[AlertRule], report: dict[str, Any], monitor: Any) -> list[Firing]:
    """The rules the window's drift report fires, in the order they are configured."""
    firings = []
    for rule in rules:
        reason = REASONS[rule.on.value](report, monitor)
        if reason is not None:
            firings.append(Firing(rule, reason))
    return firings


def verdict_reason(verdict: str) -> Callable[[dict[str, Any], Any], str | None]:
    """The verdict's own message (which rule fired), without its verdict word and advice."""

    def reason(report: dict[str, Any], monitor: Any) -> str | None:
        if report["verdict"] != verdict:
            return None
        return report["message"].removeprefix(f"{verdict}: ").removesuffix(" Retraining recommended.")

    return reason


def estimated_drop(report: dict[str, Any], monitor: Any) -> str | None:
    low, estimated = monitor.min_estimated_accuracy, report.get("estimated")
    if low is None or not estimated or estimated["accuracy"] >= low:
        return None
    return f"estimated accuracy {estimated['accuracy']:.3f} < monitor.min_estimated_accuracy={low}"


def measured_drop(report: dict[str, Any], monitor: Any) -> str | None:
    limit, measured = monitor.max_metric_drop, report.get("measured") or {}
    if limit is None or measured.get("labelled_rows", 0) < monitor.min_samples:
        return None
    dropped = [
        f"measured {name} {measured['metrics'][name]:.3f} is {drop:.3f} below the evaluation's"
        for name, drop in measured.get("drops", {}).items()
        if drop > limit
    ]
    return f"{'; '.join(dropped)} (monitor.max_metric_drop={limit})" if dropped else None


def requests_seen(rows: dict[str, Any]) -> int:
    """The window's requests: every rejected one is logged, of the accepted ones only a sample,
    so those served count where the log says them (decay.traffic), else those logged."""
    return (rows.get("served") or rows["current"]) + rows["rejected"]


def rejection_rate(report: dict[str, Any], monitor: Any) -> str | None:
    rejected = report["rows"]["rejected"]
    requests = requests_seen(report["rows"])
    limit = monitor.alert_thresholds.rejection_rate
    if requests < monitor.min_samples or rejected / requests <= limit:
        return None
    return f"{rejected} of {requests} requests rejected (> monitor.alert_thresholds.rejection_rate={limit})"


def p99_latency(report: dict[str, Any], monitor: Any) -> str | None:
    latency, limit = report.get("latency"), monitor.alert_thresholds.p99_latency_ms
    if not latency or latency["requests"] < monitor.min_samples or latency["p99_ms"] <= limit:
        return None
    return f"p99 latency {latency['p99_ms']:.1f} ms (> monitor.alert_thresholds.p99_latency_ms={limit})"


REASONS: dict[str, Callable[[dict[str, Any], Any], str | None]] = {
    "drift": verdict_reason("drift"),
    "decay": verdict_reason("decay"),
    "estimated_drop": estimated_drop,
    "measured_drop": measured_drop,
    "rejection_rate": rejection_rate,
    "p99_latency": p99_latency,
}


def alert_payload(
    firing: Firing, report: dict[str, Any], report_path: str, model: str, version: str | None
) -> dict[str, Any]:
    """The webhook's JSON body: the rule, the verdict and its numbers, where the report is.
    `id` is the delivery's: a receiver that sees it twice (a retry) can drop the copy."""
    rows = report["rows"]
    requests = requests_seen(rows)
    return {
        "format": PAYLOAD_FORMAT,
        "id": uuid.uuid4().hex,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "rule": {"on": firing.rule.on.value, "actions": [action.value for action in firing.rule.actions]},
        "reason": firing.reason,
        "verdict": report["verdict"],
        "exit_code": report["exit_code"],
        "message": report["message"],
        "model": model,
        "version": version,
        "window": report["window"],
        "numbers": {
            "rows": rows,
            "share_drifted": report.get("share_drifted"),
            "drifted_features": report.get("drifted_features"),
            "prediction_drifted": (report.get("prediction") or {}).get("drifted"),
            "estimated_accuracy": (report.get("estimated") or {}).get("accuracy"),
            "measured": (report.get("measured") or {}).get("metrics"),
            "metric_drops": (report.get("measured") or {}).get("drops"),
            "rejection_rate": rows["rejected"] / requests if requests else None,
            "p99_latency_ms": (report.get("latency") or {}).get("p99_ms"),
        },
        "report": report_path,
    }
