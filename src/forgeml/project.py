"""`forgeml init DIR [--data FILE] [--target COLUMN] [--name NAME]`: a new forgeml project.

DIR becomes a git + DVC repository (DVC's hydra integration on) holding only the project's own
files: conf/config.yaml (its choices on top of forgeml's shipped defaults), conf/data/<name>.yaml
and data/raw/<file> when --data is given, params.yaml composed, dvc.yaml (prepare -> train ->
evaluate -> package -> monitor, depending on the project's data, params and src/, never on
forgeml's source), src/ for its own code, serve/ (Dockerfile, KServe and HPA manifests for this
model), .gitignore, .dvcignore, a CI workflow and a README. `cd DIR && dvc repro` then trains,
evaluates and packages.

Everything is checked before anything is written (DIR empty, the data file there, the target one
of its columns: else exit 2), and the project is built in a temporary directory beside DIR that
is renamed into place only when complete, so a failure leaves nothing behind.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from forgeml import __version__
from forgeml.errors import ForgeError
from forgeml.io import current_umask

TEMPLATES = Path(__file__).with_name("templates")
# the serving templates are this repository's own example project's files, for this model name
TEMPLATE_MODEL = "breast_cancer"
MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
BASE_LINE = "  - /forgeml_base@_here_\n"
# project file -> template (under TEMPLATES/project); written as they are. No template is
# named dvc.yaml: DVC would take it for a pipeline of the repository holding it (this one)
PROJECT_FILES = {
    "dvc.yaml": "dvc.yaml.in",
    ".gitignore": "gitignore",
    ".dvcignore": "dvcignore",
    ".github/workflows/forgeml.yml": "workflow/forgeml.yml",
}
# empty directories git must keep: the raw data, the project's code, the inference log
KEEP = ("data/raw/.gitkeep", "src/.gitkeep", "serve/inference-log/.gitkeep")
DVC_CONFIG = {
    "core": {"analytics": "false"},
    "hydra": {"enabled": "true", "config_dir": "conf", "config_name": "config"},
}


@dataclass
class Plan:
    """What `forgeml init` writes, checked before anything is."""

    directory: Path
    name: str
    data: Path | None = None
    target: str | None = None


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="forgeml init", description=__doc__.splitlines()[0])
    parser.add_argument("directory", type=Path, help="a new or empty directory")
    parser.add_argument("--data", type=Path, help="a CSV or Parquet file, copied to data/raw/")
    parser.add_argument("--target", help="the column to predict (with --data)")
    parser.add_argument("--name", help="the data's and the model's name (default: the data file's name)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args(argv)
    try:
        plan = check(args.directory, args.data, args.target, args.name)
        result = create(plan)
    except ForgeError as error:
        print(f"forgeml init: error: {error}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps({"init": result}, indent=2))
    else:
        show_next_steps(result)
    return 0


def check(directory: Path, data: Path | None, target: str | None, name: str | None) -> Plan:
    """Every refusal, before anything is written."""
    if directory.exists() and (not directory.is_dir() or any(directory.iterdir())):
        raise ForgeError(
            f"{directory} is not empty: forgeml init creates a project in a new or empty directory"
        )
    if data is None:
        if target or name:
            raise ForgeError("--target and --name describe the data: give the file with --data")
        return Plan(directory, TEMPLATE_MODEL)
    if not data.is_file():
        raise ForgeError(f"data file not found: {data}")
    from forgeml.tables import read_header, table_format  # pandas: only for a project with data

    table_format(data, key="--data")
    if not target:
        raise ForgeError("say which column to predict: --target COLUMN")
    columns = read_header(data)
    if target not in columns:
        raise ForgeError(f"--target {target} is not a column of {data}; its columns: {', '.join(columns)}")
    name = name or re.sub(r"[^A-Za-z0-9_.-]", "_", data.stem)
    if not MODEL_NAME.match(name):
        raise ForgeError(
            f"--name {name}: use letters, digits, '_', '-' and '.', starting with a letter or digit"
        )
    return Plan(directory, name, data, target)


def create(plan: Plan) -> dict[str, Any]:
    """Build the project beside its directory, then rename it into place."""
    target = plan.directory.resolve()
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.init-", dir=target.parent))
    staging.chmod(0o777 & ~current_umask())
    try:
        write_project(staging, plan)
        if target.exists():
            target.rmdir()
        staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return {
        "project": str(target),
        "name": plan.name,
        "data": f"data/raw/{plan.data.name}" if plan.data else f"{TEMPLATE_MODEL} (bundled example)",
        "target": plan.target,
        "forgeml_version": __version__,
        "next": next_commands(plan),
    }


def write_project(root: Path, plan: Plan) -> None:
    for name in KEEP:
        write(root / name, "")
    for name, template in PROJECT_FILES.items():
        text = (TEMPLATES / "project" / template).read_text(encoding="utf-8")
        write(root / name, text.replace("__FORGEML_VERSION__", __version__))
    write(root / "conf" / "config.yaml", project_config(plan))
    readme = (TEMPLATES / "project" / "README.md").read_text(encoding="utf-8")
    write(root / "README.md", readme.replace("__NAME__", plan.name))
    if plan.data:
        shutil.copyfile(plan.data, root / "data" / "raw" / plan.data.name)
        write(root / "conf" / "data" / f"{plan.name}.yaml", data_config(plan))
    for path, text in serving_files(plan.name).items():
        write(root / path, text)
    init_repositories(root)
    compose_params(root)


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def project_config(plan: Plan) -> str:
    """The template's conf/config.yaml, choosing the project's data when it has its own."""
    text = (TEMPLATES / "project" / "conf" / "config.yaml").read_text(encoding="utf-8")
    if plan.data:
        text = text.replace(BASE_LINE, f"{BASE_LINE}  - override data: {plan.name}\n")
    return text


def data_config(plan: Plan) -> str:
    return (
        f"# {plan.name}: data/raw/{plan.data.name}, predicting `{plan.target}` (written by forgeml init).\n"
        "# Column types are inferred (numbers: numeric, anything else: categorical); say otherwise\n"
        "# with `features: {column: categorical}`, leave columns out with `drop: [id]`.\n"
        "# `task: auto` infers classification or regression from the target.\n"
        "defaults:\n"
        "  - /schema/data/file@_here_\n"
        "  - _self_\n"
        f"name: {plan.name}\n"
        f"path: data/raw/{plan.data.name}\n"
        f"target: {json.dumps(plan.target)}\n"
        "task: auto\n"
        "source:\n"
        "  _target_: forgeml.data.sources.read_table\n"
        "  path: ${data.path}\n"
    )


def serving_files(name: str) -> dict[str, str]:
    """serve/Dockerfile and serve/k8s/* for this model: the shipped templates with the example's
    model name replaced (Kubernetes names take '-' where the model name has '_')."""
    templates = TEMPLATES / "serve"
    kube_name = re.sub(r"[^a-z0-9-]", "-", name.lower()).strip("-")
    files = {}
    for path in sorted(templates.rglob("*")):
        if path.is_file() and path.name != "__init__.py":
            text = path.read_text(encoding="utf-8")
            text = text.replace(TEMPLATE_MODEL, name).replace(TEMPLATE_MODEL.replace("_", "-"), kube_name)
            files[f"serve/{path.relative_to(templates)}"] = text
    return files


def init_repositories(root: Path) -> None:
    """git init, dvc init, and DVC's hydra integration on (so `dvc exp run -S` composes conf/)."""
    from dvc.repo import Repo

    try:
        subprocess.run(["git", "init", "-q", str(root)], check=True, capture_output=True, text=True)
    except (OSError, subprocess.CalledProcessError) as error:
        raise ForgeError(f"git init failed: {getattr(error, 'stderr', None) or error}") from error
    with contextlib.redirect_stdout(io.StringIO()):  # DVC's "Initialized DVC repository" notice
        repo = Repo.init(str(root))
    with repo.config.edit() as config:
        for section, values in DVC_CONFIG.items():
            config.setdefault(section, {}).update(values)
    repo.close()


def compose_params(root: Path) -> None:
    """params.yaml: the project's conf/ over forgeml's defaults, resolved (`forgeml compose`)."""
    from hydra import compose, initialize_config_dir

    from forgeml.stages import compose as compose_stage

    with initialize_config_dir(str(root / "conf"), version_base="1.3"):
        compose_stage.run(compose("config"), output=str(root / compose_stage.PARAMS_FILE))


def next_commands(plan: Plan) -> list[str]:
    return [
        f"cd {plan.directory}",
        "dvc repro",
        "git add -A && git commit -m 'forgeml init'",
        "forgeml serve start && forgeml deploy",
    ]


def show_next_steps(result: dict[str, Any]) -> None:
    from forgeml.report import console

    out = console()
    out.print(f"[bold green]created[/] {result['project']} (forgeml {result['forgeml_version']})")
    out.print(
        f"model {result['name']}, data {result['data']}"
        + (f", target {result['target']}" if result["target"] else "")
    )
    out.print("next:")
    for command in result["next"]:
        out.print(f"  {command}")
