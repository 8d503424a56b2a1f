"""drift.html and monitoring.html draw their plots with the plotly.js written beside them: the
pages load that file and nothing else, their figures cannot end the script that holds them, and
the file is written once (again only when plotly's own differs). A real browser draws the pages
in tests/integration/test_monitoring_page.py."""

from __future__ import annotations

import importlib.util
import math
import re
from pathlib import Path

import pytest

from forgeml.layout import PLOTLY_JS
from forgeml.monitoring.plots import numbers, shares_figure, time_series_figures
from forgeml.monitoring.report import render_html, render_monitoring_html, windows_table, write_plotly_js
from tests.helpers.monitoring import synthetic_monitoring


@pytest.fixture(scope="module")
def monitored() -> tuple[dict, dict]:
    monitoring, last, _ = synthetic_monitoring()
    return monitoring, last


def test_pages_load_only_the_plotly_js_beside_them(monitored):
    monitoring, last = monitored
    figures = {"colour": shares_figure("colour", ["red", "blue"], ["red", "red"])}
    for page in (render_monitoring_html(monitoring), render_html(last, figures)):
        assert re.findall(r'(?:src|href)="([^"]*)"', page) == [PLOTLY_JS]
        assert "://" not in page


def test_a_category_named_like_a_closing_script_tag_stays_inside_the_figure(monitored):
    _, last = monitored
    name = "</script><script>alert(1)</script>"
    page = render_html(last, {"odd": shares_figure("odd", [name, "a"], ["a", "a"])})
    # the plotly.js tag, the drawing function and the figures: three scripts, each closed once
    assert page.count("<script") == page.count("</script>") == 3
    assert name.replace("<", "\\u003c") in page


def test_missing_numbers_are_gaps_not_nan():
    assert numbers([1.5, math.nan, 2]) == [1.5, None, 2.0]


def test_plotly_js_is_written_once_and_replaced_when_it_differs(tmp_path):
    package = Path(importlib.util.find_spec("plotly").submodule_search_locations[0])
    shipped = (package / "package_data" / "plotly.min.js").read_bytes()
    written = write_plotly_js(tmp_path)
    assert written == tmp_path / PLOTLY_JS and written.read_bytes() == shipped
    before = written.stat()
    write_plotly_js(tmp_path)
    assert (written.stat().st_ino, written.stat().st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    written.write_bytes(shipped[:-1] + b" ")
    write_plotly_js(tmp_path)
    assert written.read_bytes() == shipped


def test_the_heatmap_has_a_row_per_feature_relative_to_its_largest_with_drifted_windows_marked(monitored):
    monitoring, _ = monitored
    figure = time_series_figures(monitoring, windows_table(monitoring))["drift statistic per feature"]
    [heatmap] = figure["data"]
    windows = monitoring["windows"]
    assert heatmap["y"] == ["x0", "x1"]
    for name, row, marks in zip(heatmap["y"], heatmap["z"], heatmap["text"], strict=True):
        statistics = [window["features"][name]["statistic"] for window in windows]
        assert row == pytest.approx([statistic / max(statistics) for statistic in statistics])
        assert marks == ["x" if window["features"][name]["drifted"] else "" for window in windows]
    assert "x" in heatmap["text"][0] and "" in heatmap["text"][0]
