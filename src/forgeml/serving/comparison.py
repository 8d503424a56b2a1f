"""Two versions' answers to the same requests: would the candidate have answered as production did,
and would it have been as good? `forgeml replay` compares a candidate's answers, replayed on the
logged traffic, with what production answered; the numbers are the same for any two versions
that answered the same requests.

Per window of requests:

    agreement       (classification) the share of requests the candidate labelled as production
                    did; a request the candidate could not score disagrees
    flips           {production's label: {the candidate's label: requests}}, agreement on the
                    diagonal; "(none)" where the candidate gave no answer
    score_shift     the mean absolute difference of the class probabilities (classification,
                    averaged over the classes) or of the values (regression)
    prediction_test the candidate's predictions against production's, tested as `forgeml monitor`
                    tests a feature (drift.feature_drift, the `monitor` group's tests)
    estimated       CBPE accuracy and F1 of both (classification), each on its own answers and
                    calibration, and the candidate's accuracy drop. CBPE reads a model's own
                    confidence: it catches answers that go against the probabilities (a bad
                    threshold), not a model confidently wrong (trained on wrong labels), which
                    the agreement and the delayed labels catch
    measured        metrics of both on the requests whose label arrived (monitor.labels, joined
                    by request id), and what the promotion gate says of the candidate's

The verdict: windows of fewer than `min_samples` requests are reported, not judged; the candidate
is refused when a judged window has an agreement below `min_agreement`, an estimated accuracy
more than `max_estimated_drop` below production's, measured metrics (on at least `min_samples`
labels) worse than production's by more than the gate's `max_regression` (relative, as the gate),
or, for a regression model, predictions whose distribution moved (the prediction test). No judged
window: insufficient data.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from forgeml.errors import EXIT_DRIFT, EXIT_INSUFFICIENT_DATA, EXIT_OK
from forgeml.monitoring.drift import CategoricalReference, DriftSettings, NumericReference, feature_drift
from forgeml.monitoring.performance import estimate_classification, join_labels, measured_metrics
from forgeml.serving.gate import promotion_gate

NO_ANSWER = "(none)"
# what a window's report keeps of the prediction test (drift.feature_drift's entry)
TEST_KEYS = ("test", "statistic", "p_value", "threshold", "drifted")
# the measured metrics as the gate compares them (one '/': a summary metric)
MEASURED_PREFIX = "measured/"


@dataclass(frozen=True)
class Answers:
    """One version's answers to the compared requests, row for row: its predictions (None where
    it gave none), its class probabilities (rows x classes; None: not logged, or a regression)
    and the calibration its CBPE estimate uses (None: no estimate)."""

    predictions: np.ndarray
    probabilities: np.ndarray | None = None
    calibration: dict[str, Any] | None = None


@dataclass(frozen=True)
class Thresholds:
    """When a candidate is refused (None switches a check off): serve.rollout.min_agreement,
    serve.rollout.max_estimated_drop, gate.max_regression, and monitor.min_samples requests (or
    labels) for a window to be judged."""

    min_agreement: float | None = 0.9
    max_estimated_drop: float | None = 0.02
    max_regression: float = 0.02
    min_samples: int = 100
    drift: DriftSettings = field(default_factory=DriftSettings)


def compare(
    task: str,
    production: Answers,
    candidate: Answers,
    thresholds: Thresholds,
    ids: pd.Series | None = None,
    labels: pd.DataFrame | None = None,
) -> dict[str, Any]:
    """One window's comparison (see the module docstring), with its refusals (`refusals`: empty
    when the candidate passed it) and whether it was judged at all (`judged`)."""
    answered = pd.notna(candidate.predictions)
    rows = len(production.predictions)
    report: dict[str, Any] = {"rows": rows, "unanswered": int(rows - answered.sum())}
    if task == "classification":
        report |= {
            "agreement": agreement(production.predictions, candidate.predictions),
            "flips": flips(production.predictions, candidate.predictions),
            "estimated": estimated(production, candidate, answered),
        }
    report["score_shift"] = score_shift(task, production, candidate, answered)
    report["prediction_test"] = prediction_test(task, production, candidate, answered, thresholds.drift)
    report["measured"] = measured(task, production, candidate, answered, ids, labels)
    report["judged"] = rows >= thresholds.min_samples
    report["refusals"] = refusals(task, report, thresholds) if report["judged"] else []
    return report


def as_text(predictions: np.ndarray) -> np.ndarray:
    """Labels as text (a label logged as 1 is the class "1"), NO_ANSWER where there is none."""
    return np.array([NO_ANSWER if pd.isna(p) else str(p) for p in predictions], dtype=object)


def agreement(production: np.ndarray, candidate: np.ndarray) -> float | None:
    if not len(production):
        return None
    return float(np.mean(as_text(production) == as_text(candidate)))


def flips(production: np.ndarray, candidate: np.ndarray) -> dict[str, dict[str, int]]:
    """{production's label: {the candidate's label: requests}}, every pair that occurred."""
    pairs = pd.crosstab(as_text(production), as_text(candidate))
    return {
        str(before): {str(after): int(count) for after, count in row.items() if count}
        for before, row in pairs.iterrows()
    }


def score_shift(
    task: str, production: Answers, candidate: Answers, answered: np.ndarray
) -> dict[str, Any] | None:
    """The mean absolute difference of what both answered: class probabilities (averaged over
    the classes) or values."""
    if task == "classification":
        if production.probabilities is None or candidate.probabilities is None:
            return None
        difference = np.abs(production.probabilities - candidate.probabilities)[answered]
        difference = difference[np.isfinite(difference).all(axis=1)]
        name = "mean_abs_probability_difference"
        return {name: float(difference.mean()) if len(difference) else None, "rows": len(difference)}
    values = pd.to_numeric(pd.Series(production.predictions[answered]), errors="coerce").to_numpy()
    replayed = pd.to_numeric(pd.Series(candidate.predictions[answered]), errors="coerce").to_numpy()
    difference = np.abs(values - replayed)
    difference = difference[np.isfinite(difference)]
    return {
        "mean_abs_difference": float(difference.mean()) if len(difference) else None,
        "rows": len(difference),
    }


def prediction_test(
    task: str, production: Answers, candidate: Answers, answered: np.ndarray, settings: DriftSettings
) -> dict[str, Any] | None:
    """The candidate's predictions tested against production's as a drifting feature."""
    served, replayed = production.predictions, candidate.predictions[answered]
    if not len(replayed):
        return None
    if task == "classification":
        reference = CategoricalReference.from_values(as_text(served))
        entry = feature_drift(reference, as_text(replayed), settings)
    else:
        entry = feature_drift(NumericReference.from_values(served.astype(np.float64)), replayed, settings)
    return {key: entry.get(key) for key in TEST_KEYS}


def estimated(production: Answers, candidate: Answers, answered: np.ndarray) -> dict[str, Any] | None:
    """CBPE of each version on its own answers, and how far the candidate's accuracy is below
    production's; None without probabilities or calibrations on both sides."""
    sides = {"production": production, "candidate": candidate}
    estimates = {name: estimate(answers, answered) for name, answers in sides.items()}
    if None in estimates.values():
        return None
    drop = estimates["production"]["accuracy"] - estimates["candidate"]["accuracy"]
    return {**estimates, "accuracy_drop": drop}


def estimate(answers: Answers, answered: np.ndarray) -> dict[str, Any] | None:
    """CBPE of the rows both versions answered, each counted as predicted what it was answered."""
    if answers.probabilities is None or answers.calibration is None:
        return None
    names = answers.calibration["labels"]
    predicted = as_text(answers.predictions)
    usable = answered & np.isfinite(answers.probabilities).all(axis=1) & np.isin(predicted, names)
    if not usable.any():
        return None
    classes = np.array([names.index(label) for label in predicted[usable]])
    result = estimate_classification(answers.probabilities[usable], answers.calibration, predicted=classes)
    return {**result, "calibrated": answers.calibration.get("method") != "none"}


def measured(
    task: str,
    production: Answers,
    candidate: Answers,
    answered: np.ndarray,
    ids: pd.Series | None,
    labels: pd.DataFrame | None,
) -> dict[str, Any] | None:
    """The metrics of both on the requests both answered whose label has arrived."""
    if labels is None or ids is None:
        return None
    actual = join_labels(pd.DataFrame({"id": ids.to_numpy()}), labels).to_numpy()
    labelled = pd.notna(actual) & answered
    result: dict[str, Any] = {"labelled_rows": int(labelled.sum())}
    if not labelled.any():
        return result
    return {
        **result,
        "production": measured_metrics(task, actual[labelled], production.predictions[labelled]),
        "candidate": measured_metrics(task, actual[labelled], candidate.predictions[labelled]),
    }


def refusals(task: str, report: dict[str, Any], thresholds: Thresholds) -> list[str]:
    """Why a judged window refuses the candidate, each reason quoting the number and its key.
    Once at least min_samples of its requests are labelled, the labels judge alone: agreement
    and the estimate stand in for labels, and a retrained model that disagrees with production
    where production was wrong must not be refused for it."""
    measured = report["measured"]
    if measured and measured["labelled_rows"] >= thresholds.min_samples:
        return measured_refusals(measured, thresholds)
    reasons = []
    low = thresholds.min_agreement
    if task == "classification" and low is not None and report["agreement"] < low:
        reasons.append(
            f"agreement with production {report['agreement']:.3f} is below serve.rollout.min_agreement={low}"
        )
    estimates, allowed = report.get("estimated"), thresholds.max_estimated_drop
    if estimates and allowed is not None and estimates["accuracy_drop"] > allowed:
        reasons.append(
            f"estimated accuracy {estimates['candidate']['accuracy']:.3f} is "
            f"{estimates['accuracy_drop']:.3f} below production's {estimates['production']['accuracy']:.3f} "
            f"(serve.rollout.max_estimated_drop={allowed})"
        )
    test = report["prediction_test"]
    if task == "regression" and test and test["drifted"]:
        reasons.append(f"the predictions moved from production's ({test['test']} {test['statistic']:.3g})")
    return reasons + measured_refusals(report["measured"], thresholds)


def measured_refusals(measured: dict[str, Any] | None, thresholds: Thresholds) -> list[str]:
    """The promotion gate's regression rule on the labelled requests (gate.max_regression)."""
    if not measured or measured["labelled_rows"] < thresholds.min_samples:
        return []
    candidate, production = (
        {MEASURED_PREFIX + name: value for name, value in measured[side].items()}
        for side in ("candidate", "production")
    )
    decision = promotion_gate(candidate, production, {}, thresholds.max_regression, baseline="production's")
    return [f"{reason} (gate.max_regression)" for reason in decision.reasons]


def verdict(windows: list[dict[str, Any]], min_samples: int) -> tuple[str, int, str]:
    """(verdict, exit code, message) over the windows: refused if a judged window refuses."""
    judged = [window for window in windows if window["judged"]]
    if not judged:
        most = max((window["rows"] for window in windows), default=0)
        found = f"at most {most} replayed requests in a window" if most else "no logged request to replay"
        return (
            "insufficient_data",
            EXIT_INSUFFICIENT_DATA,
            f"{found}; monitor.min_samples={min_samples} are needed for a verdict",
        )
    reasons = [
        f"window {position}: {reason}"
        for position, window in enumerate(windows, 1)
        for reason in window["refusals"]
    ]
    if reasons:
        return "refused", EXIT_DRIFT, "refused: " + "; ".join(reasons)
    return "passed", EXIT_OK, f"passed on {len(judged)} of {len(windows)} window(s)"
