"""watch: judge every window of traffic once, and act on the alerts it fires.

    forgeml watch monitor.window_duration=1h            # a long-running process; Ctrl-C stops it
    forgeml watch --once monitor.window_duration=1h     # one check and exit (cron, tests)

Windows are aligned to `monitor.window_duration` from the Unix epoch (1h: each whole hour). Every
check judges the last window that has ended, unless it was judged already: the end of the last
window judged is kept in <paths.reports_dir>/watch_state.json (written atomically, saved as soon
as the verdict is known, so a restart never judges a window twice nor repeats its actions). Then
it sleeps until the next window ends. SIGTERM or Ctrl-C stops it between windows; a window being
judged is finished first. `watch.max_runs` (`--once`: 1) ends it after that many checks. Windows
that ended while no watcher ran are not judged afterwards: a check judges the last whole window
only (its report still covers `monitor.windows` windows).

A judgement is `forgeml monitor` on that window (its reports as usual, `monitor.window_end`
set to the window's end), then the rules of `monitor.alerts` (monitoring/alerts.py) on its drift
report, then each fired rule's actions in order:

    webhook   a signed JSON POST to monitor.webhook.url (monitoring/webhook.py); a failed
              delivery waits in <paths.reports_dir>/webhook_outbox.json and is sent again first
              at the next check
    rollback  to the version deployed before the serving one, if that deploy passed the gate
              (not forced), as `forgeml rollback`; once: while the version an alert rolled back
              to serves, a further rollback is refused (a shift in the traffic outlasts any
              version: it would walk back one version per window)
    retrain   `dvc repro` in the project directory, then `forgeml deploy` of the new package
              (the promotion gate first); nothing is deployed when the package is the version
              serving (DVC found nothing changed)

The registry records each action with its cause (`cause: "alert: drift (...)"`): a rollback or
deploy as such, anything else (a delivery, a refusal, a failure) as an `alert` event;
`forgeml history` lists them. An action that fails is recorded and logged, never raised past the
watcher, and no action changes the verdict. Exit 0 unless the config is wrong or a window
cannot be judged (the monitor's error, exit 2: a supervisor such as systemd restarts it).
"""

from __future__ import annotations

import copy
import logging
import signal
import subprocess
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd
from omegaconf import DictConfig

from forgeml.config import AlertRule
from forgeml.errors import ForgeError, Refused
from forgeml.io import read_json, write_json
from forgeml.layout import WATCH_STATE, WEBHOOK_OUTBOX, archive_file
from forgeml.monitoring.alerts import Firing, alert_payload, alert_rules, fired
from forgeml.monitoring.decay import parse_duration
from forgeml.monitoring.webhook import Outbox, Webhook
from forgeml.serving.archive import archive_identity
from forgeml.serving.registry import SWITCHES, Registry
from forgeml.stages import deploy, monitor, rollback

log = logging.getLogger(__name__)

STATE_FORMAT = "forgeml.watch_state/1"
# the command a retrain runs in the project directory
RETRAIN_COMMAND = ("dvc", "repro")


def run(cfg: DictConfig) -> dict[str, Any]:
    rules = alert_rules(cfg.monitor)
    span = window_span(cfg.monitor)
    if cfg.watch.max_runs is not None and cfg.watch.max_runs < 1:
        raise ForgeError(f"watch.max_runs={cfg.watch.max_runs} must be at least 1 (or null: no limit)")
    reports = Path(cfg.paths.reports_dir)
    state = WatchState(reports / WATCH_STATE)
    webhook = Webhook.from_config(cfg.monitor.webhook) if cfg.monitor.webhook.url else None
    outbox = Outbox(reports / WEBHOOK_OUTBOX)
    judged, checks = [], 0
    with stop_signals() as stop:
        while not stop.is_set():
            if webhook:
                resend(outbox, webhook)
            end = last_window_end(span)
            if state.judged(end):
                log.info("the window ending %s was judged already", end.isoformat())
            else:
                judged.append(judge(cfg, end, rules, state, webhook, outbox))
            checks += 1
            if cfg.watch.max_runs is not None and checks >= cfg.watch.max_runs:
                break
            stop.wait(seconds_until(end + span))
    return {"checks": checks, "judged": judged, "state": str(state.path)}


def window_span(monitor: DictConfig) -> pd.Timedelta:
    if monitor.window_duration is None:
        raise ForgeError("forgeml watch needs monitor.window_duration (e.g. 1h): how often to judge")
    if monitor.window_end is not None:
        raise ForgeError("forgeml watch sets monitor.window_end itself; leave it null")
    return parse_duration(monitor.window_duration)


def last_window_end(span: pd.Timedelta) -> pd.Timestamp:
    """The end of the last whole window, windows aligned to `span` from the Unix epoch."""
    return pd.Timestamp(datetime.now(timezone.utc)).floor(span)


def seconds_until(moment: pd.Timestamp) -> float:
    return max(0.0, (moment - pd.Timestamp(datetime.now(timezone.utc))).total_seconds())


@contextmanager
def stop_signals() -> Iterator[threading.Event]:
    """An event SIGTERM and SIGINT set (in the main thread; elsewhere only the caller can)."""
    stop = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return
    previous = {number: signal.getsignal(number) for number in (signal.SIGTERM, signal.SIGINT)}
    for number in previous:
        signal.signal(number, lambda number, frame: stop_requested(stop, number))
    try:
        yield stop
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def stop_requested(stop: threading.Event, number: int) -> None:
    log.info("%s: stopping after the window being judged", signal.Signals(number).name)
    stop.set()


class WatchState:
    """The end of the last window judged, kept across restarts."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def last_end(self) -> pd.Timestamp | None:
        if not self.path.is_file():
            return None
        return pd.Timestamp(read_json(self.path)["last_window_end"])

    def judged(self, end: pd.Timestamp) -> bool:
        last = self.last_end()
        return last is not None and end <= last

    def save(self, end: pd.Timestamp) -> None:
        write_json(self.path, {"format": STATE_FORMAT, "last_window_end": end.isoformat()})


def judge(
    cfg: DictConfig,
    end: pd.Timestamp,
    rules: list[AlertRule],
    state: WatchState,
    webhook: Webhook | None,
    outbox: Outbox,
) -> dict[str, Any]:
    """`forgeml monitor` on the window ending at `end`, then the actions of the rules it fired."""
    window = copy.deepcopy(cfg)
    window.monitor.window_end = end.isoformat()
    result = monitor.run(window)
    state.save(end)
    report = read_json(result["report"])
    model = cfg.monitor.model_name or cfg.serve.model_name
    registry = Registry(cfg.serve.model_store)
    version = registry.serving(model)
    actions = []
    for firing in fired(rules, report, cfg.monitor):
        log.warning("%s fired on the window ending %s", firing.cause, end.isoformat())
        payload = alert_payload(firing, report, result["report"], model, version)
        for action in firing.rule.actions:
            outcome = act(action.value, cfg, firing, payload, webhook, outbox)
            actions.append({"on": firing.rule.on.value, "action": action.value, "outcome": outcome.text})
            record(registry, model, version, firing, action.value, outcome)
    return {"window_end": end.isoformat(), "verdict": result["verdict"], "actions": actions}


@dataclass(frozen=True)
class Outcome:
    """What an action did, in words; `switched`: it changed what serves (a deploy or rollback,
    which the registry recorded with the cause already)."""

    text: str
    switched: bool = False


def act(
    action: str, cfg: DictConfig, firing: Firing, payload: dict, webhook: Webhook | None, outbox: Outbox
) -> Outcome:
    """Run one action; a refusal or failure is an outcome, logged, never raised past the watcher."""
    try:
        if action == "webhook":
            return Outcome(outbox.deliver(webhook, payload))
        return ACTIONS[action](cfg, firing.cause)
    except Refused as error:
        log.error("%s: %s refused: %s", firing.cause, action, error)
        return Outcome(f"refused: {error}")
    except ForgeError as error:
        log.error("%s: %s failed: %s", firing.cause, action, error)
        return Outcome(f"failed: {error}")


def resend(outbox: Outbox, webhook: Webhook) -> None:
    delivered = outbox.flush(webhook)
    if delivered:
        log.info("webhook: %d queued notice(s) delivered now", len(delivered))


def roll_back(cfg: DictConfig, cause: str) -> Outcome:
    """To the version deployed before the serving one, if that one went through the gate. Once
    only: a shift that outlasts a rollback would otherwise walk back one version per window."""
    registry, model = Registry(cfg.serve.model_store), cfg.serve.model_name
    switches = [event for event in registry.events(model) if event["action"] in SWITCHES]
    last = switches[-1] if switches else {}
    if last.get("action") == "rollback" and last.get("cause", "").startswith("alert:"):
        raise Refused(
            f"{last['version']} serves after an automatic rollback ({last['cause']}); "
            "roll back further with `forgeml rollback`"
        )
    stack = registry.deployed(model)
    if len(stack) >= 2 and was_forced(switches, stack[-2]):
        raise Refused(f"{stack[-2]} was deployed with --force, not through the gate: not rolled back")
    rollback.run(cfg, cause=cause)
    return Outcome(f"rolled back to {stack[-2]}", switched=True)


def was_forced(switches: list[dict[str, Any]], version: str) -> bool:
    deploys = [event for event in switches if event["action"] == "deploy" and event["version"] == version]
    return bool(deploys) and bool(deploys[-1].get("forced"))


def retrain(cfg: DictConfig, cause: str) -> Outcome:
    """`dvc repro` in the project directory, then deploy through the gate."""
    try:
        completed = subprocess.run(RETRAIN_COMMAND, capture_output=True, text=True, check=False)
    except OSError as error:
        raise ForgeError(f"{' '.join(RETRAIN_COMMAND)} could not start: {error}") from error
    if completed.returncode != 0:
        last = (completed.stderr.strip() or completed.stdout.strip()).splitlines()[-1:]
        raise ForgeError(f"{' '.join(RETRAIN_COMMAND)} exited {completed.returncode}: {' '.join(last)}")
    # nothing changed since the last retrain (DVC ran no stage): the package is what serves
    _, version = archive_identity(archive_file(cfg.serve.model_store, cfg.serve.model_name))
    if version == Registry(cfg.serve.model_store).serving(cfg.serve.model_name):
        return Outcome(f"retrained: the packaged version {version} serves already, nothing deployed")
    deployed = deploy.run(cfg, cause=cause)
    return Outcome(f"retrained and deployed ({deployed['gate']})", switched=True)


ACTIONS: dict[str, Callable[[DictConfig, str], Outcome]] = {"rollback": roll_back, "retrain": retrain}


def record(
    registry: Registry, model: str, version: str | None, firing: Firing, action: str, outcome: Outcome
) -> None:
    """An outcome that did not change what serves becomes an `alert` event of the serving
    version (a deploy or rollback was recorded as such, with the cause)."""
    if outcome.switched:
        return
    if version is None:
        log.info("%s: %s %s (no deployed version to record it with)", firing.cause, action, outcome.text)
        return
    details = {"cause": firing.cause, "alert_action": action, "outcome": outcome.text}
    registry.record_event(model, version, "alert", **details)
