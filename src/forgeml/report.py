"""What a command prints for people: a short summary of a stage's result (`--json` prints the
result itself, for scripts and CI).

RENDERERS maps a stage to the function that draws its result; a stage without one gets a
two-column table of its result's top-level values, so a new stage prints something readable
with no code here.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from rich.console import Console
from rich.table import Table


def console() -> Console:
    # soft_wrap: long paths stay whole, so they can be copied
    return Console(soft_wrap=True, highlight=False)


def show(stage: str, result: dict[str, Any]) -> None:
    renderer = RENDERERS.get(stage) or RENDERERS.get(stage.partition(" ")[0]) or fallback
    renderer(stage, result, console())


def cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dict | list):
        return json.dumps(value, default=str)
    return "-" if value is None else str(value)


def fallback(stage: str, result: dict[str, Any], out: Console) -> None:
    """Every top-level value of the result, one row each."""
    table = Table(title=f"forgeml {stage}", show_header=False, title_justify="left")
    for key, value in result.items():
        table.add_row(key, cell(value))
    out.print(table)


def metrics(stage: str, result: dict[str, Any], out: Console) -> None:
    """Metrics (`val/loss`, `test/accuracy`, ...) as a table, grouped by their prefix."""
    table = Table(title=f"forgeml {stage}", title_justify="left")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in sorted(result.items()):
        table.add_row(key, cell(value))
    out.print(table)


def registry(stage: str, result: dict[str, Any], out: Console) -> None:
    """Every registered version, its summary test metrics (per-class ones: `--json`), and which
    one serves; the version id whole, as it is the key of deploy, rollback and history."""
    for model, versions in result["models"].items():
        table = Table(title=f"{model} ({result['registry']})", title_justify="left")
        table.add_column("version", no_wrap=True)
        for column in ("serving", "created", "test metrics"):
            table.add_column(column)
        for entry in versions:
            marker = "[bold green]serving[/]" if entry["serving"] else ""
            table.add_row(entry["version"], marker, minutes(entry["created_at"]), summary(entry["metrics"]))
        out.print(table)
    if not result["models"]:
        out.print(f"no packaged model in {result['registry']} yet: run `forgeml package` (or `dvc repro`)")


def summary(metrics: dict[str, Any] | None) -> str:
    """The model-wide metrics (`test/accuracy`), not the per-class ones (`test/recall/yes`), and
    without the split's prefix: what fits a table cell."""
    shown = [
        f"{key.split('/')[1]} {cell(value)}"
        for key, value in sorted((metrics or {}).items())
        if key.count("/") == 1
    ]
    return ", ".join(shown) or "-"


def minutes(timestamp: str) -> str:
    """An ISO 8601 time to the minute: `2026-12-07T21:20:05+00:00` -> `2026-12-07 21:20`."""
    return timestamp[:16].replace("T", " ")


def package(stage: str, result: dict[str, Any], out: Console) -> None:
    """The archive and its version; the test metrics it was recorded with, summarised."""
    out.print(f"packaged {result['model']} version {result['version']}: {result['archive']}")
    out.print(f"test metrics: {summary(result['metrics'])}")


def drift(stage: str, result: dict[str, Any], out: Console) -> None:
    """The verdict first, then what drifted, each version's numbers where several answered, and
    where the report is."""
    colour = {"drift": "bold red", "no_drift": "bold green"}.get(result.get("verdict"), "bold yellow")
    out.print(
        f"[{colour}]{result.get('verdict')}[/] (exit {result.get('exit_code')}): {result.get('message')}"
    )
    drifted = result.get("drifted_features") or []
    if drifted:
        out.print(f"drifted features ({len(drifted)}): {', '.join(drifted)}")
    versions = result.get("versions") or {}
    if len(versions) > 1:
        for version, numbers in versions.items():
            out.print(f"  version {version}: {version_line(numbers)}", markup=False)
    out.print(f"report: {result.get('report')}")


def version_line(numbers: dict[str, Any]) -> str:
    """One version's numbers in the last window, its verdict first, e.g. `decay, 600 rows, 12
    rejected, p99 24.7 ms, est. accuracy 0.595, measured accuracy 0.198` (the first measured
    metric only; `--json` has them all)."""
    parts = [numbers["verdict"], f"{numbers['rows']} rows", f"{numbers['rejected']} rejected"]
    if numbers["p99_ms"] is not None:
        parts.append(f"p99 {numbers['p99_ms']:.3g} ms")
    if numbers["estimated_accuracy"] is not None:
        parts.append(f"est. accuracy {numbers['estimated_accuracy']:.3g}")
    parts += [f"measured {name} {value:.3g}" for name, value in list((numbers["measured"] or {}).items())[:1]]
    return ", ".join(parts)


def gate(stage: str, result: dict[str, Any], out: Console) -> None:
    colour = "bold green" if result.get("passed") else "bold red"
    out.print(f"[{colour}]{'passed' if result.get('passed') else 'refused'}[/] {result.get('model')} "
              f"{result.get('version')}: {result.get('summary')}")  # fmt: skip


def replayed(stage: str, result: dict[str, Any], out: Console) -> None:
    """The verdict first, with the numbers over every replayed request, then the report."""
    colour = {"passed": "bold green", "refused": "bold red"}.get(result["verdict"], "bold yellow")
    out.print(
        f"[{colour}]{result['verdict']}[/] (exit {result['exit_code']}): {result['message']}", markup=True
    )
    out.print(
        f"{result['requests']} requests replayed through {result['model']} {result['version']}; agreement "
        f"{cell(result['agreement'])}, estimated accuracy drop {cell(result['estimated_accuracy_drop'])}"
    )
    out.print(f"report: {result['report']}")


def rolled_out(stage: str, result: dict[str, Any], out: Console) -> None:
    """Each step walked with its verdict, then what serves (or why the rollout was aborted)."""
    for step in result.get("steps", []):
        out.print(f"  {rollout_step({**step, 'step': step['step']})}", markup=False)
    if result.get("aborted"):
        reason = result.get("reason", "?")
        out.print(f"aborted: {result['aborted']} ({reason}); production answers everything", markup=False)
    elif result.get("default_version"):
        out.print(f"promoted: {result['model']} {result['default_version']} serves", markup=False)
    elif result.get("rollout") is not None or "numbers" in result:
        out.print(
            json.dumps({"rollout": result.get("rollout"), "numbers": result.get("numbers")}, indent=2),
            markup=False,
        )
    elif result.get("waiting_at"):
        out.print(f"{result['candidate']} holds step {result['waiting_at']}; `forgeml rollout --status`")


def history(stage: str, result: dict[str, Any], out: Console) -> None:
    """Every deploy, rollback, alert, replay and rollout step, oldest first, one line each: when,
    what, the gate's numbers, the alert's outcome, the replay's or the step's verdict, why (an
    alert's cause), who and where."""
    out.print(f"[bold]deployments recorded in {result['registry']}[/]")
    for event in result["events"]:
        forced = " [bold red]FORCED[/]" if event.get("forced") else ""
        cause = f" ({event['cause']})" if event.get("cause") else ""
        out.print(
            f"{minutes(event['at'])}  {event['model']} {event['action']}{forced} {event['version']}: "
            f"{gate_numbers(event)}{cause} - {event.get('user', '?')}@{event.get('host', '?')}"
        )
    if not result["events"]:
        out.print("nothing deployed yet: `forgeml serve start`, then `forgeml deploy`")


def gate_numbers(event: dict[str, Any]) -> str:
    """The verdict and the metrics it compared (a rollback names the version it replaced)."""
    if event["action"] == "rollback":
        return f"back from {event.get('replaced', '?')}"
    if event["action"] == "alert":
        return f"{event.get('alert_action', '?')}: {event.get('outcome', '?')}"
    if event["action"] == "replay":
        agreement = cell(event.get("agreement"))
        return f"{event.get('message', '?')} ({event.get('requests', '?')} requests, agreement {agreement})"
    if event["action"] == "rollout":
        return rollout_step(event)
    if not event.get("metrics"):  # a rollout's promotion: its numbers are its steps'
        return event.get("gate", "?")
    return f"{event.get('gate', '?')}; {summary(event['metrics'])}"


def rollout_step(event: dict[str, Any]) -> str:
    """A rollout step, its verdict and the candidate's numbers in it (`begin`: the gate's verdict)."""
    step, numbers = event.get("step", "?"), event.get("candidate")
    if step == "begin":
        return f"begin: {event.get('gate', '?')}"
    if not numbers:
        return f"{step}: {event.get('verdict', '?')}"
    shown = [f"{numbers.get('requests', 0)} requests", f"{numbers.get('failed', 0)} failed"]
    shown.append(f"p99 {cell(numbers.get('p99_ms'))} ms")
    if numbers.get("agreement") is not None:
        shown.append(f"agreement {cell(numbers['agreement'])}")
    return f"{step}: {event.get('verdict', '?')} ({', '.join(shown)})"


def watched(stage: str, result: dict[str, Any], out: Console) -> None:
    """Each window judged, its verdict and what each fired rule's actions did."""
    for window in result["judged"]:
        out.print(f"window ending {window['window_end']}: [bold]{window['verdict']}[/]")
        for action in window["actions"]:
            out.print(f"  {action['on']} -> {action['action']}: {action['outcome']}", markup=False)
    if not result["judged"]:
        out.print("no new window to judge (the last one was judged already)")
    out.print(f"{result['checks']} check(s); state: {result['state']}")


def request_example(stage: str, result: dict[str, Any], out: Console) -> None:
    """The body alone, then the line that sends it: both copied as they are."""
    out.print(json.dumps(result["body"], indent=2), markup=False)
    if not result["running"]:
        out.print("# no server runs: start one with `forgeml serve start` (it writes the key file)")
    out.print(result["curl"], markup=False)


def prerequisites(stage: str, result: dict[str, Any], out: Console) -> None:
    """One line per check; a failed one says how to fix it."""
    for check in result["checks"]:
        mark = "[bold green]ok[/]     " if check["passed"] else "[bold red]missing[/]"
        out.print(f"{mark} {check['name']}: {check['found']}")
        if check["fix"]:
            out.print(f"        fix: {check['fix']}", markup=False)
    verdict = "ready to package and serve" if result["ready"] else "not ready to package and serve"
    out.print(f"[bold]{verdict}[/]")


RENDERERS: dict[str, Callable[[str, dict[str, Any], Console], None]] = {
    "train": metrics,
    "evaluate": metrics,
    "models": registry,
    "package": package,
    "monitor": drift,
    "gate": gate,
    "replay": replayed,
    "rollout": rolled_out,
    "history": history,
    "watch": watched,
    "serve example": request_example,
    "doctor": prerequisites,
}
