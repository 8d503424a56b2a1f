"""The TorchServe handler in-process, on a small archive directory with a categorical feature:
validation, the unknown-category bucket, imputation, and a bad request failing alone."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from ts.context import Context, RequestProcessor

from forgeml.data import transform
from forgeml.serving import handler as handler_module
from forgeml.serving.archive import input_schema

SPEC = {
    "format": "forgeml.preprocessor/1",
    "task": "classification",
    "target": "bought",
    "features": [
        {"name": "age", "type": "numeric", "fill": 30.0, "mean": 40.0, "std": 10.0, "min": 18.0, "max": 90.0},
        {"name": "city", "type": "categorical", "categories": ["berlin", "paris"]},
    ],
    "input_dim": 3,
    "labels": ["no", "yes"],
}
MAX_INSTANCES = 5
GOOD = {"age": 52, "city": "paris"}


class TinyClassifier(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.linear = torch.nn.Linear(3, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x).softmax(-1)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What TorchServe unpacks from a forgeml archive, for a 2-feature classifier."""
    directory = tmp_path_factory.mktemp("archive")
    batch = torch.export.Dim("batch", min=1, max=1024)
    program = torch.export.export(
        TinyClassifier().eval(), (torch.zeros(4, 3),), dynamic_shapes={"x": {0: batch}}
    )
    torch.export.save(program, directory / "model.pt2")
    (directory / "preprocessor.json").write_text(json.dumps(SPEC))
    (directory / "input_schema.json").write_text(json.dumps(input_schema(SPEC, MAX_INSTANCES)))
    shutil.copyfile(transform.__file__, directory / "transform.py")
    return directory


@pytest.fixture(scope="module")
def handler(model_dir: Path) -> handler_module.ForgemlHandler:
    service = handler_module.ForgemlHandler()
    service.initialize(make_context(model_dir, requests=0))
    return service


def make_context(model_dir: Path, requests: int) -> Context:
    manifest = {"model": {"modelName": "tiny", "serializedFile": "model.pt2"}}
    context = Context("tiny", str(model_dir), manifest, 8, None, "0.12.0")
    context.request_processor = [RequestProcessor({}) for _ in range(requests)]
    return context


def serve(handler, model_dir: Path, *bodies: Any) -> list[tuple[int, dict[str, Any]]]:
    """Run one dynamic batch through the handler: (status, body) per request."""
    handler.context = make_context(model_dir, len(bodies))
    batch = handler.preprocess([{"body": body} for body in bodies])
    answers = handler.postprocess(handler.inference(batch))
    return [(handler.context.get_response_status(i)[0], json.loads(a)) for i, a in enumerate(answers)]


def probabilities(answer: dict[str, Any]) -> list[float]:
    return list(answer["predictions"][0]["probabilities"].values())


def expected(age_standardised: float, one_hot: list[float]) -> list[float]:
    with torch.inference_mode():
        return TinyClassifier()(torch.tensor([[age_standardised, *one_hot]])).squeeze(0).tolist()


def test_prediction_applies_the_training_preprocessing(handler, model_dir):
    [(status, answer)] = serve(handler, model_dir, {"instances": [GOOD]})
    assert status == 200
    assert probabilities(answer) == pytest.approx(expected((52 - 40) / 10, [0.0, 1.0]), abs=1e-6)
    assert answer["predictions"][0]["label"] in SPEC["labels"]


def test_unknown_category_is_the_unknown_bucket_not_an_error(handler, model_dir):
    [(status, answer)] = serve(handler, model_dir, {"age": 52, "city": "tokyo"})
    assert status == 200
    assert probabilities(answer) == pytest.approx(expected(1.2, [0.0, 0.0]), abs=1e-6)


@pytest.mark.parametrize("missing", [None, float("nan")])
def test_null_numeric_is_imputed_with_the_training_median(handler, model_dir, missing):
    [(status, answer)] = serve(handler, model_dir, {"age": missing, "city": "berlin"})
    assert status == 200
    assert probabilities(answer) == pytest.approx(expected((30 - 40) / 10, [1.0, 0.0]), abs=1e-6)


@pytest.mark.parametrize(
    ("body", "field", "message"),
    [
        (b'{"instances": [', None, "malformed JSON"),
        ({"instances": [{"city": "paris"}]}, "age", "missing feature 'age'"),
        ({"instances": [{"age": "old", "city": "paris"}]}, "age", "is numeric"),
        ({"instances": [{"age": True, "city": "paris"}]}, "age", "is numeric"),
        ({"instances": [{"age": float("-inf"), "city": "paris"}]}, "age", "must be a finite number"),
        ({"instances": [{"age": 10**400, "city": "paris"}]}, "age", "must be a finite number"),
        ({"instances": [{"age": 3, "city": ["paris"]}]}, "city", "is categorical"),
        ({"instances": []}, "instances", "is empty"),
        ({"instances": [GOOD] * (MAX_INSTANCES + 1)}, "instances", "too many instances"),
        ({"instances": {"age": 3}}, "instances", "must be a list"),
        ([GOOD], None, "expected a JSON object"),
    ],
)
def test_bad_request_gets_400_naming_the_problem(handler, model_dir, body, field, message):
    [(status, answer)] = serve(handler, model_dir, body)
    assert status == 400
    assert message in answer["error"]
    assert answer["field"] == field


def test_bad_request_in_batch_fails_alone(handler, model_dir):
    answers = serve(handler, model_dir, GOOD, {"age": "x", "city": "paris"}, {"instances": [GOOD] * 2})
    assert [status for status, _ in answers] == [200, 400, 200]
    assert answers[1][1]["field"] == "age"
    alone = serve(handler, model_dir, GOOD)[0][1]
    assert answers[0][1] == alone
    assert answers[2][1]["predictions"] == alone["predictions"] * 2
