"""monitoring.html as a real headless Chromium renders it: the page shows, its plots are there,
nothing is fetched."""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from forgeml.monitoring.report import render_monitoring_html
from tests.helpers.monitoring import synthetic_monitoring


@pytest.fixture(scope="module")
def monitored() -> tuple[dict, dict, pd.DataFrame]:
    return synthetic_monitoring()


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


def screenshot(page: Path, workdir: Path) -> tuple[Image.Image, list[str]]:
    """The page as drawn, and the URLs it requested while loading."""
    shot = chromium(
        "--screenshot=" + str(workdir / "shot.png"),
        "--window-size=1280,2600",
        f"--log-net-log={workdir / 'net.json'}",
        page.as_uri(),
        cwd=workdir,
    )
    assert shot.returncode == 0, shot.stderr
    return Image.open(workdir / "shot.png").convert("RGB"), page_requests(workdir / "net.json")


def test_monitoring_page_renders_in_chromium_with_its_plots_and_fetches_nothing(monitored, tmp_path):
    monitoring, _, _ = monitored
    # a control page: the check does see a page that fetches something
    control = tmp_path / "control.html"
    control.write_text('<!doctype html><img src="http://127.0.0.1:9/pixel.png">')
    assert any(url.startswith("http://127.0.0.1:9/") for url in screenshot(control, tmp_path)[1])
    page = tmp_path / "monitoring.html"
    page.write_text(render_monitoring_html(monitoring))
    drawn, requests = screenshot(page, tmp_path)
    loaded = chromium("--dump-dom", page.as_uri(), cwd=tmp_path)
    assert loaded.returncode == 0, loaded.stderr
    dom = loaded.stdout
    assert [url for url in requests if not url.startswith(("file:", "data:"))] == []
    assert "<h1>Monitoring: <span" in dom and "decay" in dom
    images = re.findall(r'<img alt="([^"]+)" src="data:image/png;base64,([^"]+)"', dom)
    assert [alt for alt, _ in images] == [
        "share of drifted features",
        "drift statistic per feature",
        "performance: estimated and measured",
        "request volume and rejections",
    ]
    for _, data in images:
        plot = Image.open(io.BytesIO(base64.b64decode(data)))
        assert plot.width > 300 and plot.height > 100
    assert dom.count("<tr class=") == 6
    pixels = np.asarray(drawn)
    # the page is drawn: text, and matplotlib's first colour (#1f77b4) from the plots
    assert (pixels.sum(axis=2) < 200).sum() > 1000
    assert (np.abs(pixels.astype(int) - [31, 119, 180]).sum(axis=2) < 30).sum() > 500
