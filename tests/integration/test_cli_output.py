"""The CLI's output as a shell pipeline's first command sees it: a reader may stop early."""

from __future__ import annotations

import os
import subprocess
import sys


def test_json_output_survives_a_reader_that_closes_the_pipe_early(tmp_path):
    """`forgeml models --json | head -c 200`: the reader is gone before forgeml prints."""
    reader, writer = os.pipe()
    env = {key: value for key, value in os.environ.items() if key != "FORGEML_CONFIG_DIR"}
    command = [sys.executable, "-m", "forgeml.cli", "models", "--json", f"serve.model_store={tmp_path}"]
    process = subprocess.Popen(
        command, cwd=tmp_path, env=env, stdout=writer, stderr=subprocess.PIPE, text=True
    )
    os.close(writer)
    os.close(reader)  # before the CLI has even imported its stage
    _, errors = process.communicate(timeout=120)
    assert "Traceback" not in errors and "BrokenPipeError" not in errors, errors
    assert process.returncode == 0, errors
