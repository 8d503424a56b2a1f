"""Showing the monitoring: the pages with their interactive plots, tables for `dvc plots`, a
wandb run.

reports/drift.html (the last window) and reports/monitoring.html (every window) hold their
plots as Plotly figures (plots.py), drawn in the browser by plotly.js, which is written once
beside them (layout.PLOTLY_JS, from the plotly package installed with forgeml) and never
fetched from the network: the pages load nothing but that file, so they open offline, and the
directory they are in (reports/) travels with it. wandb runs offline unless WANDB_MODE says
otherwise (sync later with `wandb sync`) and is imported only here, when a run is logged.
"""

from __future__ import annotations

import html
import importlib.util
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from forgeml.errors import ForgeError
from forgeml.io import write_bytes
from forgeml.layout import PLOTLY_JS
from forgeml.monitoring.plots import (
    answering,
    histogram_figure,
    several_versions,
    shares_figure,
    time_series_figures,
    window_labels,
)

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


def drifted_figures(
    report: dict[str, Any], train: pd.DataFrame, current: pd.DataFrame, baseline: Baseline
) -> dict[str, dict[str, Any]]:
    """One reference-vs-current plot per drifted feature (and for drifted predictions). A
    numeric plot is drawn from the densities in its entry; a categorical one counts both sides."""
    figures = {}
    for name in report["drifted_features"]:
        entry = report["features"][name]
        if entry["type"] == "numeric":
            figures[name] = histogram_figure(name, entry["histogram"])
        else:
            figures[name] = shares_figure(name, train[name].to_numpy(), current[name].to_numpy())
    prediction = report["prediction"]
    if prediction and prediction["drifted"]:
        if baseline.task == "classification":
            served = current["prediction"].dropna().to_numpy().astype(str)
            figures["prediction"] = shares_figure("prediction", baseline.predictions, served)
        else:
            figures["prediction"] = histogram_figure("prediction", prediction["histogram"])
    return figures


def plots_html(figures: dict[str, dict[str, Any]]) -> str:
    """Each figure in a <figure> with its caption, and the script that draws them all with
    plotly.js (the PLOTLY_JS beside the page). The figures go in as a JavaScript object
    literal: JSON with every "<" written "\\u003c", the same string to JavaScript, so that no
    value (a category named "</script>") can end the script element or open a comment."""
    elements = "".join(
        f'<figure><div class="plot" id="plot-{number}"></div><figcaption>{esc(name)}</figcaption></figure>'
        for number, name in enumerate(figures)
    )
    drawn = {f"plot-{number}": figure for number, figure in enumerate(figures.values())}
    literal = json.dumps(drawn, separators=(",", ":")).replace("<", "\\u003c")
    return f"{elements}\n<script>\ndrawPlots({literal});\n</script>"


def write_plotly_js(directory: str | Path) -> Path:
    """plotly.js beside the pages that draw with it, from the installed plotly package: written
    when missing or different (another plotly version), so a run usually leaves it alone."""
    package = importlib.util.find_spec("plotly")
    if package is None or not package.submodule_search_locations:
        raise ForgeError("the monitoring pages draw with plotly.js: `pip install 'plotly>=5.20'`")
    source = Path(package.submodule_search_locations[0]) / "package_data" / "plotly.min.js"
    script = source.read_bytes()
    target = Path(directory) / PLOTLY_JS
    if not target.is_file() or target.stat().st_size != len(script) or target.read_bytes() != script:
        write_bytes(target, script)
    return target


def table_rows(report: dict[str, Any]) -> list[list[Any]]:
    """One row per feature (and the prediction), columns as TABLE_COLUMNS."""
    entries = dict(report.get("features") or {})
    if report.get("prediction"):
        entries["(prediction)"] = report["prediction"]
    keys = TABLE_COLUMNS[1:]
    return [[name, *(entry.get(key) for key in keys)] for name, entry in entries.items()]


def render_html(report: dict[str, Any], figures: dict[str, dict[str, Any]]) -> str:
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
    return PAGE.format(
        colour=colour,
        verdict=esc(report["verdict"].replace("_", " ")),
        message=esc(report["message"]),
        facts=fact_rows,
        head=head,
        body=body or f"<tr><td colspan='{len(TABLE_COLUMNS)}'>no features tested</td></tr>",
        plots=plots_html(figures) if figures else "<p>No drifted feature to plot.</p>",
        scripts=PLOT_SCRIPTS,
    )


# plotly.js from the file beside the page; without it (a page copied elsewhere), a note instead
PLOT_SCRIPTS = f"""<script src="{PLOTLY_JS}"></script>
<script>
function drawPlots(figures) {{
  for (const [id, figure] of Object.entries(figures)) {{
    const element = document.getElementById(id);
    if (typeof Plotly === "undefined") {{
      element.textContent = "(interactive plot: needs {PLOTLY_JS} beside this page)";
    }} else {{
      Plotly.newPlot(element, figure.data, figure.layout, {{displaylogo: false}});
    }}
  }}
}}
</script>"""


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
figure {{ display: inline-block; margin: 0.5rem; vertical-align: top; }}
</style>
{scripts}
</head><body>
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
    report: dict[str, Any], figures: dict[str, dict[str, Any]], log_dir: str | Path, config: dict[str, Any]
) -> Path:
    """One wandb run (job_type monitor) with the table, the summary numbers and the plots (as
    Plotly figures, which wandb draws interactively too)."""
    # tracking must never need the network unless the user asks for it
    os.environ.setdefault("WANDB_MODE", "offline")
    import plotly.graph_objects as go
    import wandb

    Path(log_dir).mkdir(parents=True, exist_ok=True)
    run = wandb.init(
        project=os.environ.get("WANDB_PROJECT", "forgeml"),
        job_type="monitor",
        dir=str(log_dir),
        config=config,
        settings=wandb.Settings(console="off", silent=True),
    )
    table = wandb.Table(columns=list(TABLE_COLUMNS), data=table_rows(report), allow_mixed_types=True)
    plots = {f"drift/plots/{name}": wandb.Plotly(go.Figure(figure)) for name, figure in figures.items()}
    run.log(
        {
            "drift/features": table,
            "drift/share_drifted": report.get("share_drifted") or 0.0,
            "drift/drifted_count": len(report.get("drifted_features") or []),
            "drift/exit_code": report["exit_code"],
            "drift/rows": report["rows"]["current"],
            **plots,
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
    figures = time_series_figures(monitoring, table)
    windows = monitoring["windows"]
    return MONITORING_PAGE.format(
        colour=VERDICT_COLOURS.get(monitoring["verdict"], "#000"),
        verdict=esc(monitoring["verdict"].replace("_", " ")),
        message=esc(monitoring["message"]),
        count=len(table),
        head=head,
        body=body,
        versions=versions_html(windows, window_labels(table)) if several_versions(windows) else "",
        plots=plots_html(figures),
        scripts=PLOT_SCRIPTS,
    )


def version_measures(entry: dict[str, Any]) -> dict[str, Any]:
    """A version's entry in a window (decay.version_summary) as the rows of its column."""
    latency = entry["latency"] or {}
    measured = entry["measured"] or {}
    return {
        "verdict": entry["verdict"].replace("_", " "),
        "rows": entry["rows"],
        "rejected": entry["rejected"],
        "latency p50 (ms)": latency.get("p50_ms"),
        "latency p99 (ms)": latency.get("p99_ms"),
        "share drifted": entry["share_drifted"],
        "prediction drifted": entry["prediction_drifted"],
        "estimated accuracy": (entry["estimated"] or {}).get("accuracy"),
        "calibration": entry["calibration"],
        "labelled rows": measured.get("labelled_rows"),
        **{f"measured {name}": value for name, value in (measured.get("metrics") or {}).items()},
    }


def versions_html(windows: list[dict[str, Any]], labels: list[str]) -> str:
    """A small table per window that versions answered in, their numbers side by side, the
    versions in the order they first answered."""
    order = answering(windows)
    tables = []
    for window, label in zip(windows, labels, strict=True):
        entries = window.get("versions") or {}
        columns = {version: version_measures(entries[version]) for version in order if version in entries}
        if columns:
            tables.append(versions_table(label, columns))
    return "<h2>Per version</h2>\n" + "\n".join(tables)


def versions_table(label: str, columns: dict[str, dict[str, Any]]) -> str:
    """One window's table: a row per measure, a column per version."""
    head = f"<th>window ending {esc(label)}</th>" + "".join(f"<th>version {esc(v)}</th>" for v in columns)
    rows = unique([name for measures in columns.values() for name in measures])
    body = "".join(
        f"<tr><th>{esc(name)}</th>"
        + "".join(f"<td>{esc(fmt(measures.get(name)))}</td>" for measures in columns.values())
        + "</tr>"
        for name in rows
    )
    return f'<table class="versions"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


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
figure {{ display: inline-block; margin: 0.5rem; vertical-align: top; }}
</style>
{scripts}
</head><body>
<h1>Monitoring: <span class="verdict">{verdict}</span></h1>
<p>{message}</p>
<h2>Over time</h2>
{plots}
<h2>{count} windows</h2>
<table class="windows"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>
{versions}
</body></html>
"""
