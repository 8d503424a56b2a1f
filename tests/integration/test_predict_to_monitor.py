"""`forgeml predict`'s output is current data that `forgeml monitor` estimates from, as it does
from the inference log: one naming of the per-class probability columns (contract.py)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from omegaconf import DictConfig

from forgeml.contract import probability_column
from forgeml.layout import SPLITS, split_file
from forgeml.models.artifact import ModelArtifact
from forgeml.stages import monitor


def monitored(trained_project: DictConfig, tmp_path: Path, current: Path | None) -> DictConfig:
    """The trained project with this test's own reports and inference log, reading `current`
    (None: the inference log)."""
    cfg = trained_project.copy()
    shutil.copytree(trained_project.paths.reports_dir, tmp_path / "reports", dirs_exist_ok=True)
    cfg.paths.reports_dir = str(tmp_path / "reports")
    cfg.paths.log_dir = str(tmp_path / "logs")
    cfg.monitor.log_dir = str(tmp_path / "inference-log")
    cfg.monitor.current = str(current) if current else None
    cfg.monitor.wandb = False
    return cfg


def write_log(log_dir: Path, rows: pd.DataFrame, artifact: ModelArtifact) -> None:
    """The rows as one worker's inference log, in the serving handler's line format
    (monitoring/logs.py): inputs, the predicted label and the class probabilities."""
    outputs = artifact.predict(rows)
    names = [str(label) for label in artifact.spec["labels"]]
    stamp = datetime.now(timezone.utc).isoformat()
    lines = [
        json.dumps(
            {
                "ts": stamp,
                "model": "breast_cancer",
                "version": "1",
                "latency_ms": 1.0,
                "id": f"r{index}",
                "input": inputs,
                "prediction": names[int(np.argmax(scores))],
                "probabilities": dict(zip(names, scores, strict=True)),
            }
        )
        for index, (inputs, scores) in enumerate(zip(rows.to_dict("records"), outputs.tolist(), strict=True))
    ]
    log_dir.mkdir(parents=True)
    (log_dir / "worker-1.jsonl").write_text("\n".join(lines) + "\n")


def test_predict_output_gives_monitor_the_same_estimate_as_the_inference_log(trained_project, tmp_path):
    processed = trained_project.paths.processed_dir
    rows = pd.concat([pd.read_parquet(split_file(processed, split)) for split in SPLITS], ignore_index=True)
    rows = rows.drop(columns=trained_project.data.target)
    rows.to_csv(tmp_path / "new_rows.csv", index=False)
    scored = tmp_path / "scored.parquet"
    paths = [f"paths.{key}={value}" for key, value in trained_project.paths.items() if key != "root_dir"]
    files = [f"input={tmp_path / 'new_rows.csv'}", f"output={scored}"]
    predict = subprocess.run(
        [sys.executable, "-m", "forgeml.cli", "predict", *paths, *files],
        cwd=tmp_path,  # outside the repository: forgeml's shipped config
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONWARNINGS": "default"},
    )
    assert predict.returncode == 0, predict.stderr
    assert "Warning" not in predict.stderr and "Traceback" not in predict.stderr, predict.stderr
    labels = ModelArtifact.load(trained_project.paths.models_dir).spec["labels"]
    assert {probability_column(label) for label in labels} <= set(pd.read_parquet(scored).columns)

    from_predict = monitor.run(monitored(trained_project, tmp_path / "predict", scored))
    log_project = monitored(trained_project, tmp_path / "log", None)
    write_log(Path(log_project.monitor.log_dir), rows, ModelArtifact.load(trained_project.paths.models_dir))
    from_log = monitor.run(log_project)

    assert from_log["rows"] == from_predict["rows"] == len(rows)
    assert from_log["estimated_accuracy"] is not None
    assert from_predict["estimated_accuracy"] == pytest.approx(from_log["estimated_accuracy"], rel=1e-9)
