"""rollout: a candidate version takes live traffic step by step, promoted or aborted on what
the traffic shows (serving/rollout.py).

    forgeml rollout VERSION            # every step of serve.rollout.steps, then the default
    forgeml rollout VERSION --shadow   # the shadow step only: a verdict, no client answered
    forgeml rollout VERSION --no-wait  # the first step, then back; the gateway keeps routing
    forgeml rollout --status | --promote | --abort

The promotion gate (offline metrics) is passed first, as for `forgeml deploy`. Exit 0 when the
candidate is promoted (or, with --shadow, passed the shadow step), 3 when a step failed and the
rollout was aborted: production then answers everything, and the registry holds each step's
numbers and verdict (`forgeml history`).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable
from typing import Any

from omegaconf import DictConfig

from forgeml.config import check_rollout
from forgeml.errors import EXIT_DRIFT, EXIT_OK, ForgeError
from forgeml.serving.gate import missing_evidence
from forgeml.serving.local_server import running_server
from forgeml.serving.registry import Registry
from forgeml.serving.rollout import SHADOW, Rollout
from forgeml.stages.deploy import gate


def run(cfg: DictConfig, given: Iterable[str] = ()) -> dict[str, Any]:
    settings = cfg.serve.rollout
    check_rollout(settings)
    registry = Registry(cfg.serve.model_store)
    registry.load()
    model = cfg.serve.model_name
    rollout = Rollout(running_server(cfg.serve, given), registry, model, settings)
    if settings.action == "status":
        return {"rollout": rollout.current(), "numbers": rollout.numbers() if rollout.current() else None}
    if settings.action == "abort":
        return {**rollout.abort("aborted by request (forgeml rollout --abort)"), "exit_code": EXIT_DRIFT}
    if settings.action == "promote":
        return rollout.promote(gate="promoted by request (forgeml rollout --promote)")
    candidate = cfg.candidate
    if not candidate:
        raise ForgeError("name the version to roll out: forgeml rollout VERSION (see `forgeml models`)")
    if not rollout.current():
        rollout.begin(candidate, **gate(cfg, registry, model, candidate, live=False))
    return walk(
        rollout,
        settings,
        candidate,
        lambda: missing_evidence(registry.events(model), candidate, list(cfg.gate.require)),
    )


def walk(rollout: Rollout, settings: Any, candidate: str, missing: Callable[[], list[str]]) -> dict[str, Any]:
    """Through the steps, each judged; once the last passed, the candidate is promoted if it has
    the live evidence `gate.require` asks for (`missing` says what it lacks)."""
    steps = [SHADOW] if settings.shadow_only else list(settings.steps)
    passed = []
    for step in steps:
        verdict = rollout.run_step(step, progress=Progress())
        passed.append({"step": verdict.step, "verdict": verdict.summary(), **verdict.numbers})
        if not verdict.passed:
            aborted = rollout.abort(f"{verdict.step}: {verdict.summary()}")
            return {**aborted, "steps": passed, "exit_code": EXIT_DRIFT}
        if not settings.wait:
            return {"candidate": candidate, "steps": passed, "waiting_at": verdict.step}
    if settings.shadow_only:
        rollout.abort("shadow step passed; --shadow stops there")
        return {"candidate": candidate, "steps": passed, "exit_code": EXIT_OK}
    if missing():
        aborted = rollout.abort("; ".join(missing()))
        return {**aborted, "steps": passed, "exit_code": EXIT_DRIFT}
    return {**rollout.promote(gate="promoted after every rollout step passed"), "steps": passed}


class Progress:
    """Prints a step's progress to stderr when it changes (stdout keeps the result)."""

    def __init__(self) -> None:
        self.last = ""

    def __call__(self, line: str) -> None:
        if line != self.last:
            print(f"rollout {line}", file=sys.stderr, flush=True)
            self.last = line
