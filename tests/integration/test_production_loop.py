"""The production loop of examples/production_loop.py, run for real and checked step by step:
train v1 -> deploy -> traffic -> no drift -> shifted traffic -> drift on exactly the shifted
features -> labels: accuracy per window -> `forgeml watch --once`: a signed webhook -> retrain on
the new raw data with dvc repro -> gate -> replay v2 -> roll v2 out under live traffic (shadow,
50%, 100%) -> rollback."""

from __future__ import annotations

from datetime import datetime

import psutil
import pytest

from tests.helpers.data import load_example
from tests.helpers.ports import free_ports


@pytest.fixture(scope="module")
def loop(tmp_path_factory):
    module = load_example()
    ports = dict(zip(module.DEFAULT_PORTS, free_ports(len(module.DEFAULT_PORTS)), strict=True))
    workdir = tmp_path_factory.mktemp("loop")
    summary = module.main(workdir, ports, echo=lambda line: None)
    return module, workdir, summary


def test_in_distribution_traffic_shows_no_drift(loop):
    _, _, summary = loop
    assert summary["in_distribution"]["exit_code"] == 0
    assert summary["in_distribution"]["verdict"] == "no_drift"
    assert summary["in_distribution"]["rows"] >= 200


def test_shifted_traffic_drifts_on_exactly_the_shifted_features(loop):
    module, workdir, summary = loop
    assert summary["shifted"]["exit_code"] == 3
    assert sorted(summary["shifted"]["drifted_features"]) == sorted(module.SHIFTED)
    assert "mean radius" in (workdir / "reports" / "drift.html").read_text()


def test_monitoring_shows_measured_and_estimated_accuracy_next_to_drift_over_windows(loop):
    _, workdir, summary = loop
    windows = summary["over_time"]
    assert len(windows) >= 2
    traffic = [window for window in windows if window["rows"]["current"]]
    assert len(traffic) >= 2 and sum(window["rows"]["current"] for window in traffic) == 2 * 228
    for window in traffic:  # every answered record got its label back through its id
        assert window["measured"]["labelled_rows"] == window["rows"]["current"]
    last = windows[-1]
    assert (
        last["rows"]["current"] == 228
        and last["share_drifted"] > 0.3
        and last["estimated"]["accuracy"] is not None
    )
    low, high = last["estimated"]["accuracy_band"]
    assert 0.0 <= low <= last["estimated"]["accuracy"] <= high <= 1.0
    page = (workdir / "monitoring-with-labels.html").read_text()
    assert page.count('<div class="plot"') == 4 and "measured_accuracy" in page


def test_watch_delivers_one_signed_drift_alert_to_the_receiver(loop):
    module, _, summary = loop
    alert = summary["alert"]
    assert alert["exit_code"] == 0
    ((judged,),) = [alert["judged"]]
    assert judged["verdict"] == "drift"
    assert judged["actions"] == [{"on": "drift", "action": "webhook", "outcome": "delivered"}]
    ((delivery,),) = [alert["deliveries"]]
    notice = delivery["notice"]
    assert delivery["signed"]
    assert notice["verdict"] == "drift" and notice["rule"] == {"on": "drift", "actions": ["webhook"]}
    assert (notice["model"], notice["version"]) == (module.MODEL, summary["v1"])
    window_end = datetime.fromisoformat(notice["window"]["end"])
    assert window_end == datetime.fromisoformat(judged["window_end"])


def test_a_bad_request_gets_400_naming_the_field(loop):
    _, _, summary = loop
    status, answer = summary["bad_request"]
    assert status == 400 and answer["field"] == "mean radius"


def test_retraining_on_the_shifted_data_is_refused_by_v1s_data_contract_until_accepted(loop):
    _, _, summary = loop
    assert any(line.startswith("  - column 'mean radius': values range") for line in summary["contract"])
    assert summary["v2"] != summary["v1"]  # accepted: v2 was trained on it


def test_retrained_model_is_a_new_version_that_passes_the_gate_and_serves(loop):
    _, _, summary = loop
    assert summary["v2"] != summary["v1"]
    assert any(f" rollout {summary['v2']}: begin: gate passed " in line for line in summary["history"])
    assert summary["v2_metrics"]["test/accuracy"] >= 0.85
    assert summary["v2_shifted_accuracy"] >= 0.85


def test_replay_of_the_logged_traffic_with_the_labels_passes_v2(loop):
    _, _, summary = loop
    replay = summary["replay"]
    assert (replay["verdict"], replay["exit_code"]) == ("passed", 0)
    assert replay["version"] == summary["v2"] and replay["production"] == {summary["v1"]: replay["requests"]}
    measured = summary["replay_measured"]  # the labels of step 5 judge: v2 is the better model
    assert measured["labelled_rows"] == 2 * 228
    assert measured["candidate"]["accuracy"] > measured["production"]["accuracy"]


def test_rollout_promotes_v2_through_shadow_half_and_all_traffic_failing_no_client(loop):
    _, _, summary = loop
    rollout = summary["rollout"]
    assert [(step["step"], step["verdict"]) for step in rollout["steps"]] == [
        ("shadow", "passed"),
        ("50%", "passed"),
        ("100%", "passed"),
    ]
    assert all(step["candidate"]["requests"] >= 40 for step in rollout["steps"])
    assert rollout["steps"][0]["candidate"]["agreement"] is not None
    assert rollout["default_version"] == summary["v2"]
    assert rollout["requests"] > 3 * 40 and rollout["failed"] == 0


def test_history_lists_the_replay_each_rollout_step_and_the_promotion(loop):
    _, _, summary = loop
    # a line: "<time>  patients <action> <v2>: <what> (<numbers>) - <user>@<host>"
    events = [line.split("  patients ")[1].rsplit(" - ", 1)[0] for line in summary["history"]]
    v2 = summary["v2"]
    assert [event.split(" (")[0] for event in events] == [
        f"replay {v2}: passed on 1 of 1 window(s)",
        f"rollout {v2}: begin: gate passed",
        f"rollout {v2}: shadow: passed",
        f"rollout {v2}: 50%: passed",
        f"rollout {v2}: 100%: passed",
        f"deploy {v2}: promoted after every rollout step passed",
    ]
    assert all(" failed, p99 " in event for event in events[2:5])


def test_strict_gate_refuses_quoting_the_numbers(loop):
    _, _, summary = loop
    assert "gate refused" in summary["strict_gate"]
    assert "below the required minimum 0.9990" in summary["strict_gate"]


def test_rollback_serves_v1_again_and_the_registry_traces_it(loop):
    _, _, summary = loop
    assert summary["after_rollback"] == summary["v1"]
    registry = {entry["version"]: entry for entry in summary["registry"]}
    assert set(registry) == {summary["v1"], summary["v2"]}
    assert registry[summary["v1"]]["serving"] and not registry[summary["v2"]]["serving"]
    assert registry[summary["v1"]]["data_hash"] != registry[summary["v2"]]["data_hash"]


def test_the_loop_leaves_no_server_behind(loop):
    _, workdir, _ = loop
    runtime = str(workdir / "serve" / "runtime")
    alive = [
        p for p in psutil.process_iter(["cmdline", "status"]) if p.info["status"] != psutil.STATUS_ZOMBIE
    ]
    left = [p.pid for p in alive if runtime in " ".join(p.info["cmdline"] or [])]
    assert left == []
