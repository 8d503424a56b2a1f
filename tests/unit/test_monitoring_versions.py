"""Per-version monitoring: where two versions answered (a canary beside production), each is
judged on its own records, and the window's overall verdict stays what it was."""

from __future__ import annotations

import pandas as pd
import pytest
from rich.console import Console

from forgeml.io import write_json
from forgeml.layout import CALIBRATION
from forgeml.monitoring import decay
from forgeml.monitoring.decay import DecaySettings, answering_versions, assess, time_windows
from forgeml.monitoring.drift import DriftSettings
from forgeml.monitoring.plots import time_series_figures
from forgeml.monitoring.report import render_monitoring_html, windows_table
from forgeml.report import show
from forgeml.serving.registry import Registry
from forgeml.stages.monitor import version_baselines, version_calibration, version_numbers
from tests.helpers.monitoring import LABELS, NOW, labels_of, two_versions

SETTINGS = DriftSettings(small_reference_rows=5000)
DECAY = DecaySettings(0.05, 0.7)


def monitored(frame: pd.DataFrame, baseline, versions) -> tuple[dict, dict]:
    windows = time_windows(frame.drop(columns="actual"), "1d", 1, now=NOW)
    return assess(baseline, windows, SETTINGS, DECAY, labels_of(frame), "log", versions)


@pytest.fixture(scope="module")
def canary() -> tuple[dict, dict, dict]:
    """(monitoring, its last window's report) with versions, and the report without them."""
    baseline, frame = two_versions()
    versions = dict.fromkeys(answering_versions(frame), baseline)
    monitoring, last = monitored(frame, baseline, versions)
    _, plain = monitored(frame, baseline, None)
    return monitoring, last, plain


def test_each_version_is_judged_on_its_own_records(canary):
    _, last, _ = canary
    production, candidate = last["versions"]["1"], last["versions"]["2"]
    assert list(last["versions"]) == ["1", "2"]
    assert (production["rows"], production["rejected"]) == (600, 2)
    assert (candidate["rows"], candidate["rejected"]) == (600, 12)
    assert production["verdict"] == "no_drift" and production["drifted_features"] == []
    assert candidate["verdict"] == "decay" and "x1" in candidate["drifted_features"]
    assert candidate["estimated"]["accuracy"] < production["estimated"]["accuracy"] - 0.2
    assert candidate["measured"]["metrics"]["accuracy"] < production["measured"]["metrics"]["accuracy"] - 0.3
    assert candidate["latency"]["p99_ms"] > 5 * production["latency"]["p99_ms"]
    assert candidate["measured"]["labelled_rows"] == 600


def test_the_overall_result_is_what_it_was_without_versions(canary):
    monitoring, last, plain = canary
    assert plain["versions"] == {}

    def overall(report: dict) -> dict:
        return {key: value for key, value in report.items() if key not in ("versions", "created_at")}

    assert overall(last) == overall(plain)
    assert monitoring["windows"][0]["versions"] == last["versions"]
    assert last["rows"]["current"] == 1200 and last["rows"]["rejected"] == 14


def test_a_version_with_fewer_than_min_samples_rows_has_no_verdict():
    baseline, frame = two_versions(candidate_rows=40)
    _, last = monitored(frame, baseline, dict.fromkeys(["1", "2"], baseline))
    candidate = last["versions"]["2"]
    assert candidate["verdict"] == "insufficient_data" and candidate["rows"] == 40
    assert candidate["estimated"] is None and candidate["share_drifted"] is None
    assert last["versions"]["1"]["verdict"] == "no_drift"


def test_one_version_takes_the_window_numbers_without_a_second_pass(monkeypatch):
    baseline, frame = two_versions()
    frame = frame[frame["version"] == "1"]
    passes = []
    judge = decay.window_report
    monkeypatch.setattr(decay, "window_report", lambda *args: passes.append(1) or judge(*args))
    _, last = monitored(frame, baseline, dict.fromkeys(answering_versions(frame), baseline))
    assert len(passes) == 1
    [entry] = last["versions"].values()
    assert entry["rows"] == last["rows"]["current"] and entry["verdict"] == last["verdict"]
    assert entry["estimated"] == last["estimated"] and entry["latency"] == last["latency"]


def test_a_calibration_applies_to_the_version_of_the_model_it_was_fitted_for(make_config, tmp_path):
    cfg = make_config(f"paths.reports_dir={tmp_path / 'reports'}", f"serve.model_store={tmp_path / 'store'}")
    baseline, _ = two_versions()
    write_json(tmp_path / "reports" / CALIBRATION, {**baseline.calibration, "model_hash": "h1"})
    registry = Registry(cfg.serve.model_store)
    for version, model_hash in (("1", "h1"), ("2", "h2")):
        registry.record(cfg.serve.model_name, {"version": version, "model_hash": model_hash})
    fitted = version_calibration(cfg.paths.reports_dir, registry, cfg.serve.model_name, "1", LABELS)
    assert fitted["method"] == "isotonic"
    versions = version_baselines(cfg, baseline, ["1", "2", "3"], LABELS)
    assert [versions[v].calibration["method"] for v in ("1", "2", "3")] == ["isotonic", "none", "none"]
    # one version: the baseline as it is, no registry read
    assert version_baselines(cfg, baseline, ["2"], LABELS) == {"2": baseline}


def test_the_page_shows_the_versions_side_by_side_with_their_figure(canary):
    monitoring, _, _ = canary
    page = render_monitoring_html(monitoring)
    assert "<h2>Per version</h2>" in page
    assert page.count('<table class="versions">') == 1
    assert "<th>version 1</th><th>version 2</th>" in page
    figure = time_series_figures(monitoring, windows_table(monitoring))[
        "per version: performance and p99 latency"
    ]
    names = [trace["name"] for trace in figure["data"]]
    assert names == [
        f"{v}: {what}"
        for v in ("1", "2")
        for what in ("estimated accuracy", "measured accuracy", "p99 latency (ms)")
    ]
    assert [trace.get("yaxis") for trace in figure["data"]][2::3] == ["y2", "y2"]


def test_the_command_prints_a_line_per_version_when_several_answered(canary, monkeypatch):
    _, last, _ = canary
    console = Console(width=100, record=True, highlight=False)
    monkeypatch.setattr("forgeml.report.console", lambda: console)
    versions = {version: version_numbers(entry) for version, entry in last["versions"].items()}
    result = {"verdict": "decay", "exit_code": 3, "message": "m", "report": "r"}
    show("monitor", {**result, "versions": versions})
    lines = console.export_text().splitlines()
    [candidate] = [line for line in lines if line.startswith("  version 2:")]
    assert candidate.startswith("  version 2: decay, 600 rows, 12 rejected, p99 2")
    assert "est. accuracy 0.5" in candidate and "measured accuracy 0.1" in candidate
    console.export_text(clear=True)
    show("monitor", {**result, "versions": {"1": versions["1"]}})
    assert "version 1" not in console.export_text()
