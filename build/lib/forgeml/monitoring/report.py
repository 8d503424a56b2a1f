"""Showing a drift report: distribution plots, a self-contained HTML page, a wandb run.

The page embeds its plots as base64 PNGs, so reports/drift.html is one file that can be mailed or
attached to a CI run. wandb runs offline unless WANDB_MODE says otherwise (sync later with
`wandb sync`); wandb and matplotlib are imported only here, when a report is drawn.
"""

from __future__ import annotations

import base64
import html
import io
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from forgeml.monitoring.drift import count_categories, numeric_values

TABLE_COLUMNS = ("feature", "type", "test", "statistic", "p_value", "threshold", "psi", "missing", "drifted")
MAX_CATEGORIES_PLOTTED = 15
VERDICT_COLOURS = {"no_drift": "#1a7f37", "drift": "#cf222e", "insufficient_data": "#9a6700"}


def distribution_png(name: str, kind: str, reference: Any, current: Any) -> bytes:
    """Reference vs current: overlaid histograms (numeric) or side-by-side shares (categorical)."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6.0, 3.2))
    axes = figure.subplots()
    if kind == "numeric":
        plot_histograms(axes, numeric_values(reference), numeric_values(current))
    else:
        plot_shares(axes, count_categories(reference), count_categories(current))
    axes.set_title(f"{name}: reference vs current")
    axes.legend()
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90)
    return buffer.getvalue()


def plot_histograms(axes: Any, reference: np.ndarray, current: np.ndarray) -> None:
    reference, current = reference[np.isfinite(reference)], current[np.isfinite(current)]
    # a common range without the extreme 0.5% on either side, so one outlier cannot flatten it
    low = min(np.quantile(reference, 0.005), np.quantile(current, 0.005))
    high = max(np.quantile(reference, 0.995), np.quantile(current, 0.995))
    edges = np.linspace(low, high, 41) if high > low else 10
    axes.hist(reference, bins=edges, density=True, alpha=0.5, label="reference")
    axes.hist(current, bins=edges, density=True, alpha=0.5, label="current")
    axes.set_ylabel("density")


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
