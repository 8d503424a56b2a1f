"""doctor: whether this machine can package and serve, in a second, before a pipeline runs.

    forgeml doctor                 # one line per prerequisite; exit 1 when one is missing
    forgeml doctor serve.inference_port=9080 ...   # the ports you will serve on

Checks torch, torch-model-archiver, TorchServe, PyYAML for its workers, Java 11+ for its
frontend, and that the `serve` ports are free (or held by this project's running server); a
failed check names the command that fixes it.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from omegaconf import DictConfig

from forgeml.errors import EXIT_OK, EXIT_REFUSED
from forgeml.serving.local_server import LocalServer
from forgeml.serving.prerequisites import serving_checks


def run(cfg: DictConfig) -> dict[str, Any]:
    checks = serving_checks(cfg.serve, LocalServer(cfg.serve).pid())
    passed = all(check.passed for check in checks)
    return {
        "ready": passed,
        "checks": [asdict(check) for check in checks],
        "exit_code": EXIT_OK if passed else EXIT_REFUSED,
    }
