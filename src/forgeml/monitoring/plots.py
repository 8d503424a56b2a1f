"""The plots of drift.html and monitoring.html as Plotly figures: plain dicts of traces and a
layout, what plotly.js' `Plotly.newPlot` takes, drawn by the browser (zoom, hover, the values
under the pointer). They are built here without plotly's Python package, whose figure classes
take longer to import and validate than these pages' whole data; report.py writes them into
the pages as one JSON object.

Windows are placed at their positions 0, 1, ... with their labels as tick text (two windows
with the same label stay two points, which a category axis would merge).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from forgeml.monitoring.drift import count_categories

MAX_CATEGORIES_PLOTTED = 15
COLOURS = {
    "reference": "#1f77b4",
    "current": "#ff7f0e",
    "alert": "#cf222e",
    "evaluation": "#6e7781",
    "measured": "#2ca02c",
}
# one colour per version (plotly's first ones), in the order the versions first answered
VERSION_COLOURS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf"]
# white to red: a feature's statistic relative to its largest over the windows
HEAT_SCALE = [[0.0, "#fff5f0"], [1.0, "#a50f15"]]
DISTRIBUTION_SIZE = {"width": 600, "height": 320}
TIME_SERIES_SIZE = {"width": 700, "height": 320}
MARGIN = {"l": 60, "r": 20, "t": 40, "b": 90}
BAND_FILL = "rgba(31,119,180,0.2)"
BAND_HOVER = "%{meta}: %{y:.4g}<br>window ending %{text}<extra></extra>"


def numbers(values: Any) -> list[float | None]:
    """Values as a JSON list: floats, and None (a gap in the plot) where one is missing."""
    array = np.asarray(values, dtype=np.float64)
    return [None if np.isnan(value) else value for value in array.tolist()]


def histogram_figure(name: str, histogram: dict[str, list[float]]) -> dict[str, Any]:
    """A numeric feature's reference and current densities, as its drift entry holds them
    (drift.density_histogram: computed from the sorted values the test already had), as two
    overlaid bar series on the same bins."""
    edges = np.asarray(histogram["edges"], dtype=np.float64)
    centres, widths = numbers((edges[:-1] + edges[1:]) / 2), numbers(np.diff(edges))
    data = [
        {
            "type": "bar",
            "name": side,
            "x": centres,
            "y": numbers(histogram[side]),
            "width": widths,
            "opacity": 0.55,
            "marker": {"color": COLOURS[side]},
            "hovertemplate": f"{side}: density %{{y:.4g}} at %{{x:.4g}}<extra></extra>",
        }
        for side in ("reference", "current")
    ]
    return {"data": data, "layout": distribution_layout(name, "density", barmode="overlay")}


def shares_figure(name: str, reference: Any, current: Any) -> dict[str, Any]:
    """A categorical feature's reference and current shares, side by side, for its
    MAX_CATEGORIES_PLOTTED most common categories on either side."""
    reference_counts, current_counts = count_categories(reference), count_categories(current)
    shares = pd.DataFrame(
        {
            "reference": reference_counts / reference_counts.sum(),
            "current": current_counts / current_counts.sum(),
        }
    ).fillna(0.0)
    shares = shares.loc[shares.max(axis=1).sort_values(ascending=False).index[:MAX_CATEGORIES_PLOTTED]]
    categories = [str(category) for category in shares.index]
    data = [
        {
            "type": "bar",
            "name": side,
            "x": categories,
            "y": numbers(shares[side]),
            "marker": {"color": COLOURS[side]},
            "hovertemplate": f"{side}: %{{x}} %{{y:.1%}}<extra></extra>",
        }
        for side in ("reference", "current")
    ]
    layout = distribution_layout(name, "share", barmode="group")
    layout["xaxis"] = {"type": "category", "tickangle": -45}
    return {"data": data, "layout": layout}


def distribution_layout(name: str, measure: str, barmode: str) -> dict[str, Any]:
    return {
        **DISTRIBUTION_SIZE,
        "title": {"text": f"{name}: reference vs current"},
        "barmode": barmode,
        "bargap": 0.0 if barmode == "overlay" else 0.2,
        "yaxis": {"title": {"text": measure}},
        "margin": MARGIN,
    }


def time_series_figures(monitoring: dict[str, Any], table: pd.DataFrame) -> dict[str, dict[str, Any]]:
    """The four plots of monitoring.html, each over the windows of `monitoring` (decay.assess's
    result), whose `table` (report.windows_table) has a row per window, and a fifth where
    several versions answered in a window."""
    labels = window_labels(table)
    threshold = monitoring["settings"]["share_threshold"]
    evaluation = monitoring.get("evaluation") or {}
    figures = {
        "share of drifted features": share_figure(table, labels, threshold),
        "drift statistic per feature": statistics_figure(monitoring["windows"], labels),
        "performance: estimated and measured": performance_figure(table, labels, evaluation),
        "request volume and rejections": volume_figure(table, labels),
    }
    if several_versions(monitoring["windows"]):
        figures["per version: performance and p99 latency"] = versions_figure(monitoring["windows"], labels)
    return figures


def several_versions(windows: list[dict[str, Any]]) -> bool:
    """Whether some window was answered by more than one version (decay.version_reports)."""
    return any(len(window.get("versions") or {}) > 1 for window in windows)


def answering(windows: list[dict[str, Any]]) -> list[str]:
    """Every version that answered in some window, in the order they first did."""
    return list(dict.fromkeys(version for window in windows for version in window.get("versions") or {}))


def window_labels(table: pd.DataFrame) -> list[str]:
    """Each window by its end (its position for one without an end), short enough for an axis."""
    ends = pd.to_datetime(table["window_end"], utc=True, errors="coerce", format="ISO8601")
    return [f"#{i + 1}" if pd.isna(end) else end.strftime("%m-%d %H:%M") for i, end in enumerate(ends)]


def over_windows(labels: list[str], measure: str, **layout: Any) -> dict[str, Any]:
    """The layout of a plot over the windows: one tick per window, labelled by its end."""
    return {
        **TIME_SERIES_SIZE,
        "xaxis": {
            "tickmode": "array",
            "tickvals": list(range(len(labels))),
            "ticktext": labels,
            "tickangle": -45,
        },
        "yaxis": {"title": {"text": measure}},
        "legend": {"orientation": "h", "y": 1.12},
        "margin": MARGIN,
        **layout,
    }


def line(
    labels: list[str], values: Any, name: str, colour: str, dash: str = "solid", mode: str = "lines+markers"
) -> dict[str, Any]:
    """One value per window, the window's label in its hover text."""
    return {
        "type": "scatter",
        "mode": mode,
        "name": name,
        "x": list(range(len(labels))),
        "y": numbers(values),
        "text": labels,
        "line": {"color": colour, "dash": dash},
        "hovertemplate": f"{name}: %{{y:.4g}}<br>window ending %{{text}}<extra></extra>",
    }


def level(labels: list[str], value: float, name: str, colour: str) -> dict[str, Any]:
    """A constant over every window (a threshold, the evaluation's score), as a dashed line."""
    return line(labels, [value] * len(labels), name, colour, dash="dash", mode="lines")


def share_figure(table: pd.DataFrame, labels: list[str], threshold: float) -> dict[str, Any]:
    data = [
        line(labels, table["share_drifted"], "share drifted", COLOURS["reference"]),
        level(labels, threshold, "share threshold", COLOURS["alert"]),
    ]
    layout = over_windows(labels, "share of features")
    layout["yaxis"]["range"] = [-0.02, 1.02]
    return {"data": data, "layout": layout}


def statistics_figure(windows: list[dict[str, Any]], labels: list[str]) -> dict[str, Any]:
    """A heatmap, one row per feature: its statistic relative to its largest over the windows
    (tests differ in scale), drifted windows marked x; the hover text gives the statistic."""
    features = list(dict.fromkeys(name for window in windows for name in window["features"]))
    entries = [[window["features"].get(name) or {} for window in windows] for name in features]
    values = np.array([[entry.get("statistic") for entry in row] for row in entries], dtype=np.float64)
    values = values.reshape(len(features), len(windows))
    with np.errstate(all="ignore"):
        largest = np.nanmax(np.abs(values), axis=1, keepdims=True) if np.isfinite(values).any() else 1.0
        scaled = values / np.where(np.isfinite(largest) & (largest > 0), largest, 1.0)
    data = [
        {
            "type": "heatmap",
            "x": list(range(len(labels))),
            "y": features,
            "z": [numbers(row) for row in scaled],
            "zmin": 0.0,
            "zmax": 1.0,
            "colorscale": HEAT_SCALE,
            "colorbar": {"title": {"text": "relative statistic"}},
            "text": [["x" if entry.get("drifted") else "" for entry in row] for row in entries],
            "texttemplate": "%{text}",
            "customdata": [
                [[label, value] for label, value in zip(labels, numbers(row), strict=True)] for row in values
            ],
            "hovertemplate": "%{y}, window ending %{customdata[0]}<br>statistic %{customdata[1]:.4g}"
            " (%{z:.0%} of its largest)<extra></extra>",
        }
    ]
    layout = over_windows(labels, "", title={"text": "x: drifted", "x": 0.02, "font": {"size": 12}})
    layout["height"] = 160 + 24 * max(len(features), 1)
    layout["yaxis"] = {"automargin": True, "autorange": "reversed"}
    return {"data": data, "layout": layout}


def performance_figure(
    table: pd.DataFrame, labels: list[str], evaluation: dict[str, float]
) -> dict[str, Any]:
    """The estimated accuracy (CBPE) with its band, measured metrics where labels arrived, and
    the evaluation's scores as levels."""
    data: list[dict[str, Any]] = []
    if table["estimated_accuracy"].notna().any():
        band = {"mode": "lines", "line": {"width": 0}, "hovertemplate": BAND_HOVER}
        lower = line(labels, table["estimated_accuracy_lower"], "estimate band (3 sd)", COLOURS["reference"])
        lower |= band | {"meta": "the estimate's band, lower end", "showlegend": False}
        upper = line(labels, table["estimated_accuracy_upper"], "estimate band (3 sd)", COLOURS["reference"])
        upper |= band | {"meta": "the estimate's band, upper end", "fill": "tonexty", "fillcolor": BAND_FILL}
        estimated = line(
            labels, table["estimated_accuracy"], "estimated accuracy (CBPE)", COLOURS["reference"]
        )
        data += [lower, upper, estimated]
    for name in ("accuracy", "r2"):
        column = f"measured_{name}"
        if column in table and table[column].notna().any():
            data.append(line(labels, table[column], f"measured {name}", COLOURS["measured"], dash="dot"))
        if f"test/{name}" in evaluation and (column in table or name == "accuracy"):
            data.append(
                level(labels, evaluation[f"test/{name}"], f"evaluation {name}", COLOURS["evaluation"])
            )
    layout = over_windows(labels, "score")
    if not data:
        layout["annotations"] = [
            {
                "text": "no estimate and no labels yet",
                "xref": "paper",
                "yref": "paper",
                "x": 0.5,
                "y": 0.5,
                "showarrow": False,
            }
        ]
    return {"data": data, "layout": layout}


def volume_figure(table: pd.DataFrame, labels: list[str]) -> dict[str, Any]:
    """Logged records as bars; rejected requests (far fewer) as a line on their own axis."""
    records = line(labels, table["rows"], "logged records", COLOURS["reference"])
    records |= {"type": "bar", "width": 0.6}
    del records["mode"], records["line"]
    rejected = line(labels, table["rejected"], "rejected requests", COLOURS["alert"]) | {"yaxis": "y2"}
    layout = over_windows(labels, "logged records")
    layout["yaxis2"] = {
        "title": {"text": "rejected requests", "font": {"color": COLOURS["alert"]}},
        "overlaying": "y",
        "side": "right",
        "rangemode": "tozero",
    }
    layout["margin"] = {**MARGIN, "r": 60}
    return {"data": [records, rejected], "layout": layout}


def versions_figure(windows: list[dict[str, Any]], labels: list[str]) -> dict[str, Any]:
    """Each version in its colour: its estimated accuracy (CBPE, solid) and its measured accuracy
    or R² (dotted) where labels arrived, and its p99 latency (dashed, on the right axis); a gap
    where the version did not answer."""
    data = []
    for number, version in enumerate(answering(windows)):
        colour = VERSION_COLOURS[number % len(VERSION_COLOURS)]
        entries = [(window.get("versions") or {}).get(version) or {} for window in windows]
        estimated = [(entry.get("estimated") or {}).get("accuracy") for entry in entries]
        metrics = [(entry.get("measured") or {}).get("metrics") or {} for entry in entries]
        p99 = [(entry.get("latency") or {}).get("p99_ms") for entry in entries]
        if any(value is not None for value in estimated):
            data.append(line(labels, estimated, f"{version}: estimated accuracy", colour))
        for name in ("accuracy", "r2"):
            measured = [scores.get(name) for scores in metrics]
            if any(value is not None for value in measured):
                data.append(line(labels, measured, f"{version}: measured {name}", colour, dash="dot"))
        if any(value is not None for value in p99):
            data.append(
                line(labels, p99, f"{version}: p99 latency (ms)", colour, dash="dash") | {"yaxis": "y2"}
            )
    layout = over_windows(labels, "score")
    layout["yaxis2"] = {"title": {"text": "p99 latency (ms)"}, "overlaying": "y", "side": "right"}
    layout["margin"] = {**MARGIN, "r": 60}
    return {"data": data, "layout": layout}
