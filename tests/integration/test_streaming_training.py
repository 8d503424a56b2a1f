"""data.streaming=true end to end: prepare, train (one process and DDP), evaluate, package, predict."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from forgeml.io import read_json
from forgeml.models.artifact import ModelArtifact
from forgeml.serving.batch import predict_file
from forgeml.stages import evaluate, package, prepare, train
from tests.helpers.config import compose_config, package_config_env

ROWS = 6000


def learnable_csv(path: Path, rows: int = ROWS) -> Path:
    """A label that follows from two features (one categorical), with missing cells and noise columns."""
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({f"x{i}": rng.normal(0, 1, rows) for i in range(4)})
    frame.loc[rng.random(rows) < 0.05, "x2"] = np.nan
    frame["city"] = rng.choice(["berlin", "paris", "rome", None], rows)
    frame["bought"] = np.where(frame["x0"] + 1.5 * (frame["city"] == "rome") > 0.3, "yes", "no")
    frame.to_csv(path, index=False)
    return path


def streaming_overrides(source: Path) -> list[str]:
    return [
        "data=csv",
        f"data.path={source}",
        "data.target=bought",
        "data.streaming=true",
        "data.batch_size=64",
    ]


def test_streamed_pipeline_trains_evaluates_and_packages_a_working_model(tmp_path):
    source = learnable_csv(tmp_path / "people.csv")
    # class weights and a decision threshold work on streamed splits too
    rare = ("train.class_weights=balanced", "evaluate.threshold_for=f1")
    cfg = compose_config(tmp_path, *streaming_overrides(source), "trainer.max_epochs=4", *rare)
    summary = prepare.run(cfg)
    processed = Path(cfg.paths.processed_dir)
    # the splits are Parquet row groups, and prepare said how many rows each holds
    for split in ("train", "val", "test"):
        assert pq.ParquetFile(processed / f"{split}.parquet").metadata.num_rows == summary[f"rows/{split}"]
    metrics = train.run(cfg)
    assert metrics["val/accuracy"] > 0.85
    assert metrics["fit/samples_per_second"] > 0
    test_metrics = evaluate.run(cfg)
    assert test_metrics["test/accuracy"] > 0.85 and test_metrics["test/auroc"] > 0.9
    assert test_metrics["test/recall/yes"] > 0.8 and test_metrics["test/average_precision/yes"] > 0.9
    report = read_json(Path(cfg.paths.reports_dir) / "evaluation.json")
    assert report["rows"] == summary["rows/test"]
    assert np.sum(report["confusion_matrix"]) == summary["rows/test"]
    pairs = pd.read_csv(Path(cfg.paths.reports_dir) / "plots" / "confusion_matrix.csv")
    assert len(pairs) == summary["rows/test"]
    archive = Path(package.run(cfg)["archive"])
    with zipfile.ZipFile(archive) as mar:
        assert json.loads(mar.read("preprocessor.json")) == read_json(processed / "preprocessor.json")
        # the contract new data is held to while this version serves, from the streamed train split
        assert json.loads(mar.read("data_contract.json")) == read_json(processed / "data_contract.json")
        assert (
            json.loads(mar.read("decision_threshold.json"))["threshold"] == test_metrics["decision/threshold"]
        )
    scored = predict_file(ModelArtifact.load(cfg.paths.models_dir), source, tmp_path / "scored.csv")
    assert scored["rows"] == ROWS and scored["bad_rows"] == 0
    predictions = pd.read_csv(tmp_path / "scored.csv")
    assert (predictions["prediction"] == predictions["bought"]).mean() > 0.85


def test_streamed_ddp_training_with_workers_takes_equal_steps_on_both_ranks(tmp_path):
    """Two CPU processes, two DataLoader workers each: an unequal shard would hang DDP here."""
    source = learnable_csv(tmp_path / "people.csv", rows=5001)
    overrides = [*streaming_overrides(source), "data.num_workers=2"]
    prepare.run(compose_config(tmp_path, *overrides))
    env = package_config_env(PATH=f"{os.path.dirname(sys.executable)}:{os.environ['PATH']}")
    forgeml = os.path.join(os.path.dirname(sys.executable), "forgeml")
    command = [forgeml, "train", "trainer=ddp", "trainer.devices=2", "trainer.max_epochs=2", *overrides]
    command += ["trainer.enable_progress_bar=false", "logger=none", "--json"]
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "MEMBER: 2/2" in result.stdout + result.stderr
    assert json.loads(result.stdout[result.stdout.index("{") :])["train"]["val/accuracy"] > 0.8
