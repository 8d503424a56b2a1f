"""drift.html and monitoring.html as a real headless Chromium renders them: the pages show, each
plot is drawn by plotly.js (its SVG), hovering a point shows that point's values, and nothing is
fetched but the plotly.js beside the pages."""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from forgeml.monitoring.plots import shares_figure
from forgeml.monitoring.report import drifted_figures, render_html, render_monitoring_html, write_plotly_js
from tests.helpers.monitoring import synthetic_monitoring

# appended to a page under test: hovers each plot's first point (a heatmap's first cell, at its
# data coordinates) as a pointer would, and writes what each plot shows into the page as JSON
PROBE = """<script>
const probed = [...document.querySelectorAll("div.plot")].map((plot) => {
  const heatmap = plot.data[0].type === "heatmap";
  Plotly.Fx.hover(plot, heatmap ? {xval: 0, yval: 0} : [{curveNumber: 0, pointNumber: 0}]);
  const hover = plot.querySelector(".hoverlayer").textContent;
  return {svg: plot.querySelectorAll("svg.main-svg").length, hover: hover};
});
const probe = document.createElement("pre");
probe.id = "probe";
probe.textContent = JSON.stringify(probed);
document.body.append(probe);
</script>"""


@pytest.fixture(scope="module")
def pages(tmp_path_factory) -> dict[str, Path]:
    """Both pages of the synthetic monitoring, with plotly.js beside them as the stage writes it;
    drift.html plots the drifted numeric features and a categorical feature."""
    monitoring, last, frame = synthetic_monitoring()
    directory = tmp_path_factory.mktemp("reports")
    figures = drifted_figures({**last, "prediction": None}, pd.DataFrame(), frame, baseline=None)
    figures["colour"] = shares_figure("colour", ["red"] * 70 + ["blue"] * 30, ["red"] * 20 + ["blue"] * 80)
    (directory / "drift.html").write_text(render_html(last, figures))
    (directory / "monitoring.html").write_text(render_monitoring_html(monitoring))
    write_plotly_js(directory)
    return {"drift": directory / "drift.html", "monitoring": directory / "monitoring.html"}


def chromium(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """Headless Chromium with a fresh profile; background services off as far as flags go."""
    if shutil.which("chromium") is None:
        pytest.fail("chromium is not installed: `apt-get install -y chromium` (`make test` does it)")
    command = [
        "chromium",
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        f"--user-data-dir={cwd / 'profile'}",
        *args,
    ]
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=120)


def page_requests(net_log: Path) -> list[str]:
    """URLs the page itself asked for: requests isolated under its file:// site (Chromium's own
    background requests carry another isolation key)."""
    log = json.loads(net_log.read_text())
    start = log["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"]
    return [
        event["params"]["url"]
        for event in log["events"]
        if event["type"] == start and event["params"].get("network_isolation_key", "").startswith("file://")
    ]


def probed(page: Path, workdir: Path) -> tuple[list[dict], list[str], str]:
    """What each plot of `page` shows once drawn and hovered (PROBE), the URLs it requested
    through the network stack (Chromium reads file: URLs without it), and its DOM."""
    probing = page.with_name(f"probed-{page.name}")
    probing.write_text(page.read_text().replace("</body>", f"{PROBE}</body>"))
    loaded = chromium("--dump-dom", f"--log-net-log={workdir / 'net.json'}", probing.as_uri(), cwd=workdir)
    assert loaded.returncode == 0, loaded.stderr
    [found] = re.findall(r'<pre id="probe">(.*?)</pre>', loaded.stdout, flags=re.S)
    return json.loads(html.unescape(found)), page_requests(workdir / "net.json"), loaded.stdout


def test_the_request_log_sees_a_page_that_fetches_something(tmp_path):
    control = tmp_path / "control.html"
    control.write_text('<!doctype html><img src="http://127.0.0.1:9/pixel.png">')
    chromium("--dump-dom", f"--log-net-log={tmp_path / 'net.json'}", control.as_uri(), cwd=tmp_path)
    assert any(url.startswith("http://127.0.0.1:9/") for url in page_requests(tmp_path / "net.json"))


@pytest.mark.parametrize(
    ("page", "heading", "hover_texts"),
    [
        (
            "monitoring",
            "<h1>Monitoring: <span",
            ["share drifted: ", "statistic", "the estimate's band, lower end: ", "logged records: "],
        ),
        (
            "drift",
            "<h1>Drift report: <span",
            ["reference: density", "reference: density", "reference: blue 30.0%"],
        ),
    ],
)
def test_each_plot_is_drawn_and_shows_its_values_on_hover_and_only_plotly_js_is_loaded(
    pages, page, heading, hover_texts, tmp_path
):
    plots, requests, dom = probed(pages[page], tmp_path)
    assert heading in dom
    assert [plot["svg"] > 0 for plot in plots] == [True] * len(hover_texts)
    for plot, expected in zip(plots, hover_texts, strict=True):
        assert expected in plot["hover"]
    # plotly.js came from the file beside the page (the plots are drawn); nothing else was asked for
    assert [url for url in requests if not url.startswith("file:")] == []


def test_monitoring_page_is_painted_with_its_plots(pages, tmp_path):
    shot = chromium(
        "--screenshot=" + str(tmp_path / "shot.png"),
        "--window-size=1280,2600",
        pages["monitoring"].as_uri(),
        cwd=tmp_path,
    )
    assert shot.returncode == 0, shot.stderr
    pixels = np.asarray(Image.open(tmp_path / "shot.png").convert("RGB"))
    # text, and the plots' first colour (#1f77b4: the share line, the volume bars)
    assert (pixels.sum(axis=2) < 200).sum() > 1000
    assert (np.abs(pixels.astype(int) - [31, 119, 180]).sum(axis=2) < 30).sum() > 500
