"""Sampling a user can see and change, forgeml's side: the insufficient-data verdict says how
many records the window served and at what rate they were logged, `monitor.sample_rate` takes
`auto`, and `forgeml serve configure` writes the settings a running server's workers re-read
(the workers' side: tests/unit/test_serving_handler.py)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from forgeml.contract import LOG_SETTINGS_FILE
from forgeml.errors import EXIT_INSUFFICIENT_DATA, ForgeError
from forgeml.io import read_json
from forgeml.monitoring.decay import Baseline, DecaySettings, Window, assess
from forgeml.monitoring.drift import DriftSettings, NumericReference
from forgeml.serving.archive import inference_log_settings
from forgeml.stages import serve


def logged_window(seen: list[int | None], rates: list[float | None]) -> Window:
    """A window of logged records, each with its `seen` and `sample_rate` (None: an older line
    without them), and one rejected request."""
    rng = np.random.default_rng(0)
    records = pd.DataFrame({"x": rng.normal(size=len(seen)), "seen": seen, "sample_rate": rates})
    rejected = pd.DataFrame({"rejected": ["wrong_type"]})
    return Window(None, None, pd.concat([records, rejected], ignore_index=True))


def verdict(window: Window) -> dict:
    baseline = Baseline(features={"x": NumericReference.from_values(np.arange(500.0))}, rows=500)
    _, report = assess(baseline, [window], DriftSettings(min_samples=100), DecaySettings(), None, "log")
    return report


def test_too_few_rows_say_how_many_records_the_window_served_and_at_what_rate():
    report = verdict(logged_window([12, 10, 8] * 8 + [9, 11], [0.1] * 26))
    assert report["exit_code"] == EXIT_INSUFFICIENT_DATA
    assert report["message"].startswith(
        "only 26 rows in log: the window served ~260 records and logged 26 at sample rate 0.1; "
        "at least monitor.min_samples=100 are needed for a verdict"
    )
    assert "monitor.sample_rate=auto" in report["message"]
    assert report["rows"] == {"reference": 500, "current": 26, "rejected": 1, "served": 260}
    assert report["sample_rates"] == [0.1]


def test_records_logged_at_several_rates_name_the_range():
    report = verdict(logged_window([1] * 20 + [10] * 5, [1.0] * 20 + [0.1] * 5))
    assert "served ~70 records and logged 25 at sample rates 0.1 to 1;" in report["message"]


def test_a_log_without_the_counts_keeps_the_message_without_them():
    old = verdict(logged_window([None] * 26, [None] * 26))
    assert old["message"] == (
        "only 26 rows in log; at least monitor.min_samples=100 are needed for a verdict"
    )
    assert old["rows"]["served"] is None and old["sample_rates"] is None
    mixed = verdict(logged_window([None] * 10 + [5] * 16, [None] * 10 + [0.2] * 16))
    assert mixed["rows"]["served"] is None  # an undercount would mislead: none is given


@pytest.mark.parametrize("rate", ["auto", 0, 0.5, 1])
def test_sample_rate_is_a_share_or_auto(make_config, rate):
    settings = inference_log_settings(make_config(f"monitor.sample_rate={rate}").monitor, [])
    assert settings["sample_rate"] == (rate if rate == "auto" else float(rate))


@pytest.mark.parametrize("rate", ["sometimes", 1.5, -0.1, True])
def test_a_sample_rate_neither_a_share_nor_auto_is_refused_naming_the_key(make_config, rate):
    with pytest.raises(ForgeError, match=r"^monitor.sample_rate=.* must lie between 0 and 1 .*or be auto$"):
        inference_log_settings(make_config(f"monitor.sample_rate={rate}").monitor, [])


def test_configure_writes_the_settings_file_in_the_log_directory(make_config, tmp_path):
    cfg = make_config(
        "monitor.sample_rate=auto",
        "monitor.window_duration=1d",
        "monitor.min_samples=50",
        "monitor.auto_base_rate=0.05",
        f"monitor.log_dir={tmp_path / 'log'}",
    )
    result = serve.configure(cfg)
    assert result["settings_file"] == str(tmp_path / "log" / LOG_SETTINGS_FILE)
    written = read_json(result["settings_file"])
    assert written == {
        "format": "forgeml.log_settings/1",
        "sample_rate": "auto",
        "log_max_bytes": 10_000_000,
        "log_backups": 5,
        "auto_min_samples": 50,
        "auto_window_s": 86_400.0,
        "auto_base_rate": 0.05,
    }
    with pytest.raises(ForgeError, match=r"monitor.auto_base_rate=2.0 must lie between 0 and 1"):
        serve.configure(make_config("monitor.auto_base_rate=2", f"monitor.log_dir={tmp_path / 'log'}"))
    assert read_json(result["settings_file"]) == written  # a refused value changes nothing
