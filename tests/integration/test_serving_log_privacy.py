"""The inference log's privacy and integrity on a real TorchServe.

A small model of people (age, city, nickname) is trained once and served with every request
logged, `nickname` redacted and `city` hashed (monitor.redact / monitor.hash). Tests run in
file order: what the log holds -> drift over the hashed column -> the log directory deleted
mid-traffic.
"""

from __future__ import annotations

import json
import shutil
import stat
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from omegaconf import DictConfig

from forgeml.data.transform import keyed_hashes
from forgeml.monitoring.privacy import KEY_FILE
from forgeml.stages import evaluate, monitor, prepare, train
from tests.helpers.config import compose_config
from tests.helpers.serving import ask, logged, packaged_and_served, serving_config

pytestmark = pytest.mark.slow

MODEL = "people"
CITIES = ["Oslo", "Rome", "Lima"]


def people(rows: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    city = rng.choice(CITIES, size=rows)
    age = rng.normal(40, 10, size=rows).round(1)
    label = np.where((city == "Rome") | (age > 45), "yes", "no")
    nickname = [f"nick-{i}" for i in rng.integers(0, 40, size=rows)]
    return pd.DataFrame({"age": age, "city": city, "nickname": nickname, "label": label})


@pytest.fixture(scope="module")
def private(tmp_path_factory) -> DictConfig:
    """The people model served: every request logged, nickname redacted, city hashed."""
    workdir = tmp_path_factory.mktemp("private")
    people(400, seed=0).to_csv(workdir / "people.csv", index=False)
    cfg = compose_config(
        workdir,
        "data=csv",
        f"data.path={workdir / 'people.csv'}",
        "data.target=label",
        "data.features={city:categorical,nickname:categorical}",
        f"serve.model_name={MODEL}",
        "trainer.max_epochs=2",
        "monitor.sample_rate=1.0",
        "monitor.redact=[nickname]",
        "monitor.hash=[city]",
        "monitor.min_samples=50",
        "monitor.wandb=false",
    )
    prepare.run(cfg)
    train.run(cfg)
    evaluate.run(cfg)  # the promotion gate deploys evaluated models only
    cfg = serving_config(cfg, workdir, batch_size=4, max_batch_delay=20)
    with packaged_and_served(cfg):
        yield cfg


def send(cfg: DictConfig, rows: pd.DataFrame, per_request: int = 3) -> list[tuple[int, Any]]:
    records = json.loads(rows.drop(columns=["label"]).to_json(orient="records"))
    bodies = [{"instances": records[i : i + per_request]} for i in range(0, len(records), per_request)]
    with ThreadPoolExecutor(4) as pool:
        return list(pool.map(lambda body: ask(cfg, body, model=MODEL), bodies))


def test_log_never_holds_redacted_values_and_hashed_ones_only_keyed(private):
    rows = people(60, seed=1)
    assert [status for status, _ in send(private, rows)] == [200] * 20
    key_file = Path(private.serve.runtime_dir) / KEY_FILE
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    text = "".join(path.read_text() for path in Path(private.monitor.log_dir).glob("*.jsonl"))
    assert "nick-" not in text and not any(city in text for city in CITIES)
    inputs = [entry["input"] for entry in logged(private)]
    assert all(set(record) == {"age", "city"} for record in inputs)
    assert sorted(record["city"] for record in inputs) == sorted(
        keyed_hashes(key_file.read_bytes(), rows["city"])
    )


def test_drift_compares_the_hashed_column_as_categories(private):
    train_rows = pd.read_parquet(Path(private.paths.processed_dir) / "train.parquet").head(120)
    assert {status for status, _ in send(private, train_rows)} == {200}
    result = monitor.run(private)
    report = json.loads(Path(result["report"]).read_text())
    city = report["features"]["city"]
    assert city["type"] == "categorical" and city["drifted"] is False, city
    assert "nickname" not in report["features"]  # redacted: nothing to test


def test_log_directory_deleted_mid_traffic_is_recreated_losing_nothing_answered(private):
    log_dir = Path(private.monitor.log_dir)
    rows = people(240, seed=2).assign(age=lambda frame: 100 + np.arange(len(frame)))  # each age marks a row
    deleted = threading.Event()
    sent_after: list[float] = []

    def ask_one(index: int) -> int:
        if index == 40:
            shutil.rmtree(log_dir, ignore_errors=True)  # ignore: a worker may be recreating it
            deleted.set()
        if deleted.is_set():
            sent_after.append(float(rows["age"].iloc[index]))
        record = json.loads(rows.iloc[[index]].drop(columns=["label"]).to_json(orient="records"))
        return ask(private, {"instances": record}, model=MODEL)[0]

    with ThreadPoolExecutor(4) as pool:
        statuses = list(pool.map(ask_one, range(len(rows))))
    assert statuses == [200] * len(rows)
    logged_ages = [entry["input"]["age"] for entry in logged(private)]
    assert len(logged_ages) == len(set(logged_ages))
    assert set(sent_after) <= set(logged_ages), "a record sent after the deletion is missing"
    assert len(sent_after) > 150
