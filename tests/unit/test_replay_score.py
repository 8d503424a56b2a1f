"""A candidate's answers to logged requests, scored from its archive as its endpoint would."""

from __future__ import annotations

import pandas as pd
import torch

from forgeml.models.artifact import ModelArtifact
from forgeml.serving.replay import ArchivedVersion, score
from tests.helpers.data import TOY_SPEC


def test_replay_scores_logged_requests_and_leaves_one_it_cannot_score_unanswered():
    torch.manual_seed(0)
    program = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.Softmax(-1)).eval()
    candidate = ArchivedVersion(
        "churn", "v2", ModelArtifact({"task": "classification"}, TOY_SPEC, program), None
    )
    requests = pd.DataFrame(
        {"age": [30.0, "old", 50.0], "city": ["paris", "berlin", "tokyo"]}, index=[7, 8, 9]
    )
    answers = score(candidate, requests)
    assert list(answers.index) == [7, 8, 9]
    assert answers["prediction"].isna().tolist() == [False, True, False]
    assert set(answers.loc[[7, 9], "prediction"]) <= {"no", "yes"}
    assert (answers.loc[[7, 9], ["probability_no", "probability_yes"]].sum(axis=1).round(5) == 1).all()
