"""deploy: put the packaged version of the model on the running TorchServe, if the gate agrees.

The promotion gate runs first: the candidate's test metrics (recorded in the registry by
`forgeml package`) must exist (a model never evaluated is refused), meet `gate.thresholds` and be
no worse than the version serving now by more than `gate.max_regression`; a refusal quotes the
numbers. `--force` (gate.force=true) deploys anyway and says so loudly, in the log and in the
registry (`forced: true`).

Then the running server (local_server.py) registers the registry's copy of the version, waits
until its workers are READY and makes it the default, while the version before answers: no
restart, no request lost, the clients' keys and the server's TLS unchanged. The registry
records the deploy with the gate's numbers, user and host (`forgeml history`); the previous
version stays registered, so `forgeml rollback` can return to it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from omegaconf import DictConfig

from forgeml.config import check_gate
from forgeml.errors import Refused
from forgeml.layout import archive_file
from forgeml.serving import deployments
from forgeml.serving.archive import archive_identity
from forgeml.serving.gate import GateDecision, judge, missing_evidence
from forgeml.serving.local_server import running_server
from forgeml.serving.registry import Registry

log = logging.getLogger(__name__)


def run(cfg: DictConfig, given: Iterable[str] = (), **details: Any) -> dict[str, Any]:
    """`given`: the settings the command line named (one contradicting the running server is
    refused); `details` go into the registry's event (`forgeml watch` records the alert's cause)."""
    registry = Registry(cfg.serve.model_store)
    registry.load()  # a damaged registry stops here, before the server is touched
    server = running_server(cfg.serve, given)
    model, version = archive_identity(archive_file(cfg.serve.model_store, cfg.serve.model_name))
    numbers = gate(cfg, registry, model, version)
    deployed = deployments.deploy(server, registry, model, version, **numbers, **details)
    return {**deployed, "gate": numbers["gate"]}


def gate(cfg: DictConfig, registry: Registry, model: str, version: str, live: bool = True) -> dict[str, Any]:
    """The gate's verdict on `version` against the version serving now, with the numbers it
    compared; raises Refused (exit 1, as `forgeml gate`) on a refusal unless forced. `live`:
    also the live evidence `gate.require` asks for (a rollout asks for it before its last step,
    not before its first)."""
    check_gate(cfg.gate)
    judgement = judge(registry, model, version, cfg.gate)
    decision = judgement.decision
    if live:
        missing = missing_evidence(registry.events(model), version, list(cfg.gate.require))
        decision = GateDecision(decision.passed and not missing, [*decision.reasons, *missing])
    if not decision.passed:
        if not cfg.gate.force:
            raise Refused(f"{model} {version}: {decision.summary()} (--force deploys anyway)")
        log.warning("DEPLOYING %s %s DESPITE THE GATE (--force): %s", model, version, decision.summary())
    return {
        "forced": not decision.passed,
        "gate": decision.summary(),
        "metrics": judgement.candidate,
        "replaced": judgement.serving,
        "replaced_metrics": judgement.baseline,
    }
