"""`forgeml replay VERSION` on the shared trained project, without a server: an inference log
written from real rows as production (version 1) answered them, replayed through version 1
itself (it agrees with itself) and through a candidate trained with one class's labels swapped on
a segment of the inputs (refused on agreement, on its estimate and on the delayed labels)."""

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

from forgeml.io import read_json
from forgeml.layout import (
    MANIFEST,
    REPLAY_PAGE,
    REPLAY_REPORT,
    SPLITS,
    rollout_reports,
    split_file,
)
from forgeml.models.artifact import ModelArtifact
from forgeml.serving.registry import Registry
from forgeml.stages import package, replay, train

# the feature whose upper half the swapped candidate was trained with wrong labels on
SEGMENT = "mean radius"


@pytest.fixture
def project(trained_project: DictConfig, tmp_path: Path) -> DictConfig:
    """The trained project with this test's own reports, model store and inference log."""
    cfg = trained_project.copy()
    shutil.copytree(trained_project.paths.reports_dir, tmp_path / "reports")
    cfg.paths.reports_dir = str(tmp_path / "reports")
    cfg.paths.log_dir = str(tmp_path / "logs")
    cfg.serve.model_store = str(tmp_path / "model-store")
    cfg.monitor.log_dir = str(tmp_path / "inference-log")
    return cfg


def packaged(cfg: DictConfig, version: str) -> None:
    cfg.serve.version = version
    package.run(cfg)


def swapped_candidate(cfg: DictConfig, tmp_path: Path) -> DictConfig:
    """The project trained again where, above the median of SEGMENT, the second class's labels
    read as the first's (in the train and validation splits), and packaged as version 2."""
    candidate = cfg.copy()
    for key in ("processed_dir", "models_dir", "reports_dir", "log_dir"):
        candidate.paths[key] = str(tmp_path / f"swapped-{key}")
    shutil.copytree(cfg.paths.processed_dir, candidate.paths.processed_dir)
    first, second = read_json(Path(cfg.paths.models_dir) / MANIFEST)["labels"]
    for split in ("train", "val"):
        path = split_file(candidate.paths.processed_dir, split)
        frame = pd.read_parquet(path)
        swapped = (frame[SEGMENT] > frame[SEGMENT].median()) & (frame[cfg.data.target] == second)
        frame.loc[swapped, cfg.data.target] = first
        frame.to_parquet(path)
    train.run(candidate)
    packaged(candidate, "2")
    return candidate


def production_traffic(cfg: DictConfig) -> pd.DataFrame:
    """Every prepared row, answered by version 1 and logged as its handler logs it; the rows'
    targets come back as the delayed labels."""
    processed = cfg.paths.processed_dir
    rows = pd.concat([pd.read_parquet(split_file(processed, split)) for split in SPLITS], ignore_index=True)
    artifact = ModelArtifact.load(cfg.paths.models_dir)
    outputs = artifact.predict(rows)
    names = [str(label) for label in artifact.spec["labels"]]
    stamp = datetime.now(timezone.utc).isoformat()
    features = rows.drop(columns=cfg.data.target).to_dict("records")
    lines = [
        json.dumps(
            {
                "ts": stamp,
                "model": cfg.serve.model_name,
                "version": "1",
                "latency_ms": 1.0,
                "id": f"r{index}",
                "input": inputs,
                "prediction": names[int(np.argmax(scores))],
                "probabilities": dict(zip(names, scores, strict=True)),
            }
        )
        for index, (inputs, scores) in enumerate(zip(features, outputs.tolist(), strict=True))
    ]
    log_dir = Path(cfg.monitor.log_dir)
    log_dir.mkdir(parents=True)
    (log_dir / "worker-1.jsonl").write_text("\n".join(lines) + "\n")
    labels = pd.DataFrame(
        {"id": [f"r{i}" for i in range(len(rows))], "label": rows[cfg.data.target].astype(str)}
    )
    labels.to_csv(Path(cfg.paths.reports_dir) / "labels.csv", index=False)
    return rows


def test_replay_passes_production_itself_and_refuses_a_candidate_trained_on_swapped_labels(project, tmp_path):
    rows = production_traffic(project)
    project.monitor.labels = str(Path(project.paths.reports_dir) / "labels.csv")
    packaged(project, "1")
    swapped_candidate(project, tmp_path)

    project.candidate = "1"
    itself = replay.run(project)
    assert (itself["verdict"], itself["exit_code"]) == ("passed", 0)
    assert itself["requests"] == len(rows) and itself["agreement"] == 1.0
    assert itself["estimated_accuracy_drop"] == pytest.approx(0.0, abs=1e-9)
    report = json.loads((rollout_reports(project.paths.reports_dir, "1") / REPLAY_REPORT).read_text())
    window = report["windows"][0]
    assert window["measured"]["production"] == window["measured"]["candidate"]
    assert window["measured"]["labelled_rows"] == len(rows)
    assert report["calibration"] == {"production": "isotonic", "candidate": "isotonic"}

    paths = [f"paths.{key}={value}" for key, value in project.paths.items() if key != "root_dir"]
    settings = [
        f"serve.model_store={project.serve.model_store}",
        f"monitor.log_dir={project.monitor.log_dir}",
    ]
    command = [
        sys.executable,
        "-m",
        "forgeml.cli",
        "replay",
        "2",
        *paths,
        *settings,
        f"monitor.labels={project.monitor.labels}",
    ]
    refused = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, env=dict(os.environ))
    assert refused.returncode == 3, refused.stderr
    directory = rollout_reports(project.paths.reports_dir, "2")
    report = json.loads((directory / REPLAY_REPORT).read_text())
    window = report["windows"][0]
    # production's answers of the second class flipped to the first, not the other way round
    first, second = read_json(Path(project.paths.models_dir) / MANIFEST)["labels"]
    assert set(window["flips"][first]) == {first} and window["flips"][second][first] > 0
    assert window["agreement"] < project.serve.rollout.min_agreement
    # no evaluation of the candidate: its CBPE takes its probabilities as they are
    assert window["estimated"]["candidate"]["calibrated"] is False
    assert window["measured"]["candidate"]["accuracy"] < window["measured"]["production"]["accuracy"]
    # the delayed labels judge alone once they suffice: they show it worse
    assert [reason for reason in window["refusals"] if "gate.max_regression" not in reason] == []
    assert window["refusals"]
    assert report["calibration"] == {"production": "isotonic", "candidate": "none"}
    page = (directory / REPLAY_PAGE).read_text()
    assert "refused" in page and "production \\ candidate" in page

    events = [
        (e["version"], e["action"], e["verdict"])
        for e in Registry(project.serve.model_store).events("breast_cancer")
    ]
    assert events == [("1", "replay", "passed"), ("2", "replay", "refused")]
