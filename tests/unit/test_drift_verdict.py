"""The dataset verdict's two rules: the share of drifted features, and one severely shifted
feature (`monitor.severe`); calibrated on windows drawn from the reference itself."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from forgeml.config import SevereConfig
from forgeml.errors import EXIT_DRIFT, EXIT_OK, ForgeError
from forgeml.monitoring.decay import Baseline, DecaySettings, Window, assess
from forgeml.monitoring.drift import (
    CategoricalReference,
    DriftSettings,
    NumericReference,
    dataset_drift,
    feature_drift,
    feature_references,
)
from forgeml.monitoring.profile import SKETCHES
from forgeml.stages.monitor import drift_settings
from tests.helpers.data import chile_like_table

# what the Chile traffic of the issue did: older by 25 years, three times the income
CHILE_SHIFT = {"age": lambda age: age + 25, "income": lambda income: income * 3}


def references(table: pd.DataFrame) -> dict:
    """The references `monitor` builds: from the table and its profile, as `prepare` sketches it."""
    kinds = {name: "numeric" if column.dtype.kind == "f" else "categorical" for name, column in table.items()}
    profile = {"features": {name: SKETCHES[kind](table[name]) for name, kind in kinds.items()}}
    return feature_references(profile, table, DriftSettings())


def shifted(table: pd.DataFrame) -> pd.DataFrame:
    return table.assign(**{name: move(table[name]) for name, move in CHILE_SHIFT.items()})


@pytest.mark.parametrize("reference_rows", [600, 1900])
def test_two_of_seven_features_moved_by_psi_above_one_are_drift_by_the_severe_rule(reference_rows):
    """The issue's case (carData::Chile: 2,700 rows, 7 features; KS / chi-squared for a small
    reference, distances for a larger one): the share rule alone said no drift, 2 of 7 (29%)."""
    rng = np.random.default_rng(20)
    reference = references(chile_like_table(rng, reference_rows))
    current = shifted(chile_like_table(rng, 1000))
    drift = dataset_drift(reference, current, DriftSettings())
    assert drift["drifted_features"] == ["age", "income"] and drift["share_drifted"] < 0.5
    assert drift["rule"] == "severe" and drift["dataset_drift"] is True
    assert list(drift["severe_features"]) == ["age", "income"]
    assert all(effects["psi"] > 1.0 for effects in drift["severe_features"].values())
    assert drift["severe_thresholds"] == {"psi": 1.0, "wasserstein": 1.0}
    share_only = dataset_drift(reference, current, DriftSettings(severe=None))
    assert share_only["dataset_drift"] is False and share_only["rule"] is None


def test_the_chile_like_case_exits_3_and_the_message_names_the_rule_and_its_effect_sizes():
    rng = np.random.default_rng(21)
    baseline = Baseline(features=references(chile_like_table(rng, 1900)), rows=1900)
    window = Window(None, None, shifted(chile_like_table(rng, 1000)))
    monitoring, report = assess(baseline, [window], DriftSettings(), DecaySettings(), None, "traffic")
    assert report["exit_code"] == monitoring["exit_code"] == EXIT_DRIFT and report["verdict"] == "drift"
    psi = [report["severe_features"][name]["psi"] for name in ("age", "income")]
    assert report["message"].startswith(
        f"drift: age, income severely shifted (PSI {psi[0]:.2f}, {psi[1]:.2f} >= monitor.severe.psi=1.0); "
        "2 of 7 features drifted (29%, threshold 50%)"
    )
    assert monitoring["windows"][0]["rule"] == "severe"
    assert list(monitoring["windows"][0]["severe_features"]) == ["age", "income"]
    unshifted = Window(None, None, chile_like_table(rng, 1000))
    _, calm = assess(baseline, [unshifted], DriftSettings(), DecaySettings(), None, "traffic")
    assert calm["exit_code"] == EXIT_OK and "severely" not in calm["message"]


def test_the_severe_rule_adds_no_false_alarm_on_windows_drawn_from_the_reference():
    """200 windows of 100 (monitor.min_samples) to 3,000 rows from the reference distribution of
    a mixed table (the Chile-like 7, a 60-valued categorical, a heavy tail): today's verdict is the
    share rule alone; the new one may add an alarm only where the severe rule fires alone. With
    none in 200, the one-sided 95% bound on the added false-alarm rate is 1.5%."""
    rng = np.random.default_rng(22)
    table = lambda rows: chile_like_table(rng, rows, wide=True)  # noqa: E731
    reference = references(table(2000))
    rules = [
        dataset_drift(reference, table(rows), DriftSettings())["rule"] for rows in [100, 300, 1000, 3000] * 50
    ]
    added = rules.count("severe")
    bound = stats.binomtest(added, len(rules), alternative="less").proportion_ci(0.95).high
    assert added == 0 and bound < 0.015
    # today's rule alone raises its own alarms here (distances of 100-row windows): kept as they were
    assert all(rule in (None, "share") for rule in rules)


def test_many_valued_columns_need_pooled_bins_to_stay_below_the_severe_psi():
    """200 equally likely values seen in 100 rows: half of them are absent by chance, and plain PSI
    (each empty bin floored at 1e-4) reads that as a severe shift; pooled, the noise is gone. A
    window that expects each value often enough still sees a real shift (an unseen value in 30%
    of the rows), as a small column does (a flag turned on)."""
    rng = np.random.default_rng(23)
    values = [f"id{i}" for i in range(200)]
    reference = CategoricalReference.from_values(rng.choice(values, 20_000))
    effect = lambda reference, current: feature_drift(reference, current, DriftSettings())  # noqa: E731
    small_window = effect(reference, rng.choice(values, 100))
    assert small_window["psi"] > 1.0 > 0.5 > small_window["effect"]["psi"]
    assert effect(reference, rng.choice(values, 5000))["effect"]["psi"] < 0.1
    unseen = np.concatenate([rng.choice(values, 3500), ["unseen"] * 1500])
    assert effect(reference, unseen)["effect"]["psi"] > 1.0
    flag = CategoricalReference.from_values(rng.choice(["off", "on"], 5000))
    assert effect(flag, rng.choice(["off", "on"], 300, p=[0.03, 0.97]))["effect"]["psi"] > 1.0


def test_a_tail_shift_is_severe_by_wasserstein_and_each_effect_size_can_be_switched_off():
    """The top decile moved ten stds out: the deciles' counts (PSI) barely change, the distance
    does. severe.wasserstein=null leaves only PSI, which does not fire; severe=null: the share rule."""
    rng = np.random.default_rng(24)
    reference = {f"x{i}": NumericReference.from_values(rng.normal(size=5000)) for i in range(4)}
    current = pd.DataFrame(rng.normal(size=(2000, 4)), columns=list(reference))
    tail = current["x0"] > np.quantile(current["x0"], 0.9)
    current.loc[tail, "x0"] += 10.0
    drift = dataset_drift(reference, current, DriftSettings())
    assert drift["rule"] == "severe" and list(drift["severe_features"]) == ["x0"]
    assert list(drift["severe_features"]["x0"]) == ["wasserstein"]
    assert drift["features"]["x0"]["effect"]["psi"] < 0.1
    _, report = assess(
        Baseline(features=reference, rows=5000),
        [Window(None, None, current)],
        DriftSettings(),
        DecaySettings(),
        None,
        "traffic",
    )
    wasserstein = drift["severe_features"]["x0"]["wasserstein"]
    assert (
        f"x0 severely shifted (Wasserstein/std {wasserstein:.2f} >= monitor.severe.wasserstein=1.0)"
        in report["message"]
    )
    psi_only = DriftSettings(severe=SevereConfig(psi=1.0, wasserstein=None))
    assert dataset_drift(reference, current, psi_only)["rule"] is None
    assert "wasserstein" not in dataset_drift(reference, current, psi_only)["features"]["x0"]["effect"]
    assert dataset_drift(reference, current, DriftSettings(severe=None))["severe_thresholds"] == {}


def test_severe_thresholds_come_from_the_config_and_mistakes_name_the_key(make_config):
    assert drift_settings(make_config().monitor).severe == SevereConfig(psi=1.0, wasserstein=1.0)
    assert drift_settings(make_config("monitor.severe=null").monitor).severe is None
    settings = drift_settings(
        make_config("monitor.severe.psi=2.5", "monitor.severe.wasserstein=null").monitor
    )
    assert settings.severe_thresholds() == {"psi": 2.5}
    with pytest.raises(ForgeError, match=r"monitor.severe.psi=0.0 must be positive \(or null: off\)"):
        drift_settings(make_config("monitor.severe.psi=0").monitor)
