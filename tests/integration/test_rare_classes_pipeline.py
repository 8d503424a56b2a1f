"""The rare-class case end to end on CPU: a generated task with 1 % `fraud` rows, trained once
unweighted and once with `train.class_weights=balanced` plus a decision threshold picked on the
validation split. Accuracy hides the difference; the fraud class's recall shows it."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from forgeml.contract import probability_column
from forgeml.errors import ForgeError
from forgeml.io import read_json
from forgeml.layout import DECISION_THRESHOLD, METRICS, split_file
from forgeml.stages import evaluate, package, prepare, train
from forgeml.stages.monitor import with_predictions
from tests.helpers.config import compose_config

RARE = ("data=rare_events", "data.source.n_samples=10000", "trainer.max_epochs=3")


@pytest.fixture(scope="module")
def rare_project(tmp_path_factory):
    """The generated task, prepared once; each training writes into its own directories."""
    cfg = compose_config(tmp_path_factory.mktemp("rare"), *RARE)
    prepare.run(cfg)
    return cfg


def trained(rare_project, workdir, *overrides: str):
    cfg = compose_config(workdir, *RARE, *overrides)
    cfg.paths.processed_dir = rare_project.paths.processed_dir
    train.run(cfg)
    return cfg, evaluate.run(cfg)


@pytest.fixture(scope="module")
def weighted(rare_project, tmp_path_factory):
    """Balanced class weights, and a threshold for 80 % recall of the rare class on validation."""
    return trained(
        rare_project,
        tmp_path_factory.mktemp("weighted"),
        "train.class_weights=balanced",
        "evaluate.threshold_for=precision@recall:0.8",
    )


def test_balanced_weights_and_a_threshold_raise_the_rare_class_recall(rare_project, weighted, tmp_path):
    plain_cfg, plain = trained(rare_project, tmp_path)
    weighted_cfg, scores = weighted
    assert plain["test/accuracy"] > 0.97  # predicting `legit` for everything is nearly all right
    assert scores["test/recall/fraud"] >= plain["test/recall/fraud"] + 0.5, (plain, scores)
    assert scores["test/average_precision/fraud"] >= plain["test/average_precision/fraud"] + 0.3
    decision = read_json(f"{weighted_cfg.paths.reports_dir}/{DECISION_THRESHOLD}")
    assert (decision["positive_class"], decision["target"]) == ("fraud", "precision@recall:0.8")
    assert scores["decision/threshold"] == decision["threshold"]
    metrics = read_json(f"{weighted_cfg.paths.reports_dir}/{METRICS}")
    assert "decision/threshold" not in metrics  # not a score for the gate to compare
    assert {"test/precision/legit", "test/recall/legit", "test/average_precision"} <= set(metrics)
    assert read_json(f"{plain_cfg.paths.reports_dir}/{DECISION_THRESHOLD}")["threshold"] is None


def test_monitor_scores_rows_without_served_predictions_by_the_decision_threshold(weighted):
    """Before the next test, which evaluates again without a threshold into the same reports."""
    cfg, _ = weighted
    decision = read_json(f"{cfg.paths.reports_dir}/{DECISION_THRESHOLD}")
    rows = pd.read_parquet(split_file(cfg.paths.processed_dir, "test")).drop(columns=[cfg.data.target])
    scored = with_predictions(rows, cfg.paths.models_dir, cfg.paths.reports_dir)
    fraud = scored[probability_column("fraud")].to_numpy()
    served = np.where(fraud >= decision["threshold"], "fraud", "legit")
    assert (scored["prediction"].to_numpy() == served).all()
    # the threshold decides differently from the most probable class on some rows (not vacuous)
    assert (served != np.where(fraud >= 0.5, "fraud", "legit")).any(), decision


def test_a_new_threshold_is_a_new_archive_version(weighted):
    cfg = copy.deepcopy(weighted[0])
    with_threshold = package.run(cfg)["version"]
    cfg.evaluate.threshold_for = None
    evaluate.run(cfg)
    without = package.run(cfg)["version"]
    assert without == read_json(f"{cfg.paths.models_dir}/model.json")["model_hash"]
    assert with_threshold != without


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.class_weights=balancd", "choose one of none, balanced, {class: weight}"),
        ("train.class_weights={frud:5}", "'frud' is not a class; the classes: fraud, legit"),
        ("evaluate.threshold_for=f2", "choose one of null, f1, recall@precision:<0..1>"),
    ],
)
def test_a_typo_in_the_rare_class_settings_is_refused_before_training(
    rare_project, tmp_path, override, message
):
    cfg = compose_config(tmp_path, *RARE, override)
    cfg.paths.processed_dir = rare_project.paths.processed_dir
    with pytest.raises(ForgeError, match=re.escape(message)):
        train.build(cfg)
    assert not Path(cfg.paths.models_dir).exists()
