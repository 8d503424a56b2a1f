"""The command line as a user runs it: `forgeml`, `dvc` and `git` in a project directory."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def run(command: list[str], cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    """`command` in `cwd` with this environment's commands first on PATH, a git identity, no DVC
    analytics and no FORGEML_CONFIG_DIR; a failure (when `check`) shows the output's tails."""
    bin_dir = os.path.dirname(sys.executable)
    env = {
        **os.environ,
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "GIT_AUTHOR_NAME": "forgeml-test",
        "GIT_AUTHOR_EMAIL": "test@example.invalid",
        "GIT_COMMITTER_NAME": "forgeml-test",
        "GIT_COMMITTER_EMAIL": "test@example.invalid",
        "DVC_NO_ANALYTICS": "1",
    }
    env.pop("FORGEML_CONFIG_DIR", None)
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    if check and result.returncode != 0:
        raise AssertionError(f"{command} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


def commit_all(repo: Path) -> None:
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-q", "-m", "snapshot"], repo)
