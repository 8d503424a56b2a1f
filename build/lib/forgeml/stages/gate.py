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

from forgeml.layout import archive_file
from forgeml.serving.gate import promotion_gate
from forgeml.serving.registry import Registry
from forgeml.serving.server import archive_identity

EXIT_REFUSED = 1


def run(cfg: DictConfig) -> dict[str, Any]:
    model, version = archive_identity(archive_file(cfg.serve.model_store, cfg.serve.model_name))
    registry = Registry(cfg.serve.model_store)
    serving = registry.serving(model)
    baseline = registry.version(model, serving)["metrics"] if serving and serving != version else None
    candidate = registry.version(model, version)["metrics"]
    decision = promotion_gate(candidate, baseline, cfg.gate.thresholds, cfg.gate.max_regression)
    passed = decision.passed or cfg.gate.force
    return {
        "model": model,
        "version": version,
        "baseline": serving if baseline is not None else None,
        "passed": passed,
        "forced": passed and not decision.passed,
        "summary": decision.summary(),
        "exit_code": 0 if passed else EXIT_REFUSED,
    }
