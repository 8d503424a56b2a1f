"""Drift statistics on synthetic data with known answers, checked against scipy where it has one."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hydra.errors import ConfigCompositionException
from scipy import spatial, stats

from forgeml.cli import describe_config_error
from forgeml.data.transform import MISSING_CATEGORY
from forgeml.errors import ForgeError
from forgeml.monitoring.drift import (
    CategoricalReference,
    ColumnTest,
    DriftSettings,
    NumericReference,
    SortedSample,
    chi2_test,
    count_categories,
    dataset_drift,
    distinct_sorted,
    feature_drift,
    feature_references,
    jensen_shannon,
    ks_test,
    sorted_quantiles,
    wasserstein_distance,
)
from forgeml.monitoring.report import drifted_figures
from forgeml.stages.monitor import check_columns, drift_settings


def numeric_table(rng: np.random.Generator, rows: int, features: int) -> pd.DataFrame:
    return pd.DataFrame(rng.normal(size=(rows, features)), columns=[f"x{i}" for i in range(features)])


def numeric_references(table: pd.DataFrame) -> dict[str, NumericReference]:
    return {name: NumericReference.from_values(table[name].to_numpy()) for name in table}


def test_identical_distributions_drift_at_the_nominal_rate_with_ks():
    settings = DriftSettings(min_samples=50)
    decisions = []
    for seed in range(12):
        rng = np.random.default_rng(seed)
        reference, current = numeric_table(rng, 400, 50), numeric_table(rng, 600, 50)
        features = dataset_drift(numeric_references(reference), current, settings)["features"]
        assert {entry["test"] for entry in features.values()} == {"ks"}
        decisions += [entry["drifted"] for entry in features.values()]
    # 600 tests at p < 0.05: 30 expected; 3 binomial standard deviations either side
    assert 0.05 - 3 * 0.0089 < np.mean(decisions) < 0.05 + 3 * 0.0089


def test_identical_categorical_distributions_drift_at_the_nominal_rate_with_chi2():
    settings = DriftSettings(min_samples=50)
    shares = [0.5, 0.3, 0.15, 0.05]
    decisions = []
    for seed in range(400):
        rng = np.random.default_rng(seed)
        reference = CategoricalReference.from_values(rng.choice(list("abcd"), 500, p=shares))
        decisions.append(
            feature_drift(reference, rng.choice(list("abcd"), 300, p=shares), settings)["drifted"]
        )
    assert 0.05 - 3 * 0.011 < np.mean(decisions) < 0.05 + 3 * 0.011


def test_large_reference_uses_distances_and_never_flags_identical_distributions():
    rng = np.random.default_rng(7)
    reference, current = numeric_table(rng, 5000, 20), numeric_table(rng, 3000, 20)
    drift = dataset_drift(numeric_references(reference), current, DriftSettings())
    assert {entry["test"] for entry in drift["features"].values()} == {"wasserstein"}
    assert drift["drifted_features"] == []
    assert max(entry["statistic"] for entry in drift["features"].values()) < 0.05


@pytest.mark.parametrize("reference_rows", [500, 5000])
def test_shifted_and_scaled_features_are_detected(reference_rows):
    rng = np.random.default_rng(3)
    reference, current = numeric_table(rng, reference_rows, 12), numeric_table(rng, 4000, 12)
    current["x2"] += 0.5
    current["x7"] *= 1.6
    drift = dataset_drift(numeric_references(reference), current, DriftSettings())
    features = drift["features"]
    assert features["x2"]["drifted"] and features["x7"]["drifted"]
    assert features["x2"]["psi"] > 0.1
    if reference_rows > 1000:
        # distances between samples of one distribution stay far below 0.1: exactly these two
        assert drift["drifted_features"] == ["x2", "x7"]
    else:
        assert features["x2"]["p_value"] < 1e-4 and features["x7"]["p_value"] < 1e-4
    assert drift["share_drifted"] == len(drift["drifted_features"]) / 12
    assert drift["dataset_drift"] is False


def test_dataset_drifts_when_the_share_of_drifted_features_reaches_the_threshold():
    rng = np.random.default_rng(4)
    reference, current = numeric_table(rng, 5000, 4), numeric_table(rng, 2000, 4)
    current[["x0", "x1"]] += 1.0
    references = numeric_references(reference)
    at_half = dataset_drift(references, current, DriftSettings(share_threshold=0.5))
    assert at_half["dataset_drift"] and at_half["rule"] == "share"
    share_only = DriftSettings(share_threshold=0.75, severe=None)
    assert not dataset_drift(references, current, share_only)["dataset_drift"]


@pytest.mark.parametrize(
    ("reference_rows", "current_rows"), [(300, 120), (800, 5000), (20, 7), (900, 30_000)]
)
def test_ks_matches_scipy_auto_exact_for_small_samples_including_ties(reference_rows, current_rows):
    rng = np.random.default_rng(reference_rows)
    for reference, current in [
        (rng.normal(size=reference_rows), rng.normal(0.2, 1.0, current_rows)),
        (rng.integers(0, 6, reference_rows).astype(float), rng.integers(0, 8, current_rows).astype(float)),
    ]:
        ours = ks_test(NumericReference.from_values(reference), SortedSample.of(current))
        theirs = stats.ks_2samp(reference, current, method="auto")
        assert ours == pytest.approx((theirs.statistic, theirs.pvalue), rel=1e-9, abs=1e-12)


def test_small_sample_ks_p_values_are_exact_not_asymptotic():
    rng = np.random.default_rng(11)
    reference, current = rng.normal(size=400), rng.normal(0.15, 1.0, 300)
    _, p_value = ks_test(NumericReference.from_values(reference), SortedSample.of(current))
    exact = stats.ks_2samp(reference, current, method="exact").pvalue
    asymptotic = stats.ks_2samp(reference, current, method="asymp").pvalue
    assert p_value == pytest.approx(exact, rel=1e-12) and abs(exact - asymptotic) > 1e-4


@pytest.mark.parametrize(("reference_rows", "tolerance"), [(7, 1e-9), (900, 1e-9), (30_000, 1e-3)])
def test_wasserstein_matches_scipy(reference_rows, tolerance):
    rng = np.random.default_rng(reference_rows)
    reference = rng.normal(size=reference_rows)
    for current in (rng.normal(0.1, 1.3, 2000), rng.normal(5.0, 0.2, 50), np.round(rng.normal(size=999))):
        ours = wasserstein_distance(NumericReference.from_values(reference), SortedSample.of(current))
        assert ours == pytest.approx(stats.wasserstein_distance(reference, current), rel=tolerance)


def test_jensen_shannon_equals_scipy_with_empty_categories_on_either_side():
    rng = np.random.default_rng(11)
    for _ in range(20):
        reference, current = rng.integers(0, 50, 8), rng.integers(0, 5000, 8)
        reference[rng.integers(0, 8)] = 0
        current[rng.integers(0, 8)] = 0
        expected = spatial.distance.jensenshannon(reference, current)
        assert jensen_shannon(reference, current) == pytest.approx(expected, rel=1e-12, abs=1e-15)


def test_a_new_category_is_drift():
    rng = np.random.default_rng(5)
    old = rng.choice(["red", "green", "blue"], 3000, p=[0.5, 0.3, 0.2])
    new = np.concatenate([rng.choice(["red", "green", "blue"], 700, p=[0.5, 0.3, 0.2]), ["purple"] * 300])
    for reference_rows, test in [(800, "chi2"), (3000, "jensenshannon")]:
        reference = CategoricalReference.from_values(old[:reference_rows])
        entry = feature_drift(reference, new, DriftSettings())
        assert entry["test"] == test and entry["drifted"] is True
        assert entry["psi"] > 1.0
        unchanged = feature_drift(reference, new[:700], DriftSettings())
        assert unchanged["drifted"] is False


def test_a_jump_in_missing_values_is_its_own_signal_not_distribution_drift():
    reference = CategoricalReference.from_frequencies({"a": 600, "b": 400, MISSING_CATEGORY: 10})
    rng = np.random.default_rng(8)
    present = rng.choice(["a", "b"], 300, p=[0.6, 0.4])
    current = np.array([*present, *[None] * 100], dtype=object)
    entry = feature_drift(reference, current, DriftSettings(min_samples=10))
    assert entry["missing"] == 100 and entry["missing_share"] == 0.25
    assert entry["reference_missing_share"] == pytest.approx(10 / 1010)
    assert entry["missing_drifted"] is True and entry["drifted"] is False
    table = [[10, 1000], [100, 300]]
    assert entry["missing_p_value"] == pytest.approx(stats.chi2_contingency(table, correction=False).pvalue)
    numeric = NumericReference.from_values(rng.normal(size=800))
    values = rng.normal(size=400)
    values[:60] = np.nan
    entry = feature_drift(numeric, values, DriftSettings())
    assert entry["missing_drifted"] is True and entry["drifted"] is False
    assert feature_drift(numeric, values[60:], DriftSettings())["missing_drifted"] is False


def test_missing_share_within_the_threshold_is_no_missing_drift():
    rng = np.random.default_rng(9)
    reference = NumericReference.from_values(np.where(rng.random(5000) < 0.1, np.nan, rng.normal(size=5000)))
    values = np.where(rng.random(50_000) < 0.12, np.nan, rng.normal(size=50_000))
    entry = feature_drift(reference, values, DriftSettings())
    # significant with 50,000 rows, but a 2-point move is below missing_share_threshold (0.05)
    assert entry["missing_p_value"] < 0.05 and entry["missing_drifted"] is False


def test_too_few_values_give_no_verdict():
    rng = np.random.default_rng(6)
    reference = numeric_references(numeric_table(rng, 500, 3))
    current = numeric_table(rng, 99, 3)
    current.loc[:, "x1"] = np.nan
    drift = dataset_drift(reference, current.iloc[:, :2], DriftSettings(min_samples=100))
    for entry in drift["features"].values():
        assert entry["test"] is None and entry["drifted"] is None
    assert drift["tested_features"] == 0 and drift["dataset_drift"] is False
    enough = dataset_drift(reference, current, DriftSettings(min_samples=50))
    assert enough["features"]["x0"]["drifted"] is not None
    assert enough["features"]["x1"]["drifted"] is None and enough["features"]["x1"]["missing"] == 99
    assert enough["features"]["x2"]["drifted"] is not None
    assert enough["tested_features"] == 2


def test_text_infinities_and_blanks_in_numeric_columns_count_as_missing():
    reference = NumericReference.from_values(np.arange(200, dtype=float))
    current = np.array([*map(str, range(150)), "abc", None, "inf", "-inf", "", "nan"], dtype=object)
    entry = feature_drift(reference, current, DriftSettings(min_samples=100))
    assert entry["rows"] == 156 and entry["missing"] == 6
    assert entry["drifted"] is True  # 0..149 against 0..199: the top quarter is gone


def test_configured_methods_override_auto(make_config):
    cfg = make_config("monitor.numeric_method=psi", "monitor.categorical_method=jensenshannon")
    settings = drift_settings(cfg.monitor)
    assert settings.test_for("numeric", 10) == "psi"
    assert settings.test_for("categorical", 10) == "jensenshannon"
    assert DriftSettings().test_for("numeric", 1000) == "ks"
    assert DriftSettings().test_for("numeric", 1001) == "wasserstein"


def test_monitor_config_mistakes_are_refused_naming_the_key(make_config):
    with pytest.raises(ForgeError, match=r"monitor.categorical_method=ks .*choose auto, chi2"):
        drift_settings(make_config("monitor.categorical_method=ks").monitor)
    with pytest.raises(ForgeError, match=r"monitor.sample_rate=1.5 must lie between 0 and 1"):
        drift_settings(make_config("monitor.sample_rate=1.5").monitor)
    with pytest.raises(ConfigCompositionException) as refused:
        make_config("monitor.numeric_method=kolmogorov")
    message = describe_config_error(refused.value)
    assert "monitor.numeric_method" in message and "jensenshannon" in message


def test_low_cardinality_numerics_are_tested_as_categorical_with_scipy_chi2():
    rng = np.random.default_rng(12)
    train = pd.DataFrame({"flag": rng.choice([0.0, 1.0], 600, p=[0.7, 0.3]), "x": rng.normal(size=600)})
    profile = {"features": {"flag": {"type": "numeric"}, "x": {"type": "numeric"}}}
    references = feature_references(profile, train, DriftSettings())
    assert references["flag"].kind == "categorical" and references["x"].kind == "numeric"
    current = rng.choice([0, 1], 400, p=[0.6, 0.4])  # ints against floats: the same categories
    entry = feature_drift(references["flag"], current, DriftSettings())
    assert entry["test"] == "chi2"
    table = [np.bincount(train["flag"].astype(int)), np.bincount(current)]
    expected = stats.chi2_contingency(table, correction=False)
    assert (entry["statistic"], entry["p_value"]) == pytest.approx((expected.statistic, expected.pvalue))
    as_numeric = feature_references(profile, train, DriftSettings(categorical_max_distinct=1))
    assert as_numeric["flag"].kind == "numeric"
    forced = feature_references(profile, train, DriftSettings(columns={"flag": ColumnTest("ks")}))
    assert forced["flag"].kind == "numeric"


def test_per_column_method_and_threshold_override_the_global_ones():
    rng = np.random.default_rng(13)
    reference, current = numeric_table(rng, 600, 3), numeric_table(rng, 500, 3)
    current["x1"] += 0.3
    settings = DriftSettings(columns={"x1": ColumnTest("psi", 0.5), "x2": ColumnTest(None, 1e-9)})
    features = dataset_drift(numeric_references(reference), current, settings)["features"]
    assert features["x0"]["test"] == "ks" and features["x0"]["threshold"] == 0.05
    assert features["x1"]["test"] == "psi" and features["x1"]["threshold"] == 0.5
    assert features["x1"]["statistic"] == features["x1"]["psi"] and features["x1"]["drifted"] is False
    assert features["x2"]["test"] == "ks" and features["x2"]["threshold"] == 1e-9
    assert features["x2"]["p_value"] == pytest.approx(stats.ks_2samp(reference["x2"], current["x2"]).pvalue)


def test_per_column_settings_come_from_the_config_and_mistakes_name_the_column(make_config, tmp_path):
    cfg = make_config("monitor.columns.age.method=psi", "monitor.columns.age.threshold=0.3")
    settings = drift_settings(cfg.monitor)
    assert settings.columns == {"age": ColumnTest("psi", 0.3)}
    assert settings.test_for("numeric", 10, "age") == "psi" and settings.threshold_for("psi", "age") == 0.3
    with pytest.raises(
        ForgeError, match=r"monitor.columns.age: expected the keys method, threshold; got methd"
    ):
        drift_settings(make_config("monitor.columns.age.methd=psi").monitor)
    with pytest.raises(ForgeError, match=r"monitor.columns.age.method=kolmogorov is not a test; choose auto"):
        drift_settings(make_config("monitor.columns.age.method=kolmogorov").monitor)
    references = {"age": NumericReference.from_values(np.arange(10.0))}
    with pytest.raises(ForgeError, match=r"monitor.columns.agee: no such feature; features: age"):
        check_columns(DriftSettings(columns={"agee": ColumnTest("psi")}), references)
    with pytest.raises(ForgeError, match=r"monitor.columns.city.method=ks does not apply"):
        check_columns(
            DriftSettings(columns={"city": ColumnTest("ks")}),
            {"city": CategoricalReference.from_values(["a", "b"])},
        )


def test_two_sample_chi2_keeps_its_nominal_false_alarm_rate_where_goodness_of_fit_does_not():
    """Why forgeml keeps the two-sample test (Evidently's treats the reference shares as exact)."""
    shares = [0.4, 0.3, 0.2, 0.1]
    ours, goodness_of_fit = [], []
    for seed in range(300):
        rng = np.random.default_rng(seed)
        reference, current = rng.multinomial(200, shares), rng.multinomial(2000, shares)
        ours.append(chi2_test(reference, current)[1] < 0.05)
        expected = reference / reference.sum() * current.sum()
        goodness_of_fit.append(stats.chisquare(current, expected).pvalue < 0.05)
    assert np.mean(ours) < 0.05 + 3 * 0.0126
    assert np.mean(goodness_of_fit) > 0.15


def test_a_text_column_counts_as_its_values_do_missing_included():
    values = pd.Series(["yes", None, "no", "yes", "1"], dtype="str")
    counts = count_categories(values)
    assert counts.to_dict() == {MISSING_CATEGORY: 1, "1": 1, "no": 1, "yes": 2}
    assert counts.equals(count_categories(values.to_numpy(dtype=object)))


@pytest.mark.parametrize("rows", [1, 2, 7, 1_000, 50_000])
def test_quantiles_and_distinct_values_of_sorted_samples_equal_numpys_to_the_bit(rows):
    rng = np.random.default_rng(rows)
    for values in (rng.normal(size=rows), rng.integers(0, 4, rows) * 0.5, rng.exponential(size=rows) * 1e9):
        ordered = np.sort(values)
        levels = np.concatenate([np.linspace(0, 1, 4096), rng.random(50), [0.005, 0.995]])
        assert np.array_equal(sorted_quantiles(ordered, levels), np.quantile(values, levels))
        assert np.array_equal(distinct_sorted(ordered), np.unique(values))


def test_a_numeric_entry_carries_both_densities_as_np_histogram_computes_them():
    rng = np.random.default_rng(3)
    reference, current = rng.normal(size=5_000), np.append(rng.normal(1.0, 2.0, 20_000), [1e9, np.nan])
    entry = feature_drift(NumericReference.from_values(reference), current, DriftSettings())
    histogram = entry["histogram"]
    present = current[np.isfinite(current)]
    # the common range leaves out either side's extreme 0.5%: the outlier at 1e9 does not stretch it
    low = min(np.quantile(reference, 0.005), np.quantile(present, 0.005))
    high = max(np.quantile(reference, 0.995), np.quantile(present, 0.995))
    for side, values in (("reference", reference), ("current", present)):
        density, edges = np.histogram(values, bins=40, range=(low, high), density=True)
        np.testing.assert_allclose(histogram[side], density, rtol=1e-12)
        np.testing.assert_allclose(histogram["edges"], edges, rtol=1e-12)


def test_numeric_drift_plots_are_drawn_from_the_report_without_the_columns():
    rng = np.random.default_rng(4)
    reference = NumericReference.from_values(rng.normal(size=5_000))
    entry = feature_drift(reference, rng.normal(2.0, 1.0, 5_000), DriftSettings())
    report = {"features": {"x": entry}, "drifted_features": ["x"], "prediction": None}
    # neither the train split nor the current rows hold the column: the entry's densities suffice
    figures = drifted_figures(report, pd.DataFrame(), pd.DataFrame(), baseline=None)
    reference_bars, current_bars = figures["x"]["data"]
    assert entry["drifted"] and reference_bars["type"] == current_bars["type"] == "bar"
    assert reference_bars["y"] == entry["histogram"]["reference"] and len(current_bars["x"]) == 40
