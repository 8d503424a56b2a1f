"""Real training on CPU: each dataset reaches a sane score; seeds, resume, DDP and wandb work."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from forgeml.io import read_json
from forgeml.stages import evaluate, prepare, train
from tests.helpers.config import compose_config

SANE_SCORES = {
    "breast_cancer": ("test/accuracy", 0.9),
    "wine": ("test/accuracy", 0.85),
    "digits": ("test/accuracy", 0.8),
    "diabetes": ("test/r2", 0.2),
}


def pipeline(cfg) -> dict:
    prepare.run(cfg)
    train.run(cfg)
    return evaluate.run(cfg)


@pytest.mark.parametrize("dataset", list(SANE_SCORES))
def test_bundled_dataset_trains_to_a_sane_score(make_config, dataset):
    cfg = make_config(f"experiment={dataset}", "trainer.max_epochs=2")
    metrics = pipeline(cfg)
    metric, floor = SANE_SCORES[dataset]
    assert metrics[metric] >= floor, metrics
    reports = cfg.paths.reports_dir
    assert read_json(f"{reports}/metrics.json") == metrics
    figure = "confusion_matrix.png" if dataset != "diabetes" else "predicted_vs_actual.png"
    assert os.path.getsize(f"{reports}/figures/{figure}") > 1000


def test_exported_model_keeps_the_config_and_a_dynamic_batch(trained_project):
    models = trained_project.paths.models_dir
    manifest = read_json(f"{models}/model.json")
    assert manifest["config"]["data"]["name"] == "breast_cancer"
    assert len(manifest["config_hash"]) == 16
    program = torch.export.load(f"{models}/model.pt2").module()
    for batch in (1, 7, 300):
        probabilities = program(torch.zeros(batch, manifest["input_dim"]))
        assert probabilities.shape == (batch, 2)
        assert torch.allclose(probabilities.sum(-1), torch.ones(batch))


def test_evaluate_rebuilds_from_the_artifact_not_from_todays_config(trained_project, make_config, tmp_path):
    """Changing the model config after training does not change what evaluate measures."""
    before = read_json(f"{trained_project.paths.reports_dir}/metrics.json")
    today = make_config("model.hidden=[7]", "model.activation=tanh")
    today.paths = trained_project.paths
    today.paths.reports_dir = str(tmp_path / "reports")  # the shared project is only read
    assert evaluate.run(today) == before


def test_plots_hold_the_data_dvc_plots_reads(trained_project):
    plots = f"{trained_project.paths.reports_dir}/plots"
    pairs = pd.read_csv(f"{plots}/confusion_matrix.csv")
    assert list(pairs.columns) == ["actual", "predicted"]
    assert set(pairs["actual"]) == {"malignant", "benign"}
    roc = pd.read_csv(f"{plots}/roc.csv")
    assert roc["fpr"].is_monotonic_increasing and roc["tpr"].iloc[-1] == 1.0


def test_csv_with_categorical_and_missing_values_trains(make_config, tmp_path):
    rng = np.random.default_rng(0)
    rows = 400
    city = rng.choice(["Oslo", "Rome", "Lima"], size=rows)
    age = rng.normal(40, 10, size=rows)
    label = np.where((city == "Rome") | (age > 45), "yes", "no")
    frame = pd.DataFrame({"age": age.round(1), "city": city, "id": range(rows), "label": label})
    frame.loc[rng.choice(rows, 30, replace=False), "age"] = np.nan
    frame.loc[rng.choice(rows, 30, replace=False), "city"] = None
    path = tmp_path / "people.csv"
    frame.to_csv(path, index=False)
    cfg = make_config(
        "data=csv",
        f"data.path={path}",
        "data.target=label",
        "data.drop=[id]",
        "data.features={city:categorical}",
        "trainer.max_epochs=15",
        "optimizer.lr=0.01",
    )
    metrics = pipeline(cfg)
    assert metrics["test/accuracy"] >= 0.75, metrics
    spec = read_json(f"{cfg.paths.processed_dir}/preprocessor.json")
    assert [f["name"] for f in spec["features"]] == ["age", "city"]
    assert spec["features"][1]["categories"] == ["Lima", "Oslo", "Rome", "__missing__"]
    train_rows = pd.read_parquet(f"{cfg.paths.processed_dir}/train.parquet")
    assert spec["features"][0]["fill"] == pytest.approx(train_rows["age"].median())


def test_same_seed_gives_identical_metrics(tmp_path):
    runs = [pipeline(compose_config(tmp_path / name, "trainer.max_epochs=3", "seed=0")) for name in "ab"]
    assert runs[0] == runs[1]
    other = pipeline(compose_config(tmp_path / "c", "trainer.max_epochs=3", "seed=1"))
    assert other != runs[0]


def test_resume_from_checkpoint_trains_only_the_remaining_epochs(make_config):
    cfg = make_config("trainer.max_epochs=2", "logger=csv", "callbacks.early_stopping=null")
    prepare.run(cfg)
    train.run(cfg)
    last = Path(cfg.paths.models_dir) / "checkpoints" / "last.ckpt"
    steps_after_two_epochs = torch.load(last, weights_only=True)["global_step"]
    resumed = make_config(
        "trainer.max_epochs=3", "logger=csv", f"ckpt_path={last}", "callbacks.early_stopping=null"
    )
    train.run(resumed)
    assert torch.load(last, weights_only=True)["global_step"] == steps_after_two_epochs * 3 // 2
    logs = sorted(Path(cfg.paths.log_dir).glob("train/csv/version_*/metrics.csv"))
    validated_epochs = pd.read_csv(logs[-1]).dropna(subset=["val/loss"])["epoch"].tolist()
    assert validated_epochs == [2]


def test_ddp_on_cpu_runs_two_processes_into_one_output_dir(tmp_path):
    env = {
        **os.environ,
        "PATH": f"{os.path.dirname(sys.executable)}:{os.environ['PATH']}",
    }
    common = ["trainer.enable_progress_bar=false", "logger=csv", "--json"]
    forgeml = [os.path.join(os.path.dirname(sys.executable), "forgeml")]
    prepare.run(compose_config(tmp_path))
    result = subprocess.run(
        [*forgeml, "train", "--json", "trainer=ddp", "trainer.devices=2", "trainer.max_epochs=2", *common],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    output = result.stdout + result.stderr
    assert "MEMBER: 1/2" in output and "MEMBER: 2/2" in output
    assert "gloo" in output
    assert len(list((tmp_path / "logs" / "runs").iterdir())) == 1
    manifest = read_json(tmp_path / "models" / "model.json")
    assert manifest["config"]["trainer"]["strategy"] == "ddp"
    assert json.loads(result.stdout[result.stdout.index("{") :])["train"]["val/accuracy"] > 0.5


def run_record(path: Path, keys: tuple[bytes, ...] = (b"val/loss", b"train/loss"), wait_s: int = 60) -> bytes:
    """The run log's bytes once they hold `keys`, or as they are after `wait_s`."""
    deadline = time.monotonic() + wait_s
    while not all(key in path.read_bytes() for key in keys) and time.monotonic() < deadline:
        time.sleep(0.5)
    return path.read_bytes()


def test_wandb_logger_writes_an_offline_run_with_the_metrics(make_config, monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    cfg = make_config("logger=wandb", "trainer.max_epochs=2")
    prepare.run(cfg)
    metrics = train.run(cfg)
    runs = list((Path(cfg.paths.log_dir) / "train" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    # the run log is protobuf records holding each key and its value as JSON text, written by
    # wandb's own service process: on a loaded machine it may still be writing when finish returns
    record = run_record(next(runs[0].glob("run-*.wandb")))
    assert b"val/loss" in record and b"train/loss" in record
    assert json.dumps(metrics["val/loss"]).encode() in record


def test_optuna_sweep_runs_trials_each_with_its_own_model(tmp_path):
    prepare.run(compose_config(tmp_path))
    env = dict(os.environ)  # run in tmp_path: forgeml's shipped config
    forgeml = os.path.join(os.path.dirname(sys.executable), "forgeml")
    command = [
        forgeml,
        "train",
        "hparams_search=optuna",
        "hydra.sweeper.n_trials=2",
        "trainer.max_epochs=1",
        "trainer.enable_progress_bar=false",
        "logger=none",
    ]
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Best value" in result.stdout + result.stderr
    jobs = sorted((tmp_path / "logs" / "multiruns").glob("*/[0-9]*"))
    assert len(jobs) == 2
    assert all((job / "models" / "model.pt2").is_file() for job in jobs)
    assert not (tmp_path / "models").exists()
