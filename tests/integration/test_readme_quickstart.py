"""The README's quick start, run as a reader runs it, so that it cannot drift from the code.

The blocks are the fenced ones after a `<!-- quickstart: NAME ... -->` comment in README.md:
- `install` is checked for form only (this environment is installed already, and installing
  downloads torch): its extras exist in pyproject.toml, its torch pin is the build `make setup`
  installs and satisfies forgeml's requirement, and the wheel the README names is this version's.
- `project` (init, doctor, repro, serve start, deploy) and `request` (`forgeml serve example`, the
  key, a curl request) run in bash as written, in a temporary directory holding the `churn.csv`
  they name (its columns are the ones the request sends); then the curl line that `forgeml serve
  example` printed runs too. The server is stopped at the end, whatever happened.

One change to what a reader does: right after `forgeml init`, the project's server ports are set
to free ones (conf/config.yaml, composed and committed), and the request block's default port is
replaced by the free one, so that the test never meets another server on this machine.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from forgeml import __version__
from tests.helpers.cli import commit_all, run
from tests.helpers.config import PROJECT_ROOT, compose_config
from tests.helpers.ports import serve_ports

pytestmark = pytest.mark.slow

README = PROJECT_ROOT / "README.md"
BLOCK = re.compile(r"<!-- quickstart: (\w+)[^>]*-->\s*```bash\n(.*?)```", re.DOTALL)
ROWS = 300


def quickstart_blocks() -> dict[str, str]:
    """{name: the block's text} of the marked blocks of README.md."""
    return dict(BLOCK.findall(README.read_text(encoding="utf-8")))


def bash(script: str, cwd: Path) -> str:
    """`script` run by bash as a reader's shell would, stopping at the first failing command
    (traced on stderr, so that a failure names it); its output."""
    return run(["bash", "-xeuo", "pipefail", "-c", script], cwd).stdout


def churn_table(path: Path) -> None:
    """A churn table like the README's: tenure and plan, churned when either says so."""
    rng = np.random.default_rng(0)
    tenure = rng.integers(1, 72, ROWS)
    plan = rng.choice(["basic", "plus", "premium"], ROWS)
    churned = np.where((tenure < 12) | (plan == "basic"), "yes", "no")
    pd.DataFrame({"tenure": tenure, "plan": plan, "churned": churned}).to_csv(path, index=False)


def split_after_init(block: str) -> tuple[str, str, str]:
    """(the block up to and including its `forgeml init` line, the project directory that line
    creates, the lines after it)."""
    lines = block.splitlines()
    [at] = [i for i, line in enumerate(lines) if line.startswith("forgeml init ")]
    directory = shlex.split(lines[at])[2]
    return "\n".join(lines[: at + 1]), directory, "\n".join(lines[at + 1 :])


def on_free_ports(project: Path) -> dict[int, int]:
    """Put the project's server on free ports (its conf/config.yaml, composed and committed);
    {default port: the free one}."""
    ports = serve_ports()
    defaults = compose_config(project).serve
    with (project / "conf/config.yaml").open("a") as config:
        config.write("serve:\n" + "".join(f"  {key}: {port}\n" for key, port in ports.items()))
    run(["forgeml", "compose"], project)
    commit_all(project)
    return {defaults[key]: port for key, port in ports.items()}


def with_ports(script: str, ports: dict[int, int]) -> str:
    for default, port in ports.items():
        script = script.replace(f"127.0.0.1:{default}/", f"127.0.0.1:{port}/")
    return script


def answer(output: str) -> dict:
    """The JSON answer a curl printed last."""
    return json.loads(output.strip().splitlines()[-1])


def test_the_readme_marks_its_quickstart_blocks():
    assert list(quickstart_blocks()) == ["install", "project", "request"]


def test_the_readme_install_block_names_what_this_repository_builds():
    tomllib = pytest.importorskip("tomllib")
    block, readme = quickstart_blocks()["install"], README.read_text(encoding="utf-8")
    project = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]
    extras = {extra for group in re.findall(r"\[([\w,]+)\]'", readme) for extra in group.split(",")}
    assert extras and extras <= set(project["optional-dependencies"]), extras
    [pin] = re.findall(r"pip install (torch==\S+)", block)
    assert f"TORCH ?= {pin}\n" in (PROJECT_ROOT / "Makefile").read_text()
    [required] = [r for r in project["dependencies"] if r.startswith("torch>")]
    from packaging.requirements import Requirement

    assert Requirement(required).specifier.contains(pin.split("==")[1])
    assert set(re.findall(r"forgeml-(\S+)-py3-none-any\.whl", readme)) == {__version__}


def test_the_readme_quickstart_creates_trains_serves_and_answers_a_request(tmp_path):
    blocks = quickstart_blocks()
    churn_table(tmp_path / "churn.csv")
    init, directory, rest = split_after_init(blocks["project"])
    bash(init, tmp_path)
    project = tmp_path / directory
    ports = on_free_ports(project)
    try:
        bash(rest, project)
        output = bash(with_ports(blocks["request"], ports), project)
        body, _ = json.JSONDecoder().raw_decode(output)
        [printed_curl] = [line for line in output.splitlines() if line.startswith("curl ")]
        from_example = answer(bash(printed_curl, project))
    finally:
        run(["forgeml", "serve", "stop"], project, check=False)
    assert [set(instance) for instance in body["instances"]] == [{"tenure", "plan"}]
    for served in (answer(output), from_example):
        [prediction] = served["predictions"]
        assert set(prediction) == {"id", "label", "probabilities"}
        assert prediction["label"] in {"no", "yes"}
        assert sum(prediction["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
