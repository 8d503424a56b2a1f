"""Showing the monitoring: distribution plots, time-series plots, self-contained HTML pages, tables
for `dvc plots`, a wandb run.

The pages embed their plots as base64 PNGs (data: URIs) and load nothing else, so
reports/drift.html (the last window) and reports/monitoring.html (every window) are single files
that can be mailed or attached to a CI run. wandb runs offline unless WANDB_MODE says otherwise
(sync later with `wandb sync`); wandb and matplotlib are imported only here, when a report is drawn.
"""

from __future__ import annotations

import base64
import html
import io
import os
import threading
from collections.abc import Callable
from concurrent.futures import Executor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from forgeml.monitoring.drift import count_categories

if TYPE_CHECKING:
    from forgeml.monitoring.decay import Baseline

TABLE_COLUMNS = (
    "feature",
    "type",
    "test",
    "statistic",
    "p_value",
    "threshold",
    "psi",
    "missing_share",
    "reference_missing_share",
    "missing_drifted",
    "drifted",
)
MAX_CATEGORIES_PLOTTED = 15
VERDICT_COLOURS = {
    "no_drift": "#1a7f37",
    "drift": "#cf222e",
    "decay": "#cf222e",
    "insufficient_data": "#9a6700",
}
WINDOW_COLUMNS = (
    "window_start",
    "window_end",
    "rows",
    "rejected",
    "share_drifted",
    "prediction_drifted",
    "estimated_accuracy",
    "estimated_accuracy_lower",
    "estimated_accuracy_upper",
    "estimated_f1_macro",
    "labelled_rows",
    "verdict",
)


def histogram_png(name: str, histogram: dict[str, list[float]]) -> bytes:
    """A numeric feature's reference and current densities, as its drift entry holds them
    (drift.density_histogram: computed from the sorted values the test already had), as two
    filled outlines."""
    figure, axes = distribution_axes()
    for label in ("reference", "current"):
        axes.stairs(histogram[label], histogram["edges"], fill=True, alpha=0.5, label=label)
    axes.set_ylabel("density")
    return distribution_figure(figure, axes, name, bottom=0.14)


def shares_png(name: str, reference: Any, current: Any) -> bytes:
    """A categorical feature's reference and current shares, side by side."""
    figure, axes = distribution_axes()
    plot_shares(axes, count_categories(reference), count_categories(current))
    return distribution_figure(figure, axes, name, bottom=0.3)


def distribution_axes() -> tuple[Any, Any]:
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6.0, 3.2))
    return figure, figure.subplots()


def distribution_figure(figure: Any, axes: Any, name: str, bottom: float) -> bytes:
    axes.set_title(f"{name}: reference vs current")
    axes.legend()
    # fixed margins: tight_layout would lay every text out twice, and these plots are many
    figure.subplots_adjust(left=0.14, right=0.97, top=0.9, bottom=bottom)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90)
    return buffer.getvalue()


def drifted_figures(
    report: dict[str, Any],
    train: pd.DataFrame,
    current: pd.DataFrame,
    baseline: Baseline,
    executor: Executor | None = None,
) -> dict[str, bytes]:
    """One reference-vs-current plot per drifted feature (and for drifted predictions), each
    drawn by `executor` when given (the plots are independent: one per process and core). A
    numeric plot is drawn from the densities in its entry: no column goes to the executor."""
    plots: dict[str, tuple[Callable[..., bytes], tuple[Any, ...]]] = {}
    for name in report["drifted_features"]:
        entry = report["features"][name]
        if entry["type"] == "numeric":
            plots[name] = (histogram_png, (name, entry["histogram"]))
        else:
            plots[name] = (shares_png, (name, train[name].to_numpy(), current[name].to_numpy()))
    prediction = report["prediction"]
    if prediction and prediction["drifted"]:
        if baseline.task == "classification":
            served = current["prediction"].dropna().to_numpy().astype(str)
            plots["prediction"] = (shares_png, ("prediction", baseline.predictions, served))
        else:
            plots["prediction"] = (histogram_png, ("prediction", prediction["histogram"]))
    if executor is None:
        return {name: draw(*arguments) for name, (draw, arguments) in plots.items()}
    drawn = {name: executor.submit(draw, *arguments) for name, (draw, arguments) in plots.items()}
    return {name: future.result() for name, future in drawn.items()}


def preload_matplotlib() -> threading.Thread:
    """Import matplotlib's figure and Agg canvas (most of a second) in a thread. Start it as
    the current data is read: pyarrow parses and numpy sorts with the GIL released, so the
    import then mostly costs no wall time (begun before, it held the GIL over the references'
    Python work); processes forked to draw afterwards inherit it instead of importing it each.
    Join the thread before forking (a fork must not copy a half-done import)."""

    def load() -> None:
        from matplotlib.backends import backend_agg  # noqa: F401
        from matplotlib.figure import Figure  # noqa: F401

    thread = threading.Thread(target=load, name="import-matplotlib", daemon=True)
    thread.start()
    return thread


def plot_shares(axes: Any, reference: pd.Series, current: pd.Series) -> None:
    shares = pd.DataFrame(
        {"reference": reference / reference.sum(), "current": current / current.sum()}
    ).fillna(0.0)
    shares = shares.loc[shares.max(axis=1).sort_values(ascending=False).index[:MAX_CATEGORIES_PLOTTED]]
    positions = np.arange(len(shares))
    axes.bar(positions - 0.2, shares["reference"], width=0.4, label="reference")
    axes.bar(positions + 0.2, shares["current"], width=0.4, label="current")
    axes.set_xticks(positions, shares.index, rotation=45, ha="right")
    axes.set_ylabel("share")


def table_rows(report: dict[str, Any]) -> list[list[Any]]:
    """One row per feature (and the prediction), columns as TABLE_COLUMNS."""
    entries = dict(report.get("features") or {})
    if report.get("prediction"):
        entries["(prediction)"] = report["prediction"]
    keys = TABLE_COLUMNS[1:]
    return [[name, *(entry.get(key) for key in keys)] for name, entry in entries.items()]


def render_html(report: dict[str, Any], figures: dict[str, bytes]) -> str:
    colour = VERDICT_COLOURS.get(report["verdict"], "#000")
    facts = {
        "rows (current)": report["rows"]["current"],
        "rows (reference)": report["rows"]["reference"],
        "source": report["source"],
        "drifted features": ", ".join(report.get("drifted_features") or []) or "none",
        "share drifted": fmt(report.get("share_drifted")),
        "share threshold": fmt(report.get("share_threshold")),
        "severely shifted": ", ".join(report.get("severe_features") or {}) or "none",
        "rule that fired": report.get("rule") or "none",
        "exit code": report["exit_code"],
        "created": report["created_at"],
    }
    fact_rows = "".join(f"<tr><th>{esc(k)}</th><td>{esc(fmt(v))}</td></tr>" for k, v in facts.items())
    head = "".join(f"<th>{esc(column)}</th>" for column in TABLE_COLUMNS)
    body = "".join(
        f'<tr class="{"drifted" if row[-1] else ""}">{"".join(f"<td>{esc(fmt(v))}</td>" for v in row)}</tr>'
        for row in table_rows(report)
    )
    plots = "".join(
        f"<figure><img alt='{esc(name)}' src='data:image/png;base64,{base64.b64encode(png).decode()}'>"
        f"<figcaption>{esc(name)}</figcaption></figure>"
        for name, png in figures.items()
    )
    return PAGE.format(
        colour=colour,
        verdict=esc(report["verdict"].replace("_", " ")),
        message=esc(report["message"]),
        facts=fact_rows,
        head=head,
        body=body or f"<tr><td colspan='{len(TABLE_COLUMNS)}'>no features tested</td></tr>",
        plots=plots or "<p>No drifted feature to plot.</p>",
    )


def fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>forgeml drift report</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2rem; color: #1f2328; }}
.verdict {{ color: {colour}; }}
table {{ border-collapse: collapse; margin: 1rem 0; }}
th, td {{ border: 1px solid #d0d7de; padding: 0.25rem 0.6rem; text-align: left; }}
tr.drifted td {{ background: #ffebe9; }}
figure {{ display: inline-block; margin: 0.5rem; }}
</style></head><body>
<h1>Drift report: <span class="verdict">{verdict}</span></h1>
<p>{message}</p>
<table class="facts">{facts}</table>
<h2>Per feature</h2>
<table class="drift"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>
<h2>Drifted distributions</h2>
{plots}
</body></html>
"""


def log_to_wandb(
    report: dict[str, Any], figures: dict[str, bytes], log_dir: str | Path, config: dict[str, Any]
) -> Path:
    """One wandb run (job_type monitor) with the table, the summary numbers and the plots."""
    # tracking must never need the network unless the user asks for it
    os.environ.setdefault("WANDB_MODE", "offline")
    import wandb
    from PIL import Image

    Path(log_dir).mkdir(parents=True, exist_ok=True)
    run = wandb.init(
        project=os.environ.get("WANDB_PROJECT", "forgeml"),
        job_type="monitor",
        dir=str(log_dir),
        config=config,
        settings=wandb.Settings(console="off", silent=True),
    )
    table = wandb.Table(columns=list(TABLE_COLUMNS), data=table_rows(report), allow_mixed_types=True)
    images = {
        f"drift/plots/{name}": wandb.Image(Image.open(io.BytesIO(png)), caption=name)
        for name, png in figures.items()
    }
    run.log(
        {
            "drift/features": table,
            "drift/share_drifted": report.get("share_drifted") or 0.0,
            "drift/drifted_count": len(report.get("drifted_features") or []),
            "drift/exit_code": report["exit_code"],
            "drift/rows": report["rows"]["current"],
            **images,
        }
    )
    run.summary["drift/verdict"] = report["verdict"]
    run_dir = Path(run.dir).resolve().parent
    run.finish()
    return run_dir


def windows_table(monitoring: dict[str, Any]) -> pd.DataFrame:
    """One row per window: volume, drift, estimated and measured performance (for `dvc plots`)."""
    rows = []
    for window in monitoring["windows"]:
        estimated = window["estimated"] or {}
        measured = window["measured"] or {}
        band = estimated.get("accuracy_band") or [None, None]
        row = {
            "window_start": window["window"]["start"],
            "window_end": window["window"]["end"],
            "rows": window["rows"]["current"],
            "rejected": window["rows"]["rejected"],
            "share_drifted": window["share_drifted"],
            "prediction_drifted": window["prediction_drifted"],
            "estimated_accuracy": estimated.get("accuracy"),
            "estimated_accuracy_lower": band[0],
            "estimated_accuracy_upper": band[1],
            "estimated_f1_macro": estimated.get("f1_macro"),
            "labelled_rows": measured.get("labelled_rows"),
            "verdict": window["verdict"],
        }
        row |= {f"measured_{name}": value for name, value in (measured.get("metrics") or {}).items()}
        rows.append(row)
    return pd.DataFrame(rows).reindex(columns=unique([*WINDOW_COLUMNS, *(k for r in rows for k in r)]))


def unique(names: list[str]) -> list[str]:
    return list(dict.fromkeys(names))


def feature_statistics_table(monitoring: dict[str, Any]) -> pd.DataFrame:
    """One row per window and feature: its test, statistic, drift and missing share."""
    rows = [
        {"window_end": window["window"]["end"], "feature": name, **entry}
        for window in monitoring["windows"]
        for name, entry in window["features"].items()
    ]
    columns = ["window_end", "feature", "test", "statistic", "drifted", "missing_share", "missing_drifted"]
    return pd.DataFrame(rows, columns=columns)


def window_labels(table: pd.DataFrame) -> list[str]:
    """Each window by its end (its start for the first), short enough for an axis."""
    ends = pd.to_datetime(table["window_end"], utc=True, errors="coerce", format="ISO8601")
    return [f"#{i + 1}" if pd.isna(end) else end.strftime("%m-%d %H:%M") for i, end in enumerate(ends)]


def time_series_pngs(monitoring: dict[str, Any]) -> dict[str, bytes]:
    """The four plots of monitoring.html, each over the windows."""
    table = windows_table(monitoring)
    statistics = feature_statistics_table(monitoring)
    labels = window_labels(table)
    threshold = monitoring["settings"]["share_threshold"]
    evaluation = monitoring.get("evaluation") or {}
    return {
        "share of drifted features": share_png(table, labels, threshold),
        "drift statistic per feature": statistics_png(statistics, table, labels),
        "performance: estimated and measured": performance_png(table, labels, evaluation),
        "request volume and rejections": volume_png(table, labels),
    }


def new_axes(width: float = 7.0, height: float = 3.0) -> tuple[Any, Any]:
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height))
    return figure, figure.subplots()


def png(figure: Any, axes: Any, labels: list[str], names: list[str] | None = None) -> bytes:
    """The plot over the windows as PNG bytes. Margins are set, not fitted (a layout pass costs
    more than drawing the plot): fixed ones, or with `names` (the heatmap's feature names, at
    7 points) room for the longest name and window label, from their lengths."""
    axes.set_xticks(range(len(labels)), labels, rotation=45, ha="right", fontsize=8)
    if names is None:
        figure.subplots_adjust(left=0.1, right=0.9, top=0.95, bottom=0.3)
    else:
        width, height = figure.get_size_inches()
        # inches: a 7-point character is about 0.06 wide; an 8-point label at 45 degrees drops
        # about 0.05 per character
        left = (0.2 + 0.06 * max(map(len, names), default=1)) / width
        bottom = (0.25 + 0.05 * max(map(len, labels), default=1)) / height
        figure.subplots_adjust(left=min(left, 0.5), right=0.94, top=1 - 0.3 / height, bottom=min(bottom, 0.6))
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=80)
    return buffer.getvalue()


def share_png(table: pd.DataFrame, labels: list[str], threshold: float) -> bytes:
    figure, axes = new_axes()
    axes.plot(range(len(table)), table["share_drifted"].astype(float), marker="o", label="share drifted")
    axes.axhline(threshold, color="#cf222e", linestyle="--", label="share threshold")
    axes.set(ylim=(-0.02, 1.02), ylabel="share of features")
    axes.legend(loc="upper left", fontsize=8)
    return png(figure, axes, labels)


def statistics_png(statistics: pd.DataFrame, table: pd.DataFrame, labels: list[str]) -> bytes:
    """A heatmap, one row per feature: its statistic relative to its largest over the windows
    (tests differ in scale), drifted windows marked x."""
    grid = statistics.pivot_table(index="feature", columns="window_end", values="statistic", sort=False)
    grid = grid.reindex(columns=table["window_end"])
    drifted = statistics.pivot_table(index="feature", columns="window_end", values="drifted", sort=False)
    drifted = drifted.reindex(index=grid.index, columns=table["window_end"]).fillna(0).astype(bool)
    figure, axes = new_axes(7.0, 1.2 + 0.22 * max(len(grid), 1))
    values = grid.to_numpy(np.float64) if len(grid) else np.full((1, len(table)), np.nan)
    with np.errstate(all="ignore"):
        largest = np.nanmax(np.abs(values), axis=1, keepdims=True) if np.isfinite(values).any() else 1.0
        scaled = values / np.where(np.isfinite(largest) & (largest > 0), largest, 1.0)
    image = axes.imshow(scaled, aspect="auto", cmap="Reds", vmin=0.0, vmax=1.0, interpolation="nearest")
    for row, column in zip(*np.nonzero(drifted.to_numpy()), strict=True):
        colour = "white" if scaled[row, column] > 0.6 else "black"
        axes.text(column, row, "x", ha="center", va="center", fontsize=8, color=colour)
    axes.set_yticks(range(len(grid)), grid.index, fontsize=7)
    axes.set_title("x: drifted", fontsize=8, loc="left")
    figure.colorbar(image, ax=axes, label="relative statistic")
    return png(figure, axes, labels, names=[str(name) for name in grid.index])


def performance_png(table: pd.DataFrame, labels: list[str], evaluation: dict[str, float]) -> bytes:
    figure, axes = new_axes()
    positions = np.arange(len(table))
    if table["estimated_accuracy"].notna().any():
        axes.plot(
            positions,
            table["estimated_accuracy"].astype(float),
            marker="o",
            label="estimated accuracy (CBPE)",
        )
        axes.fill_between(
            positions,
            table["estimated_accuracy_lower"].astype(float),
            table["estimated_accuracy_upper"].astype(float),
            alpha=0.2,
            label="estimate band (3 sd)",
        )
    for name in ("accuracy", "r2"):
        column = f"measured_{name}"
        if column in table and table[column].notna().any():
            axes.plot(
                positions, table[column].astype(float), marker="s", linestyle=":", label=f"measured {name}"
            )
        if f"test/{name}" in evaluation and (column in table or name == "accuracy"):
            axes.axhline(evaluation[f"test/{name}"], color="grey", linestyle="--", label=f"evaluation {name}")
    axes.set_ylabel("score")
    if axes.get_legend_handles_labels()[0]:
        axes.legend(loc="lower left", fontsize=8)
    else:
        axes.text(0.5, 0.5, "no estimate and no labels yet", ha="center", transform=axes.transAxes)
    return png(figure, axes, labels)


def volume_png(table: pd.DataFrame, labels: list[str]) -> bytes:
    """Logged records as bars; rejected requests (far fewer) as a line on their own axis."""
    figure, axes = new_axes()
    positions = np.arange(len(table))
    axes.bar(positions, table["rows"].astype(float), width=0.6, label="logged records")
    axes.set_ylabel("logged records")
    rejections = axes.twinx()
    rejections.plot(positions, table["rejected"].astype(float), color="#cf222e", marker="o")
    rejections.set_ylabel("rejected requests", color="#cf222e")
    rejections.set_ylim(bottom=0)
    return png(figure, axes, labels)


def render_monitoring_html(monitoring: dict[str, Any]) -> str:
    """reports/monitoring.html: the verdict, a table of the windows and the time-series plots."""
    table = windows_table(monitoring)
    head = "".join(f"<th>{esc(column)}</th>" for column in table.columns)
    body = "".join(
        f'<tr class="{esc(row["verdict"])}">'
        + "".join(f"<td>{esc(fmt(clean(value)))}</td>" for value in row.values())
        + "</tr>"
        for row in table.to_dict("records")
    )
    plots = "".join(
        f"<figure><img alt='{esc(name)}' src='data:image/png;base64,{base64.b64encode(image).decode()}'>"
        f"<figcaption>{esc(name)}</figcaption></figure>"
        for name, image in time_series_pngs(monitoring).items()
    )
    return MONITORING_PAGE.format(
        colour=VERDICT_COLOURS.get(monitoring["verdict"], "#000"),
        verdict=esc(monitoring["verdict"].replace("_", " ")),
        message=esc(monitoring["message"]),
        count=len(table),
        head=head,
        body=body,
        plots=plots,
    )


def clean(value: Any) -> Any:
    """NaN (an absent number in a table) shows as '-', like None."""
    return None if isinstance(value, float) and np.isnan(value) else value


MONITORING_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>forgeml monitoring</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2rem; color: #1f2328; }}
.verdict {{ color: {colour}; }}
table {{ border-collapse: collapse; margin: 1rem 0; font-size: 0.85rem; }}
th, td {{ border: 1px solid #d0d7de; padding: 0.2rem 0.5rem; text-align: left; }}
tr.drift td, tr.decay td {{ background: #ffebe9; }}
figure {{ display: inline-block; margin: 0.5rem; }}
</style></head><body>
<h1>Monitoring: <span class="verdict">{verdict}</span></h1>
<p>{message}</p>
<h2>Over time</h2>
{plots}
<h2>{count} windows</h2>
<table class="windows"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>
</body></html>
"""
