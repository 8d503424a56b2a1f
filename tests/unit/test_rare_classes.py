"""Rare classes without training: loss weights from the train split, the decision threshold
picked on validation rows meets its target, the decision rule every consumer shares, and the
gate's per-class recall."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from omegaconf import OmegaConf

from forgeml.data.transform import predicted_classes
from forgeml.errors import ForgeError
from forgeml.models.rare_classes import class_weights, decision_threshold, pick_threshold, threshold_target
from forgeml.serving.gate import judge, promotion_gate
from forgeml.serving.registry import Registry

SPEC = {"task": "classification", "target": "y", "labels": ["fraud", "legit"]}


@pytest.fixture
def train_split(tmp_path):
    """97 legit rows and 3 fraud rows, written in two row groups (read column batch by batch)."""
    path = tmp_path / "train.parquet"
    pd.DataFrame({"x": range(100), "y": ["legit"] * 60 + ["fraud"] * 3 + ["legit"] * 37}).to_parquet(
        path, row_group_size=50
    )
    return path


def test_balanced_weights_are_rows_over_classes_times_count(train_split):
    weights = class_weights("balanced", SPEC, train_split)
    np.testing.assert_allclose(weights, [100 / (2 * 3), 100 / (2 * 97)], rtol=1e-6)


def test_a_weight_mapping_names_classes_and_leaves_the_rest_at_one(train_split):
    setting = OmegaConf.create({"fraud": 20})
    np.testing.assert_allclose(class_weights(setting, SPEC, train_split), [20.0, 1.0])
    assert class_weights("none", SPEC, train_split) is None


@pytest.mark.parametrize(
    "setting, message",
    [
        ("balancd", "choose one of none, balanced, {class: weight}"),
        ({"frud": 3}, "'frud' is not a class; the classes: fraud, legit"),
        ({"fraud": -1}, "train.class_weights.fraud=-1 must be a positive number"),
    ],
)
def test_bad_class_weights_name_the_choices(train_split, setting, message):
    with pytest.raises(ForgeError, match=message.replace("{", r"\{").replace("}", r"\}")):
        class_weights(setting, SPEC, train_split)


def test_a_threshold_target_typo_names_the_choices():
    assert threshold_target("recall@precision=0.9") == ("recall", 0.9)
    assert threshold_target("precision@recall=0.8") == ("precision", 0.8)
    assert threshold_target("f1") == ("f1", None)
    for typo in ("f2", "recall@precision=1.5", "recall@precison=0.9"):
        with pytest.raises(ForgeError, match="choose one of null, f1, recall@precision:"):
            threshold_target(typo)


@pytest.fixture
def validation() -> tuple[np.ndarray, np.ndarray]:
    """Scores of a noisy classifier: positives (10 %) score higher on average."""
    rng = np.random.default_rng(0)
    positives = rng.random(2000) < 0.1
    scores = 1 / (1 + np.exp(-(rng.normal(size=2000) + 2.5 * positives - 2)))
    return scores.astype(np.float32), positives


def precision_recall(scores, positives, threshold):
    predicted = scores >= threshold
    hits = (predicted & positives).sum()
    return hits / max(predicted.sum(), 1), hits / positives.sum()


def test_threshold_for_recall_at_precision_meets_the_precision_with_the_best_recall(validation):
    scores, positives = validation
    threshold = pick_threshold(scores, positives, ("recall", 0.6))
    precision, recall = precision_recall(scores, positives, threshold)
    assert precision >= 0.6
    # no lower threshold gains recall and keeps the precision
    for lower in np.unique(scores[scores < threshold]):
        more_precision, more_recall = precision_recall(scores, positives, lower)
        assert more_precision < 0.6 or more_recall <= recall


def test_threshold_for_precision_at_recall_meets_the_recall(validation):
    scores, positives = validation
    threshold = pick_threshold(scores, positives, ("precision", 0.8))
    assert precision_recall(scores, positives, threshold)[1] >= 0.8


def test_threshold_for_f1_is_the_best_f1_on_the_rows(validation):
    scores, positives = validation
    threshold = pick_threshold(scores, positives, ("f1", None))

    def f1(t):
        p, r = precision_recall(scores, positives, t)
        return 2 * p * r / max(p + r, 1e-12)

    assert f1(threshold) >= max(f1(t) for t in np.linspace(0.05, 0.95, 19)) - 1e-9


def test_an_unreachable_target_is_refused_naming_it(validation):
    scores, positives = validation
    with pytest.raises(ForgeError, match=r"no threshold reaches precision 1\.0"):
        pick_threshold(np.full_like(scores, 0.5), positives, ("recall", 1.0))


def test_the_decision_is_for_the_rarer_class_and_every_consumer_applies_it(validation):
    scores, positives = validation
    # labels sorted ["fraud", "legit"]: the rare class is the first one, index 0
    probabilities = np.stack([scores, 1 - scores], axis=1)
    decision = decision_threshold(probabilities, np.where(positives, 0, 1), SPEC, "recall@precision=0.6")
    assert (decision["positive_class"], decision["positive_index"]) == ("fraud", 0)
    decided = predicted_classes(probabilities, decision)
    np.testing.assert_array_equal(decided == 0, scores >= decision["threshold"])
    assert (decided == 0).sum() > (probabilities.argmax(axis=1) == 0).sum()
    np.testing.assert_array_equal(predicted_classes(probabilities, None), probabilities.argmax(axis=1))


def test_a_threshold_for_more_than_two_classes_is_refused():
    spec = {**SPEC, "labels": ["a", "b", "c"]}
    with pytest.raises(ForgeError, match="binary model's threshold; this model has 3 classes"):
        decision_threshold(np.full((3, 3), 1 / 3), np.arange(3), spec, "f1")


def test_gate_refuses_a_class_below_its_recall_naming_it():
    metrics = {"test/accuracy": 0.99, "test/recall/fraud": 0.4, "test/recall/legit": 0.999}
    refused = promotion_gate(metrics, None, {}, 0.02, {"fraud": 0.8})
    assert refused.reasons == ["class 'fraud': test recall 0.4000 is below the required minimum 0.8000"]
    every_class = promotion_gate(metrics, None, {}, 0.02, 0.5)
    assert [r.split(":")[0] for r in every_class.reasons] == ["class 'fraud'"]
    assert promotion_gate(metrics, None, {}, 0.02, {"legit": 0.9}).passed
    unknown = promotion_gate(metrics, None, {}, 0.02, {"frud": 0.8})
    assert "class 'frud': no test recall was measured (classes measured: fraud, legit)" in unknown.reasons


def test_gate_regression_compares_summary_metrics_not_each_class():
    deployed = {"test/accuracy": 0.95, "test/recall/fraud": 0.9}
    assert promotion_gate({"test/accuracy": 0.95, "test/recall/fraud": 0.8}, deployed, {}, 0.02).passed


def test_the_gate_config_holds_class_recall_for_deploy_and_forgeml_gate(make_config, tmp_path):
    registry = Registry(tmp_path)
    registry.record("m", {"version": "v1", "metrics": {"test/accuracy": 0.99, "test/recall/fraud": 0.4}})
    cfg = make_config("gate.min_class_recall={fraud:0.8}")
    judgement = judge(registry, "m", "v1", cfg.gate)
    assert not judgement.decision.passed
    assert "class 'fraud': test recall 0.4000" in judgement.decision.summary()
    assert judge(registry, "m", "v1", make_config().gate).decision.passed
