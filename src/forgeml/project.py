"""`forgeml init DIR [--data FILE] [--target COLUMN] [--name NAME]`: a new forgeml project.

DIR becomes a git + DVC repository (DVC's hydra integration on) holding only the project's own
files: conf/config.yaml (its choices on top of forgeml's shipped defaults), conf/data/<name>.yaml
and data/raw/<file> when --data is given, params.yaml composed, dvc.yaml (prepare -> train ->
evaluate -> package -> monitor, depending on the project's data, params and src/, never on
forgeml's source), src/ for its own code, serve/ (Dockerfile, KServe and HPA manifests for this
model, and the InferenceService of each percentage step of serve.rollout.steps), .gitignore,
.dvcignore, a CI workflow and a README, all in a first commit, so that `cd DIR && dvc repro`
trains, evaluates and packages, and `dvc exp run -S ...` works at once. With --data it also shows
the data at a glance: rows, inferred column types, task and classes, rows without a target (which
`prepare` refuses unless `data.on_missing_target=drop`), constant columns.

Everything is checked before anything is written (DIR empty, the data file there, the target one
of its columns: else exit 2), and the project is built in a temporary directory beside DIR that
is renamed into place only when complete, so a failure leaves nothing behind.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from forgeml import __version__
from forgeml.errors import ForgeError
from forgeml.io import current_umask, quiet_logger
from forgeml.layout import INFERENCE_SERVICE, KUBERNETES_DIR
from forgeml.serving.kserve import rollout_manifests

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
# a data file larger than this is not read whole for init's summary
SUMMARY_MAX_BYTES = 256 * 2**20
# the first commit's author where the user has no git identity (a fresh machine, CI)
INIT_IDENTITY = ("-c", "user.name=forgeml init", "-c", "user.email=forgeml-init@localhost")
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
        "summary": data_summary(plan),
        "next": next_commands(plan),
    }


def data_summary(plan: Plan) -> dict[str, Any] | None:
    """The data at a glance (checks.describe_table); None for the bundled example or a file too
    large to read whole here (prepare streams those)."""
    if plan.data is None or plan.data.stat().st_size > SUMMARY_MAX_BYTES:
        return None
    from forgeml.data.checks import describe_table
    from forgeml.data.sources import read_table

    frame = read_table(str(plan.data))
    frame.columns = frame.columns.map(str)
    return describe_table(frame, plan.target)


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
    serving = serving_files(plan.name)
    for path, text in serving.items():
        write(root / path, text)
    init_repositories(root)
    cfg = compose_params(root)
    inference_service = serving[f"{KUBERNETES_DIR}/{INFERENCE_SERVICE}"]
    for path, text in rollout_manifests(inference_service, cfg.serve.rollout.steps).items():
        write(root / path, text)
    first_commit(root)


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

    git(root, "init", "-q")
    with quiet_logger("dvc"):  # "Initialized DVC repository ... You can now commit": init commits
        repo = Repo.init(str(root))
    with repo.config.edit() as config:
        for section, values in DVC_CONFIG.items():
            config.setdefault(section, {}).update(values)
    repo.close()


def first_commit(root: Path) -> None:
    """Everything init wrote, committed: `dvc exp run` needs a commit to start from. Without a
    git identity of the user's, the commit is signed as forgeml init's."""
    identity = [] if git(root, "var", "GIT_COMMITTER_IDENT", check=False).returncode == 0 else INIT_IDENTITY
    git(root, "add", "-A")
    git(root, *identity, "commit", "-q", "-m", "forgeml init")


def git(root: Path, *arguments: str, check: bool = True) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(
            ["git", "-C", str(root), *arguments], check=check, capture_output=True, text=True
        )
    except (OSError, subprocess.CalledProcessError) as error:
        command = " ".join(arguments)
        raise ForgeError(f"git {command} failed: {getattr(error, 'stderr', None) or error}") from error


def compose_params(root: Path) -> DictConfig:
    """params.yaml: the project's conf/ over forgeml's defaults, resolved (`forgeml compose`);
    returns the composed config."""
    from hydra import compose, initialize_config_dir

    from forgeml.stages import compose as compose_stage

    with initialize_config_dir(str(root / "conf"), version_base="1.3"):
        cfg = compose("config")
    compose_stage.run(cfg, output=str(root / compose_stage.PARAMS_FILE))
    return cfg


def next_commands(plan: Plan) -> list[str]:
    return [
        f"cd {plan.directory}",
        "dvc repro",
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
    if result["summary"]:
        show_summary(out, result["summary"], result["name"])
    out.print("next:")
    for command in result["next"]:
        out.print(f"  {command}")


def show_summary(out: Any, summary: dict[str, Any], name: str) -> None:
    """What init found in the data, and what `prepare` would refuse."""
    types: dict[str, list[str]] = {}
    for column, kind in summary["types"].items():
        types.setdefault(kind, []).append(column)
    out.print(f"data: {summary['rows']} rows, {summary['columns']} columns, task {summary['task']}")
    for kind, columns in types.items():
        out.print(f"  {kind}: {', '.join(columns)}")
    if "classes" in summary:
        out.print(
            "  classes: " + ", ".join(f"{label} ({count})" for label, count in summary["classes"].items())
        )
    if summary["constant_columns"]:
        out.print(f"  [yellow]constant, nothing to learn from:[/] {', '.join(summary['constant_columns'])}")
    if summary["empty_targets"]:
        out.print(
            f"  [yellow]{summary['empty_targets']} rows have no target:[/] prepare refuses them; "
            f"leave them out with `on_missing_target: drop` in conf/data/{name}.yaml"
        )
