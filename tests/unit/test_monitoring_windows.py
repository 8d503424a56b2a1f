"""Monitoring over time on synthetic traffic: windows, their verdicts, and monitoring.html as a
real headless Chromium renders it (the page shows, its plots are there, nothing is fetched)."""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
import subprocess
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from forgeml.contract import probability_column
from forgeml.errors import ForgeError
from forgeml.monitoring.decay import Baseline, DecaySettings, assess, time_windows
from forgeml.monitoring.drift import DriftSettings, NumericReference
from forgeml.monitoring.performance import fit_calibration
from forgeml.monitoring.report import render_monitoring_html
from forgeml.stages.monitor import window_end

NOW = datetime(2026, 6, 15, 12, 0, tzinfo=timezone.utc)
LABELS = ["no", "yes"]


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def traffic(rng: np.random.Generator, days: int, per_day: int) -> pd.DataFrame:
    """`days` days of logged records ending at NOW; from day 4 on, x0 crowds the boundary and
    x1 moves (the model gets worse), and a few requests a day are rejected."""
    frames = []
    for day in range(days):
        start = pd.Timestamp(NOW) - pd.Timedelta(days=days - day)
        ts = start + pd.to_timedelta(np.sort(rng.uniform(0, 86_000, per_day)), unit="s")
        late = day >= 4
        x0 = rng.normal(0.0, 0.35 if late else 1.0, per_day)
        x1 = rng.normal(1.5 if late else 0.0, 1.0, per_day)
        p = sigmoid(4.0 * x0)
        frames.append(
            pd.DataFrame(
                {
                    "ts": ts,
                    "id": [f"d{day}-{i}" for i in range(per_day)],
                    "x0": x0,
                    "x1": x1,
                    "prediction": np.where(p > 0.5, "yes", "no"),
                    probability_column("no"): 1 - p,
                    probability_column("yes"): p,
                    "actual": np.where(rng.random(per_day) < sigmoid(2.5 * x0), "yes", "no"),
                }
            )
        )
        rejected = pd.DataFrame({"ts": ts[: day + 1], "rejected": ["wrong_type"] * (day + 1)})
        frames.append(rejected)
    return pd.concat(frames, ignore_index=True).sort_values("ts", ignore_index=True)


@pytest.fixture(scope="module")
def monitored() -> tuple[dict, dict, pd.DataFrame]:
    rng = np.random.default_rng(0)
    train = rng.normal(size=(2000, 2))
    evaluation_x = rng.normal(size=3000)
    model = sigmoid(4.0 * evaluation_x)
    evaluation_y = (rng.random(3000) < sigmoid(2.5 * evaluation_x)).astype(int)
    baseline = Baseline(
        features={f"x{i}": NumericReference.from_values(train[:, i]) for i in range(2)},
        rows=2000,
        task="classification",
        predictions=np.where(sigmoid(4.0 * train[:, 0]) > 0.5, "yes", "no"),
        calibration=fit_calibration(np.column_stack([1 - model, model]), evaluation_y, LABELS),
        evaluation={"test/accuracy": float(np.mean((model > 0.5) == evaluation_y)), "test/f1_macro": 0.8},
    )
    frame = traffic(rng, 6, 400)
    labels = frame.loc[frame["actual"].notna(), ["id", "actual"]].rename(columns={"actual": "label"})
    windows = time_windows(frame.drop(columns="actual"), "1d", 6, now=NOW)
    # KS for this reference; dataset drift when both features drift
    settings = DriftSettings(small_reference_rows=5000, share_threshold=1.0)
    monitoring, last = assess(baseline, windows, settings, DecaySettings(0.05, 0.7), labels, "log")
    return monitoring, last, frame


def test_one_result_per_window_with_volume_rejections_drift_and_performance(monitored):
    monitoring, last, _ = monitored
    windows = monitoring["windows"]
    assert len(windows) == 6
    assert [w["rows"]["current"] for w in windows] == [400] * 6
    assert [w["rows"]["rejected"] for w in windows] == [1, 2, 3, 4, 5, 6]
    assert [w["verdict"] for w in windows[:4]] == ["no_drift"] * 4
    assert [w["verdict"] for w in windows[4:]] == ["decay", "decay"]
    assert [w["drifted_features"] for w in windows[4:]] == [["x0", "x1"]] * 2
    for window in windows:
        estimated, measured = window["estimated"], window["measured"]
        low, high = estimated["accuracy_band"]
        assert low <= measured["metrics"]["accuracy"] <= high
    assert windows[5]["estimated"]["accuracy"] < windows[0]["estimated"]["accuracy"] - 0.1
    assert monitoring["exit_code"] == 3 and last["verdict"] == "decay"
    assert "estimated accuracy" in last["message"] and "measured accuracy" in last["message"]


def test_windows_need_a_duration_and_take_late_stamps_into_the_last_one():
    frame = pd.DataFrame(
        {"ts": pd.to_datetime(["2026-06-15T11:00Z", "2026-06-15T13:00Z", "2026-06-13T00:00Z"])}
    )
    windows = time_windows(frame, "1d", 3, now=NOW)
    assert [len(w.records) for w in windows] == [1, 0, 2]
    with pytest.raises(ForgeError, match=r"monitor.windows=3 needs monitor.window_duration"):
        time_windows(frame, None, 3)
    with pytest.raises(ForgeError, match=r"monitor.window_duration='soon' is not a duration"):
        time_windows(frame, "soon", 3)


def test_window_end_sets_the_end_of_the_last_window_in_utc(make_config):
    end = window_end(make_config("monitor.window_end=2026-06-15T12:00Z").monitor)
    assert end == pd.Timestamp(NOW) and window_end(make_config().monitor) is None
    assert window_end(make_config("monitor.window_end=2026-06-15T14:00+02:00").monitor) == end
    with pytest.raises(ForgeError, match=r"monitor.window_end='yesterday' is not a time"):
        window_end(make_config("monitor.window_end=yesterday").monitor)


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
