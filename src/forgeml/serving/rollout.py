"""A rollout decided by live traffic: the candidate answers a shadow copy of the requests, then a
growing share of them, and each step is judged on what the gateway saw.

Steps (`serve.rollout.steps`): "shadow" (the candidate answers a sampled copy of every request,
`shadow_fraction`; its answers never reach a client and are compared with production's), then
percentages of live traffic, routed by the request's `sticky_field` so one caller sees one
version. A canary request the candidate fails is answered by production (gateway.py), so a
rollout fails no client; the failure counts against the candidate.

A step ends once the candidate answered `min_requests` (shadow: compared) and `min_minutes`
passed, and is judged on its numbers: the candidate's failures (5xx), its rejections (400s)
against production's in the same step, its p99 latency against production's, and, in the
shadow step, its agreement with production's answers. A failed judgement aborts: the candidate's
share goes to 0 at once and production answers everything. After the last step the candidate
becomes the default, as a deploy. Every step, with its numbers and verdict, is a `rollout` event
of the registry (`forgeml history`); the promotion a `deploy` event.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from forgeml.errors import ForgeError
from forgeml.serving import deployments
from forgeml.serving.local_server import LocalServer
from forgeml.serving.registry import Registry

log = logging.getLogger(__name__)

SHADOW = "shadow"
POLL_SECONDS = 1.0
# requests a step needs before a failing candidate is judged early, aborting at once
EARLY_JUDGEMENT_REQUESTS = 20
# answers each side needs before their p99 latencies are compared: the p99 of 40 requests is
# their slowest one, and one hiccup of a shared machine then aborts a good candidate
LATENCY_MIN_REQUESTS = 100
# the niceness of the candidate's workers while they answer shadow copies: production's take the
# cores first, the copies what is left
SHADOW_NICENESS = 19


@dataclass
class StepVerdict:
    step: str
    passed: bool
    reasons: list[str] = field(default_factory=list)
    numbers: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> str:
        return "passed" if self.passed else "; ".join(self.reasons)


def step_name(step: Any) -> str:
    return SHADOW if str(step) == SHADOW else f"{int(step)}%"


def routing(step: Any, settings: Any) -> dict[str, Any]:
    """The gateway's routing for a step: a shadow copy, or a sticky share of live traffic."""
    shadow = str(step) == SHADOW
    return {
        "step": step_name(step),
        "percent": 0 if shadow else int(step),
        "shadow_fraction": float(settings.shadow_fraction) if shadow else 0.0,
        "sticky_field": settings.sticky_field,
    }


def judge_step(step: Any, numbers: dict[str, Any], settings: Any, final: bool) -> StepVerdict | None:
    """The verdict on a step's numbers; None while it is too early to tell (not `final` and the
    candidate has answered too few requests to be judged)."""
    role = "shadow" if str(step) == SHADOW else "candidate"
    candidate, production = numbers.get(role, {}), numbers.get("production", {})
    answered = candidate.get("requests", 0)
    if not final and answered < EARLY_JUDGEMENT_REQUESTS:
        return None
    reasons = problems(candidate, production, settings)
    if not final and not reasons:
        return None
    return StepVerdict(
        step_name(step), not reasons, reasons, {"candidate": candidate, "production": production}
    )


def problems(candidate: dict[str, Any], production: dict[str, Any], settings: Any) -> list[str]:
    found = []
    answered = candidate.get("requests", 0)
    if not answered:
        return ["the candidate answered no request"]
    error_rate = candidate.get("failed", 0) / answered
    if error_rate > settings.max_error_rate:
        found.append(f"error rate {error_rate:.3f} > serve.rollout.max_error_rate={settings.max_error_rate}")
    rejections = candidate.get("rejected", 0) / answered
    baseline = production.get("rejected", 0) / max(production.get("requests", 0), 1)
    if rejections > baseline + settings.max_rejection_increase:
        found.append(
            f"rejects {rejections:.3f} of requests against production's {baseline:.3f} "
            f"(serve.rollout.max_rejection_increase={settings.max_rejection_increase})"
        )
    latency, production_latency = candidate.get("p99_ms"), production.get("p99_ms")
    enough = min(answered, production.get("requests", 0)) >= LATENCY_MIN_REQUESTS
    if (
        enough
        and latency
        and production_latency
        and latency > settings.max_latency_ratio * production_latency
    ):
        found.append(
            f"p99 latency {latency:.1f} ms > {settings.max_latency_ratio} x production's "
            f"{production_latency:.1f} ms (serve.rollout.max_latency_ratio)"
        )
    agreement = candidate.get("agreement")
    if agreement is not None and settings.min_agreement is not None and agreement < settings.min_agreement:
        found.append(
            f"agrees with production on {agreement:.3f} of answers "
            f"< serve.rollout.min_agreement={settings.min_agreement}"
        )
    return found


class Rollout:
    """The rollout of `candidate` of `model` on a running server."""

    def __init__(self, server: LocalServer, registry: Registry, model: str, settings: Any) -> None:
        self.server, self.registry, self.model, self.settings = server, registry, model, settings

    def current(self) -> dict[str, Any] | None:
        return self.server.state().get("rollouts", {}).get(self.model)

    def begin(self, candidate: str, **gate: Any) -> None:
        """Register the candidate beside production (READY, not the default); no traffic yet."""
        if self.current():
            raise ForgeError(
                f"a rollout of {self.model} {self.current()['candidate']} is in progress: "
                "`forgeml rollout --status`, `--promote` or `--abort`"
            )
        production = self.server.api.default_version(self.model)
        if production == candidate:
            raise ForgeError(f"{self.model} {candidate} already serves")
        api = self.server.api
        if not api.holds(self.model, candidate):
            api.register(
                deployments.served_archive(self.registry, self.model, candidate), self.server.serve.workers
            )
        self.server.wait_ready(self.model, candidate)
        self.registry.record_event(self.model, candidate, "rollout", step="begin", **gate)
        self.route({"candidate": candidate, "production": production, "started": time.time()})

    def route(self, rollout: dict[str, Any] | None) -> None:
        state = self.server.state()
        rollouts = dict(state.get("rollouts", {}))
        if rollout is None:
            rollouts.pop(self.model, None)
        else:
            rollouts[self.model] = rollout
        self.server.write_state(state | {"rollouts": rollouts})

    def enter(self, step: Any) -> None:
        self.route({**self.current(), **routing(step, self.settings), "step_started": time.time()})
        prioritize(self.server, self.model, self.current()["candidate"], str(step) == SHADOW)

    def numbers(self) -> dict[str, Any]:
        """The gateway's numbers of the current step, by role."""
        rollout = self.current() or {}
        steps = self.server.gateway_state().get("rollouts", {}).get(self.model, {})
        return steps.get(rollout.get("step"), {})

    def run_step(self, step: Any, progress: Callable[[str], None]) -> StepVerdict:
        """Hold `step` until it has its requests and minutes (or fails early); its verdict."""
        self.enter(step)
        started, role = time.monotonic(), "shadow" if str(step) == SHADOW else "candidate"
        while True:
            time.sleep(POLL_SECONDS)
            numbers = self.numbers()
            answered = numbers.get(role, {}).get("requests", 0)
            done = answered >= self.settings.min_requests and (
                time.monotonic() - started >= 60 * self.settings.min_minutes
            )
            verdict = judge_step(step, numbers, self.settings, final=done)
            progress(f"{step_name(step)}: {answered}/{self.settings.min_requests} requests")
            if verdict is not None:
                self.record(verdict)
                return verdict

    def record(self, verdict: StepVerdict) -> None:
        candidate = self.current()["candidate"]
        self.registry.record_event(
            self.model, candidate, "rollout", step=verdict.step, verdict=verdict.summary(), **verdict.numbers
        )

    def promote(self, **gate: Any) -> dict[str, Any]:
        """The candidate becomes the default, recorded as a deploy; the routing ends."""
        rollout = self.current()
        if not rollout:
            raise ForgeError(f"no rollout of {self.model} in progress")
        prioritize(self.server, self.model, rollout["candidate"], shadow=False)
        deployed = deployments.deploy(
            self.server, self.registry, self.model, rollout["candidate"], rollout=True, **gate
        )
        self.route(None)
        return deployed

    def abort(self, reason: str) -> dict[str, Any]:
        """Production answers everything again at once; the candidate stays registered, idle."""
        rollout = self.current()
        if not rollout:
            raise ForgeError(f"no rollout of {self.model} in progress")
        self.route(None)
        prioritize(self.server, self.model, rollout["candidate"], shadow=False)
        self.registry.record_event(self.model, rollout["candidate"], "rollout", step="abort", verdict=reason)
        return {"model": self.model, "aborted": rollout["candidate"], "reason": reason}


def prioritize(server: LocalServer, model: str, version: str, shadow: bool) -> None:
    """The version's workers at the lowest priority while they answer shadow copies (a copy on
    two cores otherwise delays production's next answer), at the normal one when they answer
    clients. Raising a priority again needs privileges: without them the workers keep the low
    one until `forgeml serve restart` gives the version new workers, and a warning says so."""
    niceness = SHADOW_NICENESS if shadow else 0
    for worker in server.api.describe(model, version)["workers"]:
        try:
            os.setpriority(os.PRIO_PROCESS, int(worker["pid"]), niceness)
        except ProcessLookupError:
            continue  # a worker that died is replaced at the normal priority
        except PermissionError:
            log.warning(
                "%s %s: its workers keep the shadow's low priority (raising it needs privileges); "
                "`forgeml serve restart` gives them the normal one",
                model,
                version,
            )
            return
