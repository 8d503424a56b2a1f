"""The monitoring hooks on a real TorchServe: the inference log and the metrics port.

One server (free ports, its own runtime directory) serves the session's trained breast_cancer
model with 2 workers, every request logged (monitor.sample_rate=1) and a log cap of a few KB.
Concurrent traffic (good requests, records pushed out of the training range, bad requests) is
sent once; the tests then compare the log files and /metrics with what was answered.
"""

from __future__ import annotations

import json
import re
import time
import urllib.request
import zipfile
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pandas as pd
import psutil
import pytest
from omegaconf import DictConfig, OmegaConf

from forgeml.monitoring.logs import read_inference_log
from forgeml.serving.local_server import LocalServer
from forgeml.stages import serve
from tests.helpers.serving import (
    MAX_INSTANCES,
    MODEL,
    ask,
    huge_integer,
    log_lines,
    logged,
    packaged_and_served,
    records,
    serving_config,
)

pytestmark = pytest.mark.slow

LOG_MAX_BYTES = 4096
LOG_BACKUPS = 50  # enough that no record of this traffic is rotated out
OUT_OF_RANGE_FEATURE, OUT_OF_RANGE_VALUE, OUT_OF_RANGE_REQUESTS = "mean radius", 1000.0, 5
# "name{labels} value" of Prometheus' text format
SAMPLE = re.compile(r"^(\w+)\{(.*)\} (\S+)$")
LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


@pytest.fixture(scope="module")
def monitored(trained_project, tmp_path_factory) -> DictConfig:
    """breast_cancer on a running TorchServe: 2 workers, small batches, everything logged."""
    workdir = tmp_path_factory.mktemp("monitored")
    cfg = serving_config(
        trained_project, workdir, workers=2, batch_size=4, max_batch_delay=20, model_api=True
    )
    cfg.monitor.merge_with(
        {
            "sample_rate": 1.0,
            "log_dir": str(workdir / "inference-log"),
            "log_max_bytes": LOG_MAX_BYTES,
            "log_backups": LOG_BACKUPS,
        }
    )
    with packaged_and_served(cfg):
        yield cfg


@pytest.fixture(scope="module")
def traffic(monitored, trained_project) -> dict[str, Any]:
    """Concurrent requests to both workers: what was accepted and answered, what was refused."""
    test = pd.read_parquet(Path(trained_project.paths.processed_dir) / "test.parquet")
    rows = records(test.drop(columns=["target"]).head(60))
    good = [{"instances": [row]} for row in rows[:40]]
    good += [{"instances": rows[i : i + 3]} for i in range(40, 55, 3)]
    good += [{"instances": [{**row, OUT_OF_RANGE_FEATURE: OUT_OF_RANGE_VALUE}]} for row in rows[55:60]]
    bad = {
        "malformed_json": [b'{"instances": [{"mean radius": 1', b"{", huge_integer(rows[0]), b"[" * 50_000],
        "out_of_range": [{"instances": [rows[1], {**rows[2], "mean radius": -1e300}]}],
        "missing_feature": [{"instances": [{k: v for k, v in rows[0].items() if k != "mean texture"}]}],
        "wrong_type": [{"instances": [{**row, "mean area": "huge"}]} for row in rows[:3]],
        "empty_instances": [{"instances": []}],
        "too_many_instances": [{"instances": rows[:1] * (MAX_INSTANCES + 1)}],
    }
    bodies = [*good, *(body for bodies in bad.values() for body in bodies)]
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda body: ask(monitored, body), bodies))
    assert [status for status, _ in answers] == [200] * len(good) + [400] * (len(bodies) - len(good))
    accepted = [record for body in good for record in body["instances"]]
    labels = [p["label"] for _, answer in answers[: len(good)] for p in answer["predictions"]]
    return {
        "accepted": accepted,
        "answered": list(zip(accepted, labels, strict=True)),
        "ids": [p["id"] for _, answer in answers[: len(good)] for p in answer["predictions"]],
        "rejected": {reason: len(bodies) for reason, bodies in bad.items()},
    }


def canonical(record: dict[str, Any]) -> str:
    return json.dumps(record, sort_keys=True)


def worker_pids(cfg: DictConfig) -> set[int]:
    server = LocalServer(cfg.serve)
    version = server.api.default_version(MODEL)
    return {int(worker["pid"]) for worker in server.api.describe(MODEL, version)["workers"]}


def metrics(cfg: DictConfig) -> dict[str, list[tuple[dict[str, str], float]]]:
    """The forgeml metrics on the metrics port: name -> [(labels, value)]."""
    url = LocalServer(cfg.serve).url("metrics") + "/metrics"
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    found: dict[str, list[tuple[dict[str, str], float]]] = {}
    for line in text.splitlines():
        match = SAMPLE.match(line)
        if match and match.group(1).startswith("forgeml_"):
            labels = dict(LABEL.findall(match.group(2)))
            found.setdefault(match.group(1), []).append((labels, float(match.group(3))))
    return found


def by_label(samples: list[tuple[dict[str, str], float]], label: str) -> dict[str, float]:
    return {labels[label]: value for labels, value in samples}


def metrics_once_counted(cfg: DictConfig, predictions: int) -> dict[str, list]:
    """/metrics once the frontend has read every prediction count from the workers' output."""
    deadline = time.monotonic() + 20
    while True:
        found = metrics(cfg)
        counted = sum(value for _, value in found.get("forgeml_predictions", []))
        if counted >= predictions or time.monotonic() > deadline:
            return found
        time.sleep(0.25)


def test_every_worker_logs_its_accepted_records_in_its_own_file(monitored, traffic):
    names = [path.name for path in Path(monitored.monitor.log_dir).glob("*.jsonl")]
    pids = {int(re.fullmatch(r"worker-(\d+)(\.\d+)?\.jsonl", name).group(1)) for name in names}
    assert len(pids) >= 2
    assert pids == worker_pids(monitored)
    logged_inputs = Counter(canonical(entry["input"]) for entry in logged(monitored))
    assert logged_inputs == Counter(canonical(record) for record in traffic["accepted"])


def test_log_records_carry_the_answered_prediction_and_the_model_version(monitored, traffic):
    entries = logged(monitored)
    version = LocalServer(monitored.serve).api.default_version(MODEL)
    assert Counter((canonical(e["input"]), e["prediction"]) for e in entries) == Counter(
        (canonical(record), label) for record, label in traffic["answered"]
    )
    assert {(e["model"], e["version"]) for e in entries} == {(MODEL, version)}
    assert sorted(e["id"] for e in entries) == sorted(traffic["ids"])  # the answers' request ids
    assert all(len(e["probabilities"]) == 2 and str(e["prediction"]) in e["probabilities"] for e in entries)
    assert all(isinstance(e["latency_ms"], float) and e["latency_ms"] > 0 for e in entries)
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", e["ts"]) for e in entries)


def test_the_monitor_reads_the_log_as_one_table(monitored, traffic):
    frame = read_inference_log(Path(monitored.monitor.log_dir))
    assert frame["rejected"].value_counts().to_dict() == traffic["rejected"]
    frame = frame[frame["rejected"].isna()]
    assert len(frame) == len(traffic["accepted"])
    assert set(traffic["accepted"][0]) <= set(frame.columns)
    assert set(frame["model"]) == {MODEL}
    assert sorted(frame["prediction"]) == sorted(label for _, label in traffic["answered"])
    assert (frame[OUT_OF_RANGE_FEATURE] == OUT_OF_RANGE_VALUE).sum() == OUT_OF_RANGE_REQUESTS


def test_rejected_requests_are_logged_by_reason_without_body_and_not_counted_as_predictions(
    monitored, traffic
):
    entries = logged(monitored)
    assert not [e for e in entries if "mean texture" not in e["input"] or e["input"]["mean area"] == "huge"]
    rejections = [line for line in log_lines(monitored) if "rejected" in line]
    assert Counter(line["rejected"] for line in rejections) == traffic["rejected"]
    assert all(set(line) == {"ts", "model", "version", "latency_ms", "rejected"} for line in rejections)
    found = metrics_once_counted(monitored, len(traffic["accepted"]))
    assert sum(value for _, value in found["forgeml_predictions"]) == len(traffic["accepted"])


def test_metrics_port_counts_predictions_per_class_as_answered(monitored, traffic):
    found = metrics_once_counted(monitored, len(traffic["accepted"]))
    answered = Counter(str(label) for _, label in traffic["answered"])
    assert by_label(found["forgeml_predictions"], "Class") == dict(answered)
    version = LocalServer(monitored.serve).api.default_version(MODEL)
    assert {labels["ModelVersion"] for labels, _ in found["forgeml_predictions"]} == {version}


def test_metrics_port_counts_rejected_requests_by_reason(monitored, traffic):
    # each worker hands its counts over once a second: wait for both workers' rejections
    deadline = time.monotonic() + 20
    while True:
        rejected = by_label(metrics(monitored).get("forgeml_rejected_requests", []), "Reason")
        if rejected == traffic["rejected"] or time.monotonic() > deadline:
            break
        time.sleep(0.25)
    assert rejected == traffic["rejected"]


def test_metrics_port_counts_values_outside_the_training_range_per_feature(monitored, traffic):
    with zipfile.ZipFile(Path(monitored.serve.model_store) / f"{MODEL}.mar") as archive:
        schema = json.loads(archive.read("input_schema.json"))
    expected = Counter(
        feature["name"]
        for record in traffic["accepted"]
        for feature in schema["features"]
        if not feature["min"] <= record[feature["name"]] <= feature["max"]
    )
    found = metrics_once_counted(monitored, len(traffic["accepted"]))
    assert by_label(found["forgeml_out_of_range_values"], "Feature") == dict(expected)
    assert expected[OUT_OF_RANGE_FEATURE] >= OUT_OF_RANGE_REQUESTS


def test_log_rotates_at_the_cap_keeping_every_record(monitored, traffic):
    files = list(Path(monitored.monitor.log_dir).glob("*.jsonl"))
    assert any(path.name.endswith(".1.jsonl") for path in files)
    for path in files:
        # a file passes the cap only when it holds one batch (one ts and latency) that alone does
        batches = {(e["ts"], e["latency_ms"]) for e in map(json.loads, path.read_text().splitlines())}
        assert path.stat().st_size <= LOG_MAX_BYTES or len(batches) == 1
    generations: dict[str, list[int]] = {}
    for path in files:
        worker, *generation = path.name.removesuffix(".jsonl").split(".")
        generations.setdefault(worker, []).append(int(generation[0]) if generation else 0)
    # each worker: its current file and the rotated ones, numbered without gaps
    assert all(sorted(numbers) == list(range(len(numbers))) for numbers in generations.values())
    assert len(logged(monitored)) == len(traffic["accepted"])


def test_configure_changes_what_the_running_workers_log(monitored, traffic):
    """Rate 1 from the archive (each record its own sample: seen 1); 0 from the settings file
    `forgeml serve configure` writes, once each worker looked at it (at most a second later);
    the archive's again once it is gone. Nothing is left logged that the later tests count."""
    assert {(line["sample_rate"], line["seen"]) for line in logged(monitored)} == {(1.0, 1)}
    before = len(log_lines(monitored))
    off = OmegaConf.merge(monitored, {"monitor": {"sample_rate": 0.0}})
    settings_file = Path(serve.configure(off)["settings_file"])
    time.sleep(1.1)  # each worker looks again at its next batch
    test_rows = [line["input"] for line in logged(monitored)[:8]]
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda row: ask(monitored, {"instances": [row]}), test_rows))
    assert [status for status, _ in answers] == [200] * len(test_rows)
    assert len(log_lines(monitored)) == before
    settings_file.unlink()


def test_stopped_workers_leave_every_accepted_record_behind(monitored, traffic):
    server = LocalServer(monitored.serve)
    processes = [server.pid(), server.backend().pid(), *worker_pids(monitored)]
    assert serve.stop(monitored)["stopped"]
    for pid in processes:
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    rejected = sum(traffic["rejected"].values())
    assert len(read_inference_log(Path(monitored.monitor.log_dir))) == len(traffic["accepted"]) + rejected
