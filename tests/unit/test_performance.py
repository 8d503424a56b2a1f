"""CBPE on synthetic data whose true P(label | input) is known, measured metrics against
scikit-learn, and delayed labels joined by request id."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import accuracy_score, f1_score, mean_absolute_error, r2_score

from forgeml.data.transform import predicted_classes
from forgeml.errors import ForgeError
from forgeml.monitoring.performance import (
    calibrated,
    estimate_classification,
    fit_calibration,
    join_labels,
    measured_metrics,
    read_labels,
)

LABELS = ["benign", "malignant"]


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def scored(x: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """An overconfident model (its logit is 4x, the truth's 2.5x) and labels drawn from the truth."""
    model = sigmoid(4.0 * x)
    labels = (rng.random(len(x)) < sigmoid(2.5 * x)).astype(int)
    return np.column_stack([1 - model, model]), labels


def measured_accuracy(probabilities: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(probabilities.argmax(axis=1) == labels))


@pytest.fixture(scope="module")
def calibration() -> dict:
    rng = np.random.default_rng(0)
    probabilities, labels = scored(rng.normal(size=4000), rng)
    return fit_calibration(probabilities, labels, LABELS)


def test_calibration_is_json_data_that_maps_probabilities_to_observed_frequencies(calibration):
    assert set(calibration["curves"]) == {"malignant"} and calibration["method"] == "isotonic"
    rng = np.random.default_rng(1)
    probabilities, labels = scored(rng.normal(size=20_000), rng)
    mapped = calibrated(calibration, probabilities)
    confident = probabilities[:, 1] > 0.9
    # the model says > 0.9, the truth is less sure: the curve brings it back to the observed rate
    assert probabilities[confident, 1].mean() - labels[confident].mean() > 0.03
    assert mapped[confident, 1].mean() == pytest.approx(labels[confident].mean(), abs=0.02)
    assert np.allclose(mapped.sum(axis=1), 1.0)


def test_estimate_tracks_measured_accuracy_within_its_band_on_a_harmful_shift(calibration):
    rng = np.random.default_rng(2)
    reference = estimate_classification(*[scored(rng.normal(size=3000), rng)[0]], calibration)
    probabilities, labels = scored(rng.normal(0.0, 0.35, 3000), rng)  # crowded at the boundary
    shifted = estimate_classification(probabilities, calibration)
    measured = measured_accuracy(probabilities, labels)
    assert reference["accuracy"] - shifted["accuracy"] > 0.1  # the estimate sees the harm
    low, high = shifted["accuracy_band"]
    assert low <= measured <= high
    assert high - low < 0.1
    # the model's own confidence, uncalibrated, would miss it
    assert probabilities.max(axis=1).mean() > high
    measured_f1 = f1_score(labels, probabilities.argmax(axis=1), average="macro")
    assert shifted["f1_macro_band"][0] <= measured_f1 <= shifted["f1_macro_band"][1]


def test_estimate_stays_flat_on_a_harmless_shift(calibration):
    rng = np.random.default_rng(3)
    reference = estimate_classification(scored(rng.normal(size=3000), rng)[0], calibration)
    # every input moved to the positive side: a large input shift, the same confidence
    probabilities, labels = scored(np.abs(rng.normal(size=3000)), rng)
    shifted = estimate_classification(probabilities, calibration)
    assert shifted["accuracy"] == pytest.approx(reference["accuracy"], abs=0.015)
    low, high = shifted["accuracy_band"]
    assert low <= measured_accuracy(probabilities, labels) <= high


def test_multiclass_estimate_with_calibrated_probabilities_covers_the_measured_accuracy():
    rng = np.random.default_rng(4)
    logits = rng.normal(size=(6000, 3)) * 2.0
    truth = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    labels = np.array([rng.choice(3, p=row) for row in truth])
    calibration = fit_calibration(truth[:3000], labels[:3000], ["a", "b", "c"])
    estimate = estimate_classification(truth[3000:], calibration)
    low, high = estimate["accuracy_band"]
    assert low <= measured_accuracy(truth[3000:], labels[3000:]) <= high


def test_measured_metrics_equal_scikit_learn():
    rng = np.random.default_rng(5)
    actual = rng.choice(["a", "b", "c"], 500)
    predicted = np.where(rng.random(500) < 0.7, actual, rng.choice(["a", "b", "d"], 500))
    metrics = measured_metrics("classification", actual, predicted)
    assert metrics["accuracy"] == pytest.approx(accuracy_score(actual, predicted))
    assert metrics["f1_macro"] == pytest.approx(f1_score(actual, predicted, average="macro"))
    values = rng.normal(size=300)
    guesses = values + rng.normal(0, 0.3, 300)
    metrics = measured_metrics("regression", values, guesses)
    assert metrics["mae"] == pytest.approx(mean_absolute_error(values, guesses))
    assert metrics["r2"] == pytest.approx(r2_score(values, guesses))


def test_labels_join_by_request_id_and_a_later_label_corrects_an_earlier_one(tmp_path):
    (tmp_path / "labels.csv").write_text("id,label\n0007,yes\nabc,no\nabc,yes\nmissing,no\n")
    labels = read_labels(tmp_path / "labels.csv", "classification")
    current = pd.DataFrame({"id": ["abc", "0007", "zzz"], "x": [1, 2, 3]})
    assert join_labels(current, labels).tolist() == ["yes", "yes", np.nan]
    (tmp_path / "bad.csv").write_text("request,label\n1,yes\n")
    with pytest.raises(ForgeError, match=r"monitor.labels: .*bad.csv has no column id"):
        read_labels(tmp_path / "bad.csv", "classification")
    with pytest.raises(ForgeError, match=r"monitor.labels: .*nowhere.csv does not exist"):
        read_labels(tmp_path / "nowhere.csv", "classification")


def test_the_estimate_counts_the_classes_a_decision_threshold_serves(calibration):
    rng = np.random.default_rng(5)
    probabilities, labels = scored(rng.normal(size=20_000), rng)
    decision = {"positive_index": 1, "threshold": 0.1}
    measured = float(np.mean(predicted_classes(probabilities, decision) == labels))
    estimate = estimate_classification(probabilities, {**calibration, "decision": decision})
    assert estimate["accuracy_band"][0] <= measured <= estimate["accuracy_band"][1]
    assert estimate["accuracy"] == pytest.approx(measured, abs=0.01)
    # without the threshold the estimate is of argmax predictions, which the endpoint does not serve
    assert abs(estimate_classification(probabilities, calibration)["accuracy"] - measured) > 0.03
