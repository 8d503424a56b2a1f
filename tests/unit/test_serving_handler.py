"""The TorchServe handler in-process, on a small archive directory with a categorical feature:
validation, the unknown-category bucket, imputation, a bad request failing alone, and the
monitoring hooks: the inference log (sampling, format, rotation, failures) and the metric lines
TorchServe's frontend parses."""

from __future__ import annotations

import base64
import io
import json
import logging
import os
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from omegaconf import OmegaConf
from PIL import Image, ImageFile
from ts.metrics.metric_cache_yaml_impl import MetricsCacheYamlImpl

from forgeml.config import MonitorConfig
from forgeml.contract import (
    HANDLER_METRICS,
    LOG_DIR_VARIABLE,
    LOG_KEY_VARIABLE,
    LOG_SETTINGS_FILE,
    REJECTION_REASONS,
    probability_column,
)
from forgeml.data import transform
from forgeml.errors import ForgeError
from forgeml.monitoring.logs import read_inference_log
from forgeml.monitoring.privacy import log_key_file
from forgeml.serving import handler as handler_module
from forgeml.serving import monitoring as monitoring_module
from forgeml.serving.archive import copy_modules, input_schema
from forgeml.serving.log_settings import write_log_settings
from forgeml.serving.runtime_files import metrics_config
from tests.helpers.data import TOY_SPEC, random_images
from tests.helpers.handler import make_context, serve

SPEC = TOY_SPEC  # the shared toy preprocessing spec
MAX_INSTANCES = 5
GOOD = {"age": 52, "city": "paris"}


class TinyModel(torch.nn.Module):
    """A seeded linear model with the exported program's outputs: probabilities or values."""

    def __init__(self, task: str = "classification") -> None:
        super().__init__()
        torch.manual_seed(0)
        self.classify = task == "classification"
        self.linear = torch.nn.Linear(3, 2 if self.classify else 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outputs = self.linear(x)
        return outputs.softmax(-1) if self.classify else outputs.squeeze(-1)


def write_model_files(directory: Path, spec: dict[str, Any]) -> None:
    """The exported TinyModel for `spec`'s task, its preprocessor and its input schema."""
    batch = torch.export.Dim("batch", min=1, max=1024)
    model = TinyModel(spec["task"]).eval()
    program = torch.export.export(model, (torch.zeros(4, 3),), dynamic_shapes={"x": {0: batch}})
    torch.export.save(program, directory / "model.pt2")
    (directory / "preprocessor.json").write_text(json.dumps(spec))
    (directory / "input_schema.json").write_text(json.dumps(input_schema(spec, MAX_INSTANCES)))


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What TorchServe unpacks from a forgeml archive, for a 2-feature classifier."""
    directory = tmp_path_factory.mktemp("archive")
    write_model_files(directory, SPEC)
    copy_modules(directory)
    return directory


@pytest.fixture(scope="module")
def handler(model_dir: Path) -> handler_module.ForgemlHandler:
    service = handler_module.ForgemlHandler()
    service.initialize(make_context(model_dir, requests=0))
    return service


def probabilities(answer: dict[str, Any]) -> list[float]:
    return list(answer["predictions"][0]["probabilities"].values())


def expected(age_standardised: float, one_hot: list[float]) -> list[float]:
    with torch.inference_mode():
        return TinyModel()(torch.tensor([[age_standardised, *one_hot]])).squeeze(0).tolist()


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
    good = {**GOOD, "id": "r1"}
    answers = serve(handler, model_dir, good, {"age": "x", "city": "paris"}, {"instances": [good] * 2})
    assert [status for status, _ in answers] == [200, 400, 200]
    assert answers[1][1]["field"] == "age"
    alone = serve(handler, model_dir, good)[0][1]
    assert answers[0][1] == alone
    assert answers[2][1]["predictions"] == alone["predictions"] * 2


HUGE_INTEGER = b'{"age": 1' + b"0" * 5000 + b', "city": "paris"}'


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (HUGE_INTEGER, "Exceeds the limit"),
        (b"[" * 50_000 + b"]" * 50_000, "nested too deeply"),
    ],
)
def test_json_python_cannot_decode_fails_its_request_alone(handler, model_dir, body, message):
    answers = serve(handler, model_dir, GOOD, body, GOOD)
    assert [status for status, _ in answers] == [200, 400, 200]
    assert message in answers[1][1]["error"]
    assert handler.requests.parse(body).reason == "malformed_json"


def without_ids(answer: dict) -> list[dict]:
    """The predictions of an answer less their request ids (drawn afresh for each request)."""
    return [{k: v for k, v in p.items() if k != "id"} for p in answer["predictions"]]


@pytest.mark.parametrize(
    ("value", "instance"), [(1e300, 0), (-1e300, 1), (10**300, 1)], ids=["1e300", "-1e300", "int-10**300"]
)
def test_value_that_overflows_float32_gets_400_naming_the_feature(handler, model_dir, value, instance):
    extreme = {"age": value, "city": "paris"}
    records = [extreme, GOOD] if instance == 0 else [GOOD, extreme]
    answers = serve(handler, model_dir, GOOD, {"instances": records}, GOOD)
    assert [status for status, _ in answers] == [200, 400, 200]
    assert (answers[1][1]["field"], answers[1][1]["instance"]) == ("age", instance)
    assert "too extreme for the model" in answers[1][1]["error"]
    alone = serve(handler, model_dir, GOOD)[0][1]
    assert without_ids(answers[0][1]) == without_ids(answers[2][1]) == without_ids(alone)


def test_output_that_is_not_finite_is_a_400_never_a_nan_in_a_200(handler, model_dir, monkeypatch):
    program = handler.inference.program

    def nan_for_old_people(inputs: torch.Tensor) -> torch.Tensor:
        outputs = program(inputs)
        return torch.where(inputs[:, :1] > 4, torch.nan, outputs)  # age > 80, once standardised

    monkeypatch.setattr(handler.inference, "program", nan_for_old_people)
    answers = serve(handler, model_dir, {"age": 85, "city": "paris"}, GOOD)
    assert [status for status, _ in answers] == [400, 200]
    assert answers[0][1]["field"] == "age"
    assert handler.requests.parse({"age": 85, "city": "paris"}) == [{"age": 85, "city": "paris"}]


def test_400_has_a_short_status_line_and_a_bounded_message(handler, model_dir):
    context = make_context(model_dir, 1)
    batch = handler.inference.infer(handler.requests.batch([{"age": "x" * 900_000}]))
    [answer] = handler.respond(batch, context)
    assert context.get_response_status(0) == (400, "Bad Request")
    body = json.loads(answer)
    assert body["field"] == "age" and "is numeric" in body["error"]
    assert len(answer) < 400


# --- monitoring -------------------------------------------------------------------------------

# TorchServe 0.12's frontend: Metric.PATTERN (Metric.java), dimensions split on ',' then ':'
METRIC_LINE = re.compile(
    r"\s*([\w\s]+)\.([\w\s]+):([0-9\-,.e]+)\|#([^|]*)(\|#type:([^|,]+))?\|#hostname:([^,]+),([^,]+)(,(.*))?"
)


def logging_handler(model_dir: Path, log_dir: Path, monkeypatch, metrics: Any = None, **monitor: Any):
    """A handler whose archive samples `monitor.sample_rate` of requests into `log_dir`."""
    archive = model_dir.parent / f"{model_dir.name}-logging"
    shutil.copytree(model_dir, archive, dirs_exist_ok=True)
    settings = MonitorConfig(**{"sample_rate": 1.0, **monitor})
    (archive / "input_schema.json").write_text(json.dumps(input_schema(SPEC, MAX_INSTANCES, settings)))
    monkeypatch.setenv(LOG_DIR_VARIABLE, str(log_dir))
    service = handler_module.ForgemlHandler()
    service.initialize(make_context(archive, requests=0, metrics=metrics))
    return service, archive


def handle(service, model_dir: Path, *bodies: Any) -> list[tuple[int, dict[str, Any]]]:
    """One dynamic batch through `handle`, monitoring included: (status, body) per request."""
    context = make_context(model_dir, len(bodies), service.metrics and service.metrics.metrics)
    answers = service.handle([{"body": body} for body in bodies], context)
    return [(context.get_response_status(i)[0], json.loads(a)) for i, a in enumerate(answers)]


def log_lines(log_dir: Path) -> list[dict[str, Any]]:
    return [
        json.loads(line) for path in sorted(log_dir.glob("*.jsonl")) for line in path.read_text().splitlines()
    ]


def metric_counts(records: list[logging.LogRecord]) -> dict[tuple[str, tuple], float]:
    """{(metric, dimensions): sum} of the metric lines, parsed as TorchServe's frontend does."""
    counts: dict[tuple[str, tuple], float] = {}
    declared = {name: [*own, "ModelVersion", "ModelName", "Level"] for _, name, _, own in HANDLER_METRICS}
    for record in records:
        message = record.getMessage()
        if not message.startswith("[METRICS]"):
            continue
        match = METRIC_LINE.fullmatch(message.removeprefix("[METRICS]"))
        assert match, message
        pairs = [pair.split(":") for pair in match.group(4).split(",")]
        assert all(len(pair) == 2 for pair in pairs), message
        assert [name for name, _ in pairs] == declared[match.group(1)]
        key = (match.group(1), tuple(value for _, value in pairs))
        counts[key] = counts.get(key, 0) + float(match.group(3))
    return counts


@pytest.fixture
def metrics_cache(tmp_path: Path, monkeypatch) -> MetricsCacheYamlImpl:
    """The metrics cache a TorchServe worker builds from the config `forgeml serve start` writes;
    the handler's summed counts go to it when a test flushes them, not on a timer."""
    monkeypatch.setattr(handler_module, "METRICS_INTERVAL", 3600.0)
    (tmp_path / "metrics.yaml").write_text(yaml.safe_dump(metrics_config()))
    cache = MetricsCacheYamlImpl(config_file_path=str(tmp_path / "metrics.yaml"))
    cache.initialize_cache()
    cache.model_name = "tiny"
    return cache


def test_accepted_records_are_logged_in_the_format_the_monitor_reads(model_dir, tmp_path, monkeypatch):
    service, archive = logging_handler(model_dir, tmp_path / "log", monkeypatch)
    bad = {"age": "old", "city": "paris"}
    answers = handle(service, archive, GOOD, bad, {"instances": [GOOD, {"age": None, "city": "tokyo"}]})
    assert [status for status, _ in answers] == [200, 400, 200]
    [path] = (tmp_path / "log").iterdir()
    assert path.name == f"worker-{os.getpid()}.jsonl"
    lines = [line for line in log_lines(tmp_path / "log") if "input" in line]
    assert [line["input"] for line in lines] == [GOOD, GOOD, {"age": None, "city": "tokyo"}]
    assert [line["prediction"] for line in lines] == [
        answers[0][1]["predictions"][0]["label"],
        *(p["label"] for p in answers[2][1]["predictions"]),
    ]
    assert {(line["model"], line["version"]) for line in lines} == {("tiny", "3")}
    assert all(line["latency_ms"] > 0 and line["ts"].endswith("Z") for line in lines)
    frame = read_inference_log(tmp_path / "log")
    assert len(frame) == 4 and frame["rejected"].tolist()[3] == "wrong_type"
    assert frame["age"].tolist()[:2] == [52, 52]
    assert str(frame["ts"].dt.tz) == "UTC"


def test_each_record_has_a_request_id_from_the_client_or_new_in_the_answer_and_the_log(
    model_dir, tmp_path, monkeypatch
):
    service, archive = logging_handler(model_dir, tmp_path / "log", monkeypatch)
    answers = handle(service, archive, {**GOOD, "id": "abc"}, GOOD, {"instances": [{**GOOD, "id": 7}, GOOD]})
    predictions = [p for _, answer in answers for p in answer["predictions"]]
    ids = [p["id"] for p in predictions]
    assert ids[0] == "abc" and ids[2] == "7"
    assert all(re.fullmatch(r"[0-9a-f]{32}", ids[i]) for i in (1, 3)) and ids[1] != ids[3]
    lines = log_lines(tmp_path / "log")
    assert [line["id"] for line in lines] == ids
    assert all(line["input"] == GOOD for line in lines)  # the id is not an input
    assert [line["probabilities"] for line in lines] == [p["probabilities"] for p in predictions]
    frame = read_inference_log(tmp_path / "log")
    assert frame["id"].tolist() == ids
    assert frame[probability_column("yes")].tolist() == pytest.approx(
        [p["probabilities"]["yes"] for p in predictions]
    )
    [(status, error)] = handle(service, archive, {**GOOD, "id": [1]})
    assert status == 400 and error["field"] == "id"


def test_rejected_requests_are_logged_with_their_reason_and_time_but_not_their_body(
    model_dir, tmp_path, monkeypatch
):
    service, archive = logging_handler(model_dir, tmp_path / "log", monkeypatch, sample_rate=0.0001)
    service.monitoring.sampling.random = random.Random(1).random
    handle(service, archive, GOOD, {"age": "old", "city": "paris"}, "{not json")
    lines = log_lines(tmp_path / "log")
    assert [line["rejected"] for line in lines] == ["wrong_type", "malformed_json"]
    assert all(set(line) == {"ts", "model", "version", "latency_ms", "rejected"} for line in lines)
    frame = read_inference_log(tmp_path / "log")
    assert frame["rejected"].tolist() == ["wrong_type", "malformed_json"]


def test_nan_input_is_logged_as_null_so_the_log_stays_strict_json(model_dir, tmp_path, monkeypatch):
    service, archive = logging_handler(model_dir, tmp_path / "log", monkeypatch)
    assert handle(service, archive, {"age": float("nan"), "city": "paris"})[0][0] == 200
    text = next((tmp_path / "log").iterdir()).read_text()

    def refuse(constant: str) -> None:
        raise AssertionError(f"{constant} in the log")

    assert json.loads(text, parse_constant=refuse)["input"] == {"age": None, "city": "paris"}


def test_sample_rate_logs_that_share_of_requests(model_dir, tmp_path, monkeypatch):
    service, archive = logging_handler(model_dir, tmp_path / "log", monkeypatch, sample_rate=0.25)
    service.monitoring.sampling.random = random.Random(7).random
    for _ in range(100):
        handle(service, archive, *[GOOD] * 4)
    assert 60 <= len(log_lines(tmp_path / "log")) <= 140  # 100 of 400 expected


def test_sample_rate_zero_writes_no_log(model_dir, tmp_path, monkeypatch):
    service, archive = logging_handler(model_dir, tmp_path / "log", monkeypatch, sample_rate=0.0)
    assert handle(service, archive, GOOD, {"age": "old", "city": "paris"})[0][0] == 200
    assert not (tmp_path / "log").exists()


def draws(*values: float):
    """A sampler's random(), returning `values` in turn."""
    return iter(values).__next__


def test_each_logged_record_says_its_rate_and_the_records_served_since_the_previous_one(
    model_dir, tmp_path, monkeypatch
):
    service, archive = logging_handler(model_dir, tmp_path / "log", monkeypatch, sample_rate=0.5)
    # one draw per request: not, not, logged (3 records), not (2 records), logged
    service.monitoring.sampling.random = draws(0.9, 0.7, 0.1, 0.6, 0.2)
    handle(service, archive, GOOD, GOOD, {"instances": [GOOD] * 3})
    handle(service, archive, {"instances": [GOOD, GOOD]}, GOOD, {"age": "old", "city": "paris"})
    lines = [line for line in log_lines(tmp_path / "log") if "input" in line]
    assert [(line["sample_rate"], line["seen"]) for line in lines] == [(0.5, 3), (0.5, 1), (0.5, 1), (0.5, 3)]
    frame = read_inference_log(tmp_path / "log")
    assert frame["seen"].sum() == 8 and frame["rejected"].notna().sum() == 1  # 8 records served


def test_auto_logs_every_request_until_the_window_has_min_samples_then_the_base_rate():
    settings = {"sample_rate": "auto", "auto_min_samples": 3, "auto_window_s": 60.0, "auto_base_rate": 0.1}
    sampling = monitoring_module.Sampling(settings, "auto", draw=lambda: 0.5)
    logged = [sampling.draw(1, now) for now in (120.0, 121.0, 130.0, 140.0, 179.9)]
    assert logged == [(1.0, 1), (1.0, 1), (1.0, 1), None, None]
    assert sampling.draw(2, 180.0) == (1.0, 3)  # a new window: 2 records seen since the last logged
    assert sampling.rate(181.0) == 1.0 and sampling.draw(1, 182.0) == (1.0, 1)
    assert sampling.rate(183.0) == 0.1


@pytest.mark.parametrize("served", [1, 50, 99, 100, 101, 400])
def test_auto_across_workers_logs_min_samples_of_a_window_that_served_them(served):
    """Each worker counts only its own records; the window still gets min(served, min_samples)."""
    settings = {"sample_rate": "auto", "auto_min_samples": 100, "auto_window_s": 60.0, "auto_base_rate": 0.0}
    workers = [monitoring_module.Sampling(settings, "auto", draw=random.Random(i).random) for i in range(4)]
    chosen = random.Random(served)
    logged = sum(chosen.choice(workers).draw(1, 10.0 + i * 0.1) is not None for i in range(served))
    assert min(served, 100) <= logged <= 4 * 100


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_the_settings_file_is_looked_at_once_a_second_and_read_when_it_changed(tmp_path, caplog):
    path = tmp_path / "log-settings.json"
    clock = FakeClock()
    settings_file = monitoring_module.SettingsFile(str(path), "auto", clock)
    assert settings_file.poll() is None  # no file: the archive's settings hold
    path.write_text(json.dumps({"format": "x", "sample_rate": "auto", "log_backups": 2, "redact": []}))
    clock.now = 0.9
    assert settings_file.poll() is None  # not looked at within the second
    clock.now = 1.0
    assert settings_file.poll() == {"sample_rate": "auto", "log_backups": 2}  # redact is no runtime setting
    clock.now = 2.0
    assert settings_file.poll() is None  # unchanged
    path.write_text(json.dumps({"sample_rate": 1.5}))
    clock.now = 3.0
    assert settings_file.poll() == {} and "no log settings file" in caplog.text
    path.unlink()
    clock.now = 4.0
    assert settings_file.poll() == {}


def test_configure_changes_the_rate_and_rotation_of_a_running_worker(model_dir, tmp_path, monkeypatch):
    service, archive = logging_handler(model_dir, tmp_path / "log", monkeypatch, sample_rate=0.0)
    clock = FakeClock()
    service.monitoring.settings_file.clock = clock
    handle(service, archive, GOOD)
    monitor = OmegaConf.structured(
        MonitorConfig(sample_rate=1.0, log_dir=str(tmp_path / "log"), log_backups=1)
    )
    written = write_log_settings(monitor)
    assert Path(written["settings_file"]).name == LOG_SETTINGS_FILE
    handle(service, archive, GOOD)
    assert not list((tmp_path / "log").glob("*.jsonl"))
    clock.now = 1.0
    handle(service, archive, GOOD, GOOD)
    assert [line["sample_rate"] for line in log_lines(tmp_path / "log")] == [1.0, 1.0]
    assert service.monitoring.inference_log.backups == 1
    Path(written["settings_file"]).unlink()
    clock.now = 2.0
    handle(service, archive, GOOD)
    assert len(log_lines(tmp_path / "log")) == 2  # the archive's rate, 0, holds again
    assert service.monitoring.inference_log.backups == MonitorConfig.log_backups


def test_without_the_log_directory_variable_nothing_is_logged(model_dir, tmp_path, monkeypatch, caplog):
    service, archive = logging_handler(model_dir, tmp_path / "log", monkeypatch)
    monkeypatch.delenv(LOG_DIR_VARIABLE)
    service.initialize(make_context(archive, requests=0))
    assert service.monitoring.inference_log is None
    assert LOG_DIR_VARIABLE in caplog.text
    assert handle(service, archive, GOOD)[0][0] == 200


def numbered_line(index: int) -> bytes:
    """A 40-byte log line for index 0..9."""
    return json.dumps({"n": index, "pad": "x" * 23}, separators=(",", ":")).encode() + b"\n"


def test_rotation_keeps_the_newest_records_in_the_backups(tmp_path):
    log = monitoring_module.InferenceLog(str(tmp_path), max_bytes=100, backups=2)
    for index in range(10):
        log.append(numbered_line(index))  # 40 bytes: 2 per file
    names = sorted(path.name for path in tmp_path.iterdir())
    stem = f"worker-{os.getpid()}"
    assert names == [f"{stem}.1.jsonl", f"{stem}.2.jsonl", f"{stem}.jsonl"]
    assert all(path.stat().st_size <= 100 for path in tmp_path.iterdir())
    kept = [
        json.loads(line)["n"]
        for path in (".2", ".1", "")
        for line in (tmp_path / f"{stem}{path}.jsonl").open()
    ]
    assert kept == [4, 5, 6, 7, 8, 9]


def test_rotation_drops_the_generations_a_lowered_log_backups_no_longer_keeps(tmp_path):
    log = monitoring_module.InferenceLog(str(tmp_path), max_bytes=100, backups=4)
    for index in range(10):
        log.append(numbered_line(index))
    assert len(list(tmp_path.iterdir())) == 5
    log.backups = 1
    log.append(numbered_line(10))
    stem = f"worker-{os.getpid()}"
    assert sorted(path.name for path in tmp_path.iterdir()) == [f"{stem}.1.jsonl", f"{stem}.jsonl"]


def test_rotation_without_backups_starts_a_new_file(tmp_path):
    log = monitoring_module.InferenceLog(str(tmp_path), max_bytes=100, backups=0)
    for index in range(5):
        log.append(numbered_line(index))
    [path] = tmp_path.iterdir()
    assert [json.loads(line)["n"] for line in path.open()] == [4]


def test_log_write_failure_is_counted_and_the_request_answered(
    model_dir, tmp_path, monkeypatch, metrics_cache, caplog
):
    (tmp_path / "log").write_text("a file where the log directory should be")
    service, archive = logging_handler(model_dir, tmp_path / "log", monkeypatch, metrics_cache)
    with caplog.at_level(logging.INFO):
        answers = handle(service, archive, GOOD, {"instances": [GOOD, GOOD]})
        handle(service, archive, GOOD)
        service.metrics.flush()
    assert [status for status, _ in answers] == [200, 200]
    assert service.monitoring.log_errors == 2
    assert metric_counts(caplog.records)[("forgeml_inference_log_errors", ("3", "tiny", "Model"))] == 4
    assert caplog.text.count("inference log") == 1  # one warning, then only counted


def test_deleted_log_directory_is_recreated_by_the_next_write(tmp_path):
    log = monitoring_module.InferenceLog(str(tmp_path / "log"), max_bytes=10_000, backups=1)
    log.append(numbered_line(0))
    shutil.rmtree(tmp_path / "log")
    log.append(numbered_line(1))
    (tmp_path / "log").rename(tmp_path / "moved")
    (tmp_path / "log").mkdir()  # replaced by a new, empty directory
    log.append(numbered_line(2))
    [path] = (tmp_path / "log").iterdir()
    assert [json.loads(line)["n"] for line in path.open()] == [2]
    [moved] = (tmp_path / "moved").iterdir()
    assert [json.loads(line)["n"] for line in moved.open()] == [1]


def test_log_removed_during_a_write_fails_that_batch_loudly(tmp_path, monkeypatch):
    log = monitoring_module.InferenceLog(str(tmp_path / "log"), max_bytes=10_000, backups=1)
    log.append(numbered_line(0))
    write = os.write

    def remove_then_write(fd: int, data: Any) -> int:
        shutil.rmtree(tmp_path / "log", ignore_errors=True)
        return write(fd, data)

    monkeypatch.setattr(monitoring_module.os, "write", remove_then_write)
    with pytest.raises(FileNotFoundError):
        log.append(numbered_line(1))
    monkeypatch.setattr(monitoring_module.os, "write", write)
    log.append(numbered_line(2))
    assert [json.loads(line)["n"] for line in next((tmp_path / "log").iterdir()).open()] == [2]


def test_records_of_a_batch_lost_with_its_log_directory_are_counted(
    model_dir, tmp_path, monkeypatch, metrics_cache, caplog
):
    service, archive = logging_handler(model_dir, tmp_path / "log", monkeypatch, metrics_cache)
    assert handle(service, archive, GOOD)[0][0] == 200
    write = os.write

    def remove_then_write(fd: int, data: Any) -> int:
        shutil.rmtree(tmp_path / "log", ignore_errors=True)
        return write(fd, data)

    monkeypatch.setattr(monitoring_module.os, "write", remove_then_write)
    with caplog.at_level(logging.INFO):
        answers = handle(service, archive, GOOD, {"instances": [GOOD, GOOD]})
        monkeypatch.setattr(monitoring_module.os, "write", write)
        handle(service, archive, GOOD)
        service.metrics.flush()
    assert [status for status, _ in answers] == [200, 200]
    assert metric_counts(caplog.records)[("forgeml_inference_log_errors", ("3", "tiny", "Model"))] == 3
    assert len(log_lines(tmp_path / "log")) == 1  # the directory is back, with the next batch


def test_metrics_count_predictions_rejections_and_out_of_range_values(model_dir, metrics_cache, caplog):
    service = handler_module.ForgemlHandler()
    service.initialize(make_context(model_dir, requests=0, metrics=metrics_cache))
    old, young = {"age": 95, "city": "paris"}, {"age": 5, "city": "berlin"}
    with caplog.at_level(logging.INFO):
        first = handle(
            service,
            model_dir,
            {"instances": [GOOD, old, young]},
            b'{"instances": [',
            {"instances": [{"city": "paris"}]},
            {"instances": []},
        )
        second = handle(service, model_dir, {"age": 100, "city": "paris"}, {"age": "old", "city": "paris"})
        service.metrics.flush()
    labels = [p["label"] for _, answer in (first[0], second[0]) for p in answer["predictions"]]
    counts = metric_counts(caplog.records)
    predicted = {key[1][0]: value for key, value in counts.items() if key[0] == "forgeml_predictions"}
    assert predicted == {label: labels.count(label) for label in set(labels)}
    assert counts[("forgeml_out_of_range_values", ("age", "3", "tiny", "Model"))] == 3
    rejected = {key[1][0]: value for key, value in counts.items() if key[0] == "forgeml_rejected_requests"}
    assert rejected == {"malformed_json": 1, "missing_feature": 1, "empty_instances": 1, "wrong_type": 1}
    # summed across the two batches: one metric line per count, not one per batch
    lines = [r for r in caplog.records if r.getMessage().startswith("[METRICS]")]
    assert len(lines) == len(counts)


def test_regression_predictions_fill_a_histogram_of_values(model_dir, tmp_path, metrics_cache, caplog):
    spec = {**SPEC, "task": "regression", "labels": None}
    archive = tmp_path / "regression"
    shutil.copytree(model_dir, archive)
    write_model_files(archive, spec)
    service = handler_module.ForgemlHandler()
    service.initialize(make_context(archive, requests=0, metrics=metrics_cache))
    with caplog.at_level(logging.INFO):
        [(status, answer)] = handle(service, archive, {"instances": [GOOD, {"age": 20, "city": "berlin"}]})
        service.metrics.flush()
    observed = [
        float(METRIC_LINE.fullmatch(r.getMessage().removeprefix("[METRICS]")).group(3))
        for r in caplog.records
        if r.getMessage().startswith("[METRICS]forgeml_predicted_value.value:")
    ]
    assert status == 200
    assert "#type:HISTOGRAM" in caplog.text
    assert observed == pytest.approx([p["value"] for p in answer["predictions"]])


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"\xff", "malformed_json"),
        (b'{"instances": [', "malformed_json"),
        ([GOOD], "not_an_object"),
        ({"instances": [3]}, "not_an_object"),
        ({"instances": {"age": 3}}, "wrong_type"),
        ({"age": True, "city": "paris"}, "wrong_type"),
        ({"age": 3, "city": ["paris"]}, "wrong_type"),
        ({"age": float("inf"), "city": "paris"}, "not_finite"),
        ({"city": "paris"}, "missing_feature"),
        ({"instances": []}, "empty_instances"),
        ({"instances": [GOOD] * (MAX_INSTANCES + 1)}, "too_many_instances"),
    ],
)
def test_each_rejection_has_a_declared_reason(handler, body, reason):
    error = handler.requests.parse(body)
    assert isinstance(error, handler.modules.request.RequestError)
    assert error.reason == reason
    assert reason in REJECTION_REASONS


def test_metric_labels_cannot_break_torchserve_metric_lines():
    assert handler_module.dimension_value("a,b:c|d\ne") == "a_b_c_d_e"
    assert handler_module.dimension_value("") == "_"
    assert handler_module.dimension_value("mean radius") == "mean radius"


def test_redacted_columns_are_never_logged_and_hashed_ones_only_as_keyed_hashes(
    model_dir, tmp_path, monkeypatch
):
    key_file = log_key_file(tmp_path / "runtime")
    monkeypatch.setenv(LOG_KEY_VARIABLE, str(key_file))
    service, archive = logging_handler(
        model_dir, tmp_path / "log", monkeypatch, redact=["age"], hash=["city"]
    )
    cities = ["paris", "berlin", None, "paris"]
    answers = handle(service, archive, {"instances": [{"age": 52, "city": city} for city in cities]})
    assert answers[0][0] == 200
    text = next((tmp_path / "log").iterdir()).read_text()
    assert "paris" not in text and "berlin" not in text
    hashes = transform.keyed_hashes(key_file.read_bytes(), cities)
    assert [line["input"] for line in log_lines(tmp_path / "log")] == [{"city": h} for h in hashes]
    assert hashes[0] == hashes[3] != hashes[1] and hashes[2] is None
    assert service.modules.contract.LOG_KEY_VARIABLE == LOG_KEY_VARIABLE


def test_hashed_column_without_a_key_is_left_out_of_the_log(model_dir, tmp_path, monkeypatch, caplog):
    monkeypatch.delenv(LOG_KEY_VARIABLE, raising=False)
    service, archive = logging_handler(model_dir, tmp_path / "log", monkeypatch, hash=["city"])
    assert handle(service, archive, GOOD)[0][0] == 200
    assert [line["input"] for line in log_lines(tmp_path / "log")] == [{"age": 52}]
    assert LOG_KEY_VARIABLE in caplog.text


@pytest.mark.parametrize(
    ("monitor", "message"),
    [
        (
            {"redact": ["email"]},
            r"monitor.redact: 'email' is not a feature of the model; its features: age, city",
        ),
        ({"hash": ["cty"]}, r"monitor.hash: 'cty' is not a feature"),
        ({"hash": ["age"]}, r"monitor.hash: 'age' is numeric"),
        ({"hash": ["city"], "redact": ["city"]}, r"both name 'city'"),
    ],
)
def test_private_columns_are_checked_at_package_time_naming_the_column(monitor, message):
    with pytest.raises(ForgeError, match=message):
        input_schema(SPEC, MAX_INSTANCES, MonitorConfig(**monitor))


def test_archive_carries_the_private_columns():
    settings = input_schema(SPEC, MAX_INSTANCES, MonitorConfig(redact=["age"], hash=["city"]))["monitoring"]
    assert (settings["redact"], settings["hash"]) == (["age"], ["city"])


def test_sample_rate_outside_zero_to_one_is_refused_at_package_time():
    with pytest.raises(ForgeError, match=r"monitor.sample_rate=1.5"):
        input_schema(SPEC, MAX_INSTANCES, MonitorConfig(sample_rate=1.5))


@pytest.mark.parametrize(
    ("model_yaml_config", "calls"),
    [({"handler": {"torch_threads": 1}}, [1]), ({"handler": {"torch_threads": 0}}, []), (None, [])],
)
def test_worker_sets_the_torch_threads_its_archive_names(model_dir, monkeypatch, model_yaml_config, calls):
    made = []
    monkeypatch.setattr(torch, "set_num_threads", made.append)
    context = make_context(model_dir, requests=0)
    context.model_yaml_config = model_yaml_config
    handler_module.ForgemlHandler().initialize(context)
    assert made == calls


IMAGE_SPEC = {
    "format": "forgeml.preprocessor/1",
    "task": "classification",
    "target": "label",
    "features": [
        {"name": "image", "type": "image", "size": [1, 3], "channels": 1, "mean": [0.5], "std": [0.25]}
    ],
    "input_dim": 3,
    "labels": ["a", "b"],
}


@pytest.fixture
def image_service(tmp_path: Path, monkeypatch) -> tuple[handler_module.ForgemlHandler, Path]:
    """A handler of a model whose one feature is a 1x3 grey image, logging every request."""
    archive = tmp_path / "archive"
    archive.mkdir()
    write_model_files(archive, IMAGE_SPEC)
    copy_modules(archive)
    schema = input_schema(IMAGE_SPEC, MAX_INSTANCES, MonitorConfig(sample_rate=1.0))
    (archive / "input_schema.json").write_text(json.dumps(schema))
    monkeypatch.setenv(LOG_DIR_VARIABLE, str(tmp_path / "log"))
    service = handler_module.ForgemlHandler()
    service.initialize(make_context(archive, requests=0))
    return service, archive


def test_each_served_image_is_decoded_once_for_its_check_its_prediction_and_its_log(
    image_service, tmp_path, monkeypatch
):
    service, archive = image_service
    images = random_images(2, (6, 9))
    opened = []
    real_open = Image.open
    monkeypatch.setattr(Image, "open", lambda *args, **kwargs: opened.append(1) or real_open(*args, **kwargs))
    body = {"instances": [{"image": base64.b64encode(image).decode()} for image in images]}
    [(status, answer)] = handle(service, archive, body)
    assert status == 200 and len(opened) == len(images)
    monkeypatch.setattr(Image, "open", real_open)
    with torch.inference_mode():
        encoded = torch.from_numpy(transform.encode_features(IMAGE_SPEC, {"image": images}))
        expected_probabilities = TinyModel()(encoded).numpy()
    served = [list(p["probabilities"].values()) for p in answer["predictions"]]
    np.testing.assert_allclose(served, expected_probabilities, atol=1e-6)
    logged = [line["input"]["image"] for line in log_lines(tmp_path / "log")]
    assert logged == [transform.image_signals(image) for image in images]


def encoded_image(image: Image.Image, image_format: str) -> str:
    out = io.BytesIO()
    image.save(out, format=image_format)
    return base64.b64encode(out.getvalue()).decode()


def test_image_beyond_the_pixel_budget_is_a_400_before_its_pixels_are_decoded(image_service, monkeypatch):
    service, archive = image_service
    [budget] = [f["max_pixels"] for f in service.inference.schema["features"]]
    # a 1-bit PNG compresses to a few KB whatever its size: the header is all that may be read
    bomb = encoded_image(Image.new("1", (budget // 1000 + 1, 1000)), "PNG")
    decoded = []
    real_load = ImageFile.ImageFile.load
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda image: decoded.append(1) or real_load(image))
    [(status, answer)] = handle(service, archive, {"image": bomb})
    assert (status, answer["field"]) == (400, "image")
    assert f"more than the {budget}" in answer["error"]
    assert decoded == []


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (encoded_image(Image.new("L", (4, 4)), "GIF"), "only PNG and JPEG are accepted"),
        (encoded_image(Image.new("L", (4, 4)), "BMP"), "only PNG and JPEG are accepted"),
        (base64.b64encode(b"not an image at all").decode(), "only PNG and JPEG are accepted"),
        (base64.b64encode(random_images(1, (4, 4))[0][:60]).decode(), "not a decodable image"),
    ],
    ids=["gif", "bmp", "text", "truncated-png"],
)
def test_only_png_and_jpeg_are_images_and_their_400_quotes_no_python_object(image_service, value, message):
    service, archive = image_service
    [(status, answer)] = handle(service, archive, {"image": value})
    assert (status, answer["field"]) == (400, "image")
    assert message in answer["error"]
    assert not re.search(r"object at 0x", answer["error"])


def test_jpeg_is_an_image(image_service):
    service, archive = image_service
    assert handle(service, archive, {"image": encoded_image(Image.new("RGB", (8, 6)), "JPEG")})[0][0] == 200


def test_request_fields_that_are_not_features_are_logged_only_when_listed(model_dir, tmp_path, monkeypatch):
    record = {**GOOD, "comment": "call me at 555-0100", "id": "r1"}
    service, archive = logging_handler(model_dir, tmp_path / "quiet", monkeypatch)
    handle(service, archive, record)
    [line] = log_lines(tmp_path / "quiet")
    assert line["input"] == GOOD and line["id"] == "r1"
    assert "555-0100" not in (tmp_path / "quiet" / f"worker-{os.getpid()}.jsonl").read_text()
    service, archive = logging_handler(
        model_dir, tmp_path / "listed", monkeypatch, log_extra_fields=["comment"]
    )
    handle(service, archive, record, GOOD)
    assert [line["input"] for line in log_lines(tmp_path / "listed")] == [
        {**GOOD, "comment": "call me at 555-0100"},
        GOOD,
    ]


def test_redaction_and_hashing_cover_the_extra_fields_logged(model_dir, tmp_path, monkeypatch):
    key_file = log_key_file(tmp_path / "runtime")
    monkeypatch.setenv(LOG_KEY_VARIABLE, str(key_file))
    service, archive = logging_handler(
        model_dir,
        tmp_path / "log",
        monkeypatch,
        log_extra_fields=["comment", "email"],
        redact=["email"],
        hash=["comment"],
    )
    handle(service, archive, {**GOOD, "comment": "hello", "email": "a@b.example"})
    [line] = log_lines(tmp_path / "log")
    assert line["input"] == {**GOOD, "comment": transform.keyed_hashes(key_file.read_bytes(), ["hello"])[0]}


def test_extra_fields_settings_travel_in_the_archive_and_are_checked():
    monitor = MonitorConfig(log_extra_fields=["comment"], hash=["comment"])
    settings = input_schema(SPEC, MAX_INSTANCES, monitor)["monitoring"]
    assert (settings["log_extra_fields"], settings["hash"]) == (["comment"], ["comment"])
    with pytest.raises(ForgeError, match=r"monitor.redact: 'comment' is not a feature.*log_extra_fields"):
        input_schema(SPEC, MAX_INSTANCES, MonitorConfig(redact=["comment"]))
