"""What a default `forgeml train` prints where no terminal is attached (a log, CI, DVC): no
third-party warning and no progress bar."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def forgeml(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {key: value for key, value in os.environ.items() if key != "FORGEML_CONFIG_DIR"}
    command = [sys.executable, "-m", "forgeml.cli", *args]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def test_default_training_prints_no_third_party_warning_and_no_progress_bar(tmp_path):
    assert forgeml("prepare", cwd=tmp_path).returncode == 0
    result = forgeml("train", "trainer.max_epochs=2", cwd=tmp_path)
    printed = result.stdout + result.stderr
    assert result.returncode == 0, printed
    assert "site-packages" not in printed
    assert "Warning" not in printed and "Tip:" not in printed
    assert "Epoch" not in printed and "v_num" not in printed
    assert "val/loss" in result.stdout
