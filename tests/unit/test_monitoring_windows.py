"""Monitoring over time on synthetic traffic: windows and their verdicts (the page a browser
renders: tests/integration/test_monitoring_page.py)."""

from __future__ import annotations

import pandas as pd
import pytest

from forgeml.errors import ForgeError
from forgeml.monitoring.decay import time_windows
from forgeml.stages.monitor import window_end
from tests.helpers.monitoring import NOW, synthetic_monitoring


@pytest.fixture(scope="module")
def monitored() -> tuple[dict, dict, pd.DataFrame]:
    return synthetic_monitoring()


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
