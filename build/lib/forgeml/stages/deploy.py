"""deploy: put the packaged version of the model on the running TorchServe, if the gate agrees.

The promotion gate runs first: the candidate's test metrics (recorded in the registry by
`forgeml package`) must meet `gate.thresholds` and be no worse than the version serving now by
more than `gate.max_regression`; a refusal quotes the numbers. `--force` (gate.force=true)
deploys anyway and says so loudly, in the log and in the registry.

Then it registers serve/model-store/<serve.model_name>.mar (the model API must be on: start the
server with `serve.model_api=true`), waits until its workers are READY and makes it the default
version. The previous version stays registered, so `forgeml rollback` can return to it.
"""

from __future__ import annotations

import logging
from typing import Any

from omegaconf import DictConfig

from forgeml.errors import ForgeError
from forgeml.layout import archive_file
from forgeml.serving.gate import GateDecision, promotion_gate
from forgeml.serving.registry import Registry
from forgeml.serving.server import TorchServe, archive_identity

log = logging.getLogger(__name__)


def run(cfg: DictConfig) -> dict[str, Any]:
    server = TorchServe(cfg.serve)
    if server.pid() is None:
        raise ForgeError("no TorchServe running; start one with `forgeml serve start`")
    archive = archive_file(cfg.serve.model_store, cfg.serve.model_name)
    model, version = archive_identity(archive)
    registry = Registry(cfg.serve.model_store)
    decision = gate(cfg, registry, model, version, serving=current_version(server, model))
    deployed = server.deploy(archive)
    registry.record_event(model, version, "deploy", forced=not decision.passed, gate=decision.summary())
    return {**deployed, "gate": decision.summary()}


def current_version(server: TorchServe, model: str) -> str | None:
    return server.default_version(model) if model in server.model_names() else None


def gate(cfg: DictConfig, registry: Registry, model: str, version: str, serving: str | None) -> GateDecision:
    candidate = registry.version(model, version)["metrics"]
    baseline = None
    if serving and serving != version:
        known = {entry["version"]: entry for entry in registry.versions(model)}
        baseline = known[serving]["metrics"] if serving in known else None
    decision = promotion_gate(candidate, baseline, cfg.gate.thresholds, cfg.gate.max_regression)
    if not decision.passed:
        if not cfg.gate.force:
            raise ForgeError(f"{model} {version}: {decision.summary()} (--force deploys anyway)")
        log.warning("DEPLOYING %s %s DESPITE THE GATE (--force): %s", model, version, decision.summary())
    return decision
