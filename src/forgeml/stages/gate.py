"""gate: the promotion gate alone, for CI: may the packaged version replace what serves?

The candidate is serve/model-store/<serve.model_name>.mar's version in the registry; the
baseline the version the registry says serves (its last deploy or rollback), if another.
Exit 0 when the gate passes, 1 when it refuses (the reasons quote the numbers), so a CI job
fails on a worse model before anything is deployed. `forgeml deploy` applies the same gate
against the running server.
"""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig

from forgeml.errors import EXIT_OK, EXIT_REFUSED
from forgeml.layout import archive_file
from forgeml.serving.archive import archive_identity
from forgeml.serving.gate import judge
from forgeml.serving.registry import Registry


def run(cfg: DictConfig) -> dict[str, Any]:
    model, version = archive_identity(archive_file(cfg.serve.model_store, cfg.serve.model_name))
    judgement = judge(Registry(cfg.serve.model_store), model, version, cfg.gate)
    decision = judgement.decision
    passed = decision.passed or cfg.gate.force
    return {
        "model": model,
        "version": version,
        "baseline": judgement.serving if judgement.baseline is not None else None,
        "passed": passed,
        "forced": passed and not decision.passed,
        "summary": decision.summary(),
        "exit_code": EXIT_OK if passed else EXIT_REFUSED,
    }
