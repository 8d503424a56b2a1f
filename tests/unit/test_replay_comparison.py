"""The comparison of a candidate's answers with production's (serving/comparison.py): agreement,
the class flips, the score shift, both CBPE estimates, both measured metrics and the verdict,
on small frames."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from forgeml.errors import EXIT_DRIFT, EXIT_INSUFFICIENT_DATA, EXIT_OK
from forgeml.monitoring.performance import uncalibrated
from forgeml.serving.comparison import NO_ANSWER, Answers, Thresholds, agreement, compare, flips, verdict

LABELS = ["no", "yes"]


def classifier_answers(positive: np.ndarray, labels: np.ndarray | None = None) -> Answers:
    """Answers of a binary classifier with P(yes) = `positive`: its labels (by default the most
    probable class), taken as calibrated."""
    probabilities = np.column_stack([1 - positive, positive])
    predicted = np.where(positive > 0.5, "yes", "no").astype(object) if labels is None else labels
    return Answers(predicted, probabilities, uncalibrated(LABELS))


def confident_traffic(rows: int = 400) -> np.ndarray:
    """P(yes) of `rows` requests a good model answers confidently (0.05 or 0.95)."""
    return np.where(np.arange(rows) % 2 == 0, 0.95, 0.05)


def test_an_unanswered_request_disagrees_and_is_its_own_column_of_the_flips():
    production = np.array(["a", "a", "b", "b"], dtype=object)
    candidate = np.array(["a", "b", "b", None], dtype=object)
    assert agreement(production, candidate) == 0.5
    assert flips(production, candidate) == {"a": {"a": 1, "b": 1}, "b": {"b": 1, NO_ANSWER: 1}}


def test_a_label_logged_as_a_number_agrees_with_the_same_label_as_text():
    assert agreement(np.array([1, 0], dtype=object), np.array(["1", "0"], dtype=object)) == 1.0


def test_the_same_answers_agree_fully_and_pass():
    positive = confident_traffic()
    report = compare(
        "classification", classifier_answers(positive), classifier_answers(positive), Thresholds()
    )
    assert report["agreement"] == 1.0 and report["judged"] and report["refusals"] == []
    assert report["score_shift"]["mean_abs_probability_difference"] == 0.0
    assert report["estimated"]["accuracy_drop"] == pytest.approx(0.0)
    assert report["prediction_test"]["drifted"] is False


def test_a_candidate_flipping_a_fifth_of_the_answers_is_refused_below_min_agreement():
    positive = confident_traffic()
    flipped = np.where(np.arange(len(positive)) % 5 == 0, 1 - positive, positive)
    report = compare(
        "classification", classifier_answers(positive), classifier_answers(flipped), Thresholds()
    )
    assert report["agreement"] == pytest.approx(0.8)
    assert report["flips"] == {"no": {"no": 160, "yes": 40}, "yes": {"no": 40, "yes": 160}}
    assert any("serve.rollout.min_agreement=0.9" in reason for reason in report["refusals"])
    lenient = compare(
        "classification",
        classifier_answers(positive),
        classifier_answers(flipped),
        Thresholds(min_agreement=0.75, max_estimated_drop=None),
    )
    assert lenient["refusals"] == []


def test_answers_against_confident_probabilities_lower_the_estimate_and_are_refused():
    """Same probabilities, but the candidate answers "yes" to everything (a threshold near 0):
    CBPE expects the "no" rows it answered "yes" to be wrong."""
    positive = confident_traffic()
    everything_yes = np.full(len(positive), "yes", dtype=object)
    report = compare(
        "classification",
        classifier_answers(positive),
        classifier_answers(positive, everything_yes),
        Thresholds(min_agreement=None),
    )
    estimated = report["estimated"]
    assert estimated["production"]["accuracy"] == pytest.approx(0.95)
    assert estimated["candidate"]["accuracy"] == pytest.approx(0.5)
    assert estimated["accuracy_drop"] == pytest.approx(0.45)
    assert [reason for reason in report["refusals"] if "serve.rollout.max_estimated_drop" in reason]


def test_measured_metrics_worse_than_production_are_refused_once_enough_labels_arrived():
    positive = confident_traffic()
    truth = np.where(positive > 0.5, "yes", "no")
    ids = pd.Series([f"r{i}" for i in range(len(positive))])
    flipped = np.where(np.arange(len(positive)) % 10 == 0, 1 - positive, positive)
    production, candidate = classifier_answers(positive), classifier_answers(flipped)
    lenient = Thresholds(min_agreement=None, max_estimated_drop=None)

    labels = pd.DataFrame({"id": ids, "label": truth})
    report = compare("classification", production, candidate, lenient, ids, labels)
    assert report["measured"]["labelled_rows"] == len(positive)
    assert report["measured"]["production"]["accuracy"] == 1.0
    assert report["measured"]["candidate"]["accuracy"] == pytest.approx(0.9)
    assert any("measured/accuracy" in r and "gate.max_regression" in r for r in report["refusals"])

    few = compare("classification", production, candidate, lenient, ids, labels.head(50))
    assert few["measured"]["labelled_rows"] == 50 and few["refusals"] == []


def test_a_regression_candidate_whose_predictions_moved_is_refused():
    values = np.random.default_rng(0).normal(size=500)
    production = Answers(values.astype(object))
    same = compare("regression", production, Answers(values.astype(object)), Thresholds())
    assert same["refusals"] == [] and same["score_shift"]["mean_abs_difference"] == 0.0
    moved = compare("regression", production, Answers((values + 1.0).astype(object)), Thresholds())
    assert moved["score_shift"]["mean_abs_difference"] == pytest.approx(1.0)
    assert moved["prediction_test"]["drifted"] and any("moved" in reason for reason in moved["refusals"])


def test_windows_too_small_to_judge_give_insufficient_data():
    positive = confident_traffic(40)
    flipped = 1 - positive
    report = compare(
        "classification", classifier_answers(positive), classifier_answers(flipped), Thresholds()
    )
    assert report["agreement"] == 0.0 and not report["judged"] and report["refusals"] == []
    outcome, exit_code, message = verdict([report], min_samples=100)
    assert (outcome, exit_code) == ("insufficient_data", EXIT_INSUFFICIENT_DATA)
    assert "monitor.min_samples=100" in message


def test_one_refusing_window_refuses_the_candidate():
    positive = confident_traffic()
    good = compare("classification", classifier_answers(positive), classifier_answers(positive), Thresholds())
    bad = compare(
        "classification", classifier_answers(positive), classifier_answers(1 - positive), Thresholds()
    )
    assert verdict([good, good], 100)[:2] == ("passed", EXIT_OK)
    outcome, exit_code, message = verdict([good, bad], 100)
    assert (outcome, exit_code) == ("refused", EXIT_DRIFT) and message.startswith("refused: window 2:")


def test_a_candidate_that_disagrees_where_production_was_wrong_passes_on_the_labels():
    """A retrained model answers differently exactly where production erred: the labels show it
    better, so its low agreement does not refuse it."""
    positive = confident_traffic()
    ids = pd.Series([f"r{i}" for i in range(len(positive))])
    wrong = np.arange(len(positive)) % 5 == 0
    truth = np.where(positive > 0.5, "yes", "no")
    production = classifier_answers(np.where(wrong, 1 - positive, positive))
    candidate = classifier_answers(positive)
    labels = pd.DataFrame({"id": ids, "label": truth})
    report = compare("classification", production, candidate, Thresholds(), ids, labels)
    assert report["agreement"] < Thresholds().min_agreement
    assert report["measured"]["candidate"]["accuracy"] > report["measured"]["production"]["accuracy"]
    assert report["refusals"] == []
    unlabelled = compare("classification", production, candidate, Thresholds(), ids)
    assert any("agreement" in reason for reason in unlabelled["refusals"])
