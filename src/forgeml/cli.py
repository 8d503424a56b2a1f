"""`forgeml <stage> [hydra overrides]`: one Hydra app per pipeline stage.

    forgeml train model=mlp data=wine trainer.max_epochs=5
    forgeml train -m model.hidden=64,128 optimizer.lr=1e-3,1e-2
    forgeml train --cfg job                      # print the composed config, do nothing
    forgeml train --params params.yaml           # run from a composed snapshot (what dvc.yaml does)
    forgeml init churn --data churn.csv --target churned   # a new project

The project's conf/ is read from the working directory (or $FORGEML_CONFIG_DIR), on top of the
config groups shipped inside forgeml; without one, forgeml's own config composes alone. The
project's src/ is importable (`model._target_: mynets.ResMLP` for src/mynets.py). Each command
prints a short summary; `--json` prints its result as JSON instead. Heavy libraries (torch,
Lightning, DVC, wandb) are imported inside the stage that needs them, so `--help` stays fast.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import inspect
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from forgeml import __version__
from forgeml.errors import ForgeError

STAGES = {
    "init": "init DIR [--data FILE] [--target COLUMN] [--name NAME]: a new forgeml project",
    "prepare": "load, check and split the data; fit preprocessing; profile the train split",
    "train": "train with Lightning; export the best model to models/",
    "evaluate": "test metrics and plots of the model in models/ -> reports/",
    "compose": "write the composed, resolved config to params.yaml",
    "package": "the model in models/ -> a TorchServe archive in serve/model-store/",
    "serve": "start | stop | status | restart | example | rotate | configure: gateway + TorchServe",
    "deploy": "make the packaged version the default on the running server",
    "rollback": "make the previously deployed version the default again",
    "models": "the model registry: every packaged version, its metrics, which one serves",
    "gate": "the promotion gate on the packaged version, alone: exit 1 when it refuses",
    "history": "every deploy, rollback and alert: time, version, gate numbers, cause, user and host",
    "predict": "batch predictions: predict input=<csv|parquet> output=<csv|parquet>",
    "monitor": "drift of the inference log vs the training data; exit 3 = drift, 4 = too few rows",
    "replay": "VERSION answers the logged traffic, against production: exit 3 = refused, 4 = too few rows",
    "watch": "judge each monitor.window_duration window once and run its alerts' actions (--once: one check)",
    "rollout": "VERSION [--shadow] [--no-wait] | --status | --promote | --abort: live traffic decides",
    "doctor": "can this machine package and serve? torch, archiver, TorchServe, Java, ports: exit 1 if not",
}
# stages that take an action first (`forgeml serve start k=v`): the action names the function
ACTIONS = {"serve": ("start", "stop", "status", "restart", "example", "rotate", "configure")}
# stages whose first argument, unless an override or a flag, is the value of a key
POSITIONAL = {"replay": "candidate", "rollout": "candidate"}
# command-line flags that stand for an override
FLAGS = {
    "--force": "gate.force=true",
    "--once": "watch.max_runs=1",
    "--shadow": "serve.rollout.shadow_only=true",
    "--no-wait": "serve.rollout.wait=false",
    "--status": "serve.rollout.action=status",
    "--promote": "serve.rollout.action=promote",
    "--abort": "serve.rollout.action=abort",
}
# stages that only read the config: no run directory, no log file
QUIET_STAGES = {
    "compose": ["hydra.output_subdir=null", "hydra.run.dir=.", "hydra/job_logging=disabled"],
    "serve": ["hydra.output_subdir=null", "hydra.run.dir=.", "hydra/job_logging=disabled"],
    "models": ["hydra.output_subdir=null", "hydra.run.dir=.", "hydra/job_logging=disabled"],
    "gate": ["hydra.output_subdir=null", "hydra.run.dir=.", "hydra/job_logging=disabled"],
    "history": ["hydra.output_subdir=null", "hydra.run.dir=.", "hydra/job_logging=disabled"],
    "doctor": ["hydra.output_subdir=null", "hydra.run.dir=.", "hydra/job_logging=disabled"],
    "rollout": ["hydra.output_subdir=null", "hydra.run.dir=.", "hydra/job_logging=disabled"],
}
# stages composed once through Hydra's Compose API unless Hydra's own flags (-m, --cfg, --help,
# ...) are given: no run directory and no log file, as when they run from a snapshot (--params)
COMPOSED_STAGES = {"monitor"}
# commands that take their own arguments instead of a config
COMMANDS = {"init": "forgeml.project"}
# the project's own code, importable by `_target_` in every stage (DVC's included)
PROJECT_SOURCE = "src"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0
    if argv[0] == "--version":
        print(f"forgeml {__version__}")
        return 0
    stage, args = argv[0], argv[1:]
    if stage in COMMANDS:
        return importlib.import_module(COMMANDS[stage]).main(args)
    if stage not in STAGES:
        print(f"forgeml: unknown stage '{stage}'; choose one of: {', '.join(STAGES)}", file=sys.stderr)
        return 2
    if stage in ACTIONS:
        if not args or args[0] not in ACTIONS[stage]:
            print(f"forgeml {stage}: choose an action: {' | '.join(ACTIONS[stage])}", file=sys.stderr)
            return 2
        stage, args = f"{stage} {args[0]}", args[1:]
    if stage in POSITIONAL and args and "=" not in args[0] and not args[0].startswith("-"):
        if "'" in args[0] or "\\" in args[0]:
            return report_error(
                stage, ForgeError(f"{args[0]!r}: a {POSITIONAL[stage]} has no quote or backslash")
            )
        # quoted: a version such as 1e5 or 007 stays the text it is
        args = [f"{POSITIONAL[stage]}='{args[0]}'", *args[1:]]
    args = [FLAGS.get(arg, arg) for arg in args]
    as_json = "--json" in args
    args = [arg for arg in args if arg != "--json"]
    add_project_source()
    try:
        run = run_from_params if "--params" in args else run_hydra_app
        if run is run_hydra_app and stage in COMPOSED_STAGES and not any(arg.startswith("-") for arg in args):
            run = run_composed
        exit_code = run(stage, args, as_json)
    except ForgeError as error:
        return report_error(stage, error)
    except Exception as error:
        message = describe_config_error(error)
        if message is None:
            raise
        print(f"forgeml {stage}: config error: {message}", file=sys.stderr)
        return 2
    return exit_code


def report_error(stage: str, error: ForgeError) -> int:
    print(f"forgeml {stage}: error: {error}", file=sys.stderr)
    return error.exit_code


def usage() -> str:
    lines = [f"forgeml {__version__}: from a YAML file to a monitored endpoint", "", "usage:"]
    lines.append("  forgeml <stage> [key=value ...] [-m] [--cfg job] [--params params.yaml] [--json]")
    lines.append("")
    lines += [f"  {name:<10} {text}" for name, text in STAGES.items()]
    lines += ["", "`forgeml <stage> --help` shows the config groups and every overridable key."]
    return "\n".join(lines)


def add_project_source() -> None:
    """The project's src/ first on sys.path, so `_target_: mynets.ResMLP` finds src/mynets.py."""
    source = Path(PROJECT_SOURCE).resolve()
    if source.is_dir() and str(source) not in sys.path:
        sys.path.insert(0, str(source))


def run_stage(
    stage: str, cfg: Any, as_json: bool = False, given: frozenset[str] = frozenset()
) -> dict[str, Any]:
    """`given`: the keys the command line set, for the stages that act on a running server and
    refuse a setting that contradicts it."""
    name, _, action = stage.partition(" ")
    module = importlib.import_module(f"forgeml.stages.{name}")
    function = getattr(module, action or "run")
    takes_given = "given" in inspect.signature(function).parameters
    result = function(cfg, given=given) if takes_given else function(cfg)
    if result and is_rank_zero():
        with reader_may_close():
            if as_json:
                print(json.dumps({stage: result}, indent=2, default=str), flush=True)
            else:
                from forgeml.report import show

                show(stage, result)
    return result


@contextlib.contextmanager
def reader_may_close() -> Iterator[None]:
    """Printing to a pipe whose reader stopped early (`forgeml models --json | head -c 200`):
    the reader took what it wanted, so the rest goes nowhere, without a traceback; stdout is
    pointed at /dev/null so that the interpreter's last flush does not fail either."""
    try:
        yield
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def exit_code_of(result: Any) -> int:
    """A stage asks for a non-zero exit through `exit_code` in its result (monitor: 3 = drift)."""
    return int(result.get("exit_code", 0)) if isinstance(result, dict) else 0


def is_rank_zero() -> bool:
    """False in the extra processes of a distributed run, which must not repeat the report."""
    return all(os.environ.get(name, "0") == "0" for name in ("RANK", "LOCAL_RANK", "NODE_RANK"))


def run_from_params(stage: str, args: list[str], as_json: bool = False) -> int:
    """Run a stage on a composed snapshot: DVC's stages use params.yaml, not conf/."""
    from omegaconf import OmegaConf

    from forgeml.config import ForgeConfig

    position = args.index("--params")
    if position + 1 >= len(args):
        raise ForgeError("--params needs a file, e.g. --params params.yaml")
    params = Path(args[position + 1])
    if not params.is_file():
        raise ForgeError(f"{params} not found; write it with `forgeml compose`")
    snapshot = OmegaConf.load(params)
    composed_by = snapshot.get("forgeml_version")
    if composed_by != __version__:
        raise ForgeError(
            f"{params} was composed by forgeml {composed_by or 'before 0.1.0'}, this is forgeml "
            f"{__version__}: run `forgeml compose` (then `dvc repro` re-runs every stage with it)"
        )
    cfg = OmegaConf.merge(OmegaConf.structured(ForgeConfig), snapshot)
    apply_overrides(cfg, [*args[:position], *args[position + 2 :]], params)
    return exit_code_of(run_stage(stage, cfg, as_json, given_keys(args)))


def given_keys(args: list[str]) -> frozenset[str]:
    """The config keys that `key=value` arguments set (`+key=`, `++key=` and `~key` included)."""
    return frozenset(arg.partition("=")[0].lstrip("+~") for arg in args if "=" in arg or arg.startswith("~"))


def apply_overrides(cfg: Any, overrides: list[str], params: Path) -> None:
    """`key=value` overrides on a composed snapshot, each checked by the schema; what a snapshot
    cannot take (a config group's choice, adding or deleting keys) is refused, never dropped."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf import OmegaConf

    for override in OverridesParser.create().parse_overrides(overrides):
        key = override.key_or_group
        if override.is_add() or override.is_delete() or override.is_sweep_override():
            raise ForgeError(f"{override.input_line}: --params {params} takes plain key=value overrides")
        if OmegaConf.is_dict(OmegaConf.select(cfg, key)) and isinstance(override.value(), str):
            raise ForgeError(
                f"{override.input_line} chooses a config group, which a composed snapshot cannot: "
                f"`forgeml compose {override.input_line}` writes {params} with it"
            )
        OmegaConf.update(cfg, key, override.value(), merge=False)


def config_source() -> tuple[str, str]:
    """(config_path, config_name) for Hydra: the project's conf/config.yaml, which starts from
    forgeml's shipped defaults; without one, those defaults alone (a project conf/ directory
    still comes first on the search path, so its own options are found)."""
    from forgeml.config import BASE_CONFIG, PACKAGE_CONFIG

    directory = Path(os.environ.get("FORGEML_CONFIG_DIR", "conf")).resolve()
    if (directory / "config.yaml").is_file():
        return str(directory), "config"
    return (str(directory) if directory.is_dir() else PACKAGE_CONFIG), BASE_CONFIG


def run_composed(stage: str, args: list[str], as_json: bool = False) -> int:
    """Run a stage on the config composed once through Hydra's Compose API. hydra.main composes
    twice (once only to learn the run mode) and sets up a run directory and logging, about a
    second on two cores: most of what `forgeml monitor` may take on top of its data."""
    from hydra import compose

    config_path, config_name = config_source()
    with hydra_initialized(config_path):
        cfg = compose(config_name, overrides=args)
    return exit_code_of(run_stage(stage, cfg, as_json))


def hydra_initialized(config_path: str) -> contextlib.AbstractContextManager[Any]:
    """Hydra initialised on a config directory, or on forgeml's shipped config (a pkg:// path)."""
    from hydra import initialize_config_dir, initialize_config_module

    module = config_path.removeprefix("pkg://")
    if module != config_path:
        return initialize_config_module(module, version_base="1.3")
    return initialize_config_dir(config_path, version_base="1.3")


def run_hydra_app(stage: str, args: list[str], as_json: bool = False) -> int:
    import hydra

    # errors reach main() as exceptions, which turns them into one readable message
    os.environ["HYDRA_FULL_ERROR"] = "1"
    script = sys.argv[0]
    overrides = [*args, *QUIET_STAGES.get(stage.partition(" ")[0], [])]
    exit_codes: list[int] = []

    def task(cfg: Any) -> Any:
        # what a relaunch re-runs (Lightning's DDP starts each rank as `forgeml <stage> ...`)
        sys.argv = [script, stage, *args]
        try:
            result = run_stage(stage, cfg, as_json, given_keys(args))
        except ForgeError as error:
            # reported here, not raised through Hydra, which would print the overrides first
            exit_codes.append(report_error(stage, error))
            return None
        exit_codes.append(exit_code_of(result))
        metric = cfg.get("optimized_metric")
        return result.get(metric) if metric and result else result

    sys.argv = [script, *overrides]
    config_path, config_name = config_source()
    app = hydra.main(config_path=config_path, config_name=config_name, version_base="1.3")(task)
    try:
        app()
    finally:
        sys.argv = [script, stage, *args]
    # a multirun runs several jobs: the first that asked for a non-zero exit decides
    return next((code for code in exit_codes if code), 0)


def describe_config_error(error: BaseException) -> str | None:
    """One readable message for a Hydra composition error, naming the key and what is valid."""
    from hydra.errors import HydraException
    from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException

    if not isinstance(error, HydraException | OmegaConfBaseException):
        return None
    cause = error.__cause__ or error
    schema = getattr(cause, "object_type", None)
    full_key = getattr(cause, "full_key", None)
    if isinstance(cause, ConfigAttributeError | ConfigKeyError) and dataclasses.is_dataclass(schema):
        group, _, _ = full_key.rpartition(".")
        fields = sorted(f.name for f in dataclasses.fields(schema) if not f.name.startswith("_"))
        return f"unknown key '{full_key}'; valid keys of {group or 'the root config'}: {', '.join(fields)}"
    # Hydra appends its search path to missing-group errors: the choices above it are what matters
    message = str(error).split("\nConfig search path:")[0].strip()
    if cause is not error:
        message = f"{message}\n{str(cause).strip()}"
    return message


if __name__ == "__main__":
    sys.exit(main())
