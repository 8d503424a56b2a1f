"""`forgeml monitor` end to end on the trained breast_cancer project, with a JSONL inference log
written here in the serving handler's format; the CLI's exit codes; the DVC stage's command."""

from __future__ import annotations

import json
import subprocess
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from omegaconf import DictConfig, OmegaConf

from forgeml.cli import main
from forgeml.models.artifact import ModelArtifact
from forgeml.stages import monitor

PROJECT_ROOT = Path(__file__).resolve().parents[2]
SHIFTED = ["mean radius", "mean texture", "worst smoothness", "area error", "mean symmetry"]


@pytest.fixture
def project(trained_project: DictConfig, tmp_path: Path) -> DictConfig:
    """The trained project with this test's own reports, logs and inference log directories."""
    cfg = trained_project.copy()
    cfg.paths.reports_dir = str(tmp_path / "reports")
    cfg.paths.log_dir = str(tmp_path / "logs")
    cfg.monitor.log_dir = str(tmp_path / "inference-log")
    cfg.monitor.wandb = False
    return cfg


def traffic(cfg: DictConfig, shifted: list[str] = ()) -> pd.DataFrame:
    """Every prepared row (train, val and test: in distribution), `shifted` moved by 3 std."""
    processed = Path(cfg.paths.processed_dir)
    rows = pd.concat([pd.read_parquet(processed / f"{split}.parquet") for split in ("train", "val", "test")])
    rows = rows.drop(columns=cfg.data.target).reset_index(drop=True)
    for name in shifted:
        rows[name] = rows[name] + 3 * rows[name].std()
    return rows


def write_inference_log(cfg: DictConfig, rows: pd.DataFrame) -> None:
    """Two workers' files (one rotated), records as the serving handler writes them."""
    artifact = ModelArtifact.load(cfg.paths.models_dir)
    labels = np.asarray(artifact.spec["labels"])[artifact.predict(rows).argmax(axis=1)]
    now = datetime.now(timezone.utc).isoformat()
    records = [
        {
            "ts": now,
            "model": "breast_cancer",
            "version": "1",
            "latency_ms": 2.0,
            "input": inputs,
            "prediction": label,
        }
        for inputs, label in zip(rows.to_dict("records"), labels.tolist(), strict=True)
    ]
    log_dir = Path(cfg.monitor.log_dir)
    log_dir.mkdir(parents=True)
    for index, name in enumerate(["worker-101.1.jsonl", "worker-101.jsonl", "worker-202.jsonl"]):
        lines = [json.dumps(record) + "\n" for record in records[index::3]]
        (log_dir / name).write_text("".join(lines))


def test_in_distribution_traffic_is_no_drift(project):
    write_inference_log(project, traffic(project))
    result = monitor.run(project)
    assert result["exit_code"] == 0 and result["verdict"] == "no_drift"
    assert result["rows"] == 569 and result["prediction_drifted"] is False
    report = json.loads((Path(project.paths.reports_dir) / "drift.json").read_text())
    assert report["tested_features"] == 30 and report["share_drifted"] < 0.5
    assert {entry["test"] for entry in report["features"].values()} == {"ks"}


def test_shifted_traffic_is_drift_on_exactly_the_shifted_features_and_logged_to_wandb(project):
    write_inference_log(project, traffic(project, SHIFTED))
    project.monitor.share_threshold = 0.15
    project.monitor.wandb = True
    result = monitor.run(project)
    assert result["exit_code"] == 3 and result["verdict"] == "drift"
    assert sorted(result["drifted_features"]) == sorted(SHIFTED)
    assert "Retraining recommended" in result["message"]
    page = (Path(project.paths.reports_dir) / "drift.html").read_text()
    assert '<table class="drift">' in page and page.count('<tr class="drifted">') >= len(SHIFTED)
    assert all(f"<figcaption>{name}</figcaption>" in page for name in SHIFTED)
    assert page.count("data:image/png;base64,") >= len(SHIFTED)
    run_dir = Path(result["wandb_run"])
    assert run_dir.parent == Path(project.paths.log_dir, "wandb")
    [history] = run_dir.glob("run-*.wandb")
    for key in ("drift/share_drifted", "drift/features", "drift/verdict", "drift/plots/mean radius"):
        assert key.encode() in history.read_bytes()
    [table] = (run_dir / "files" / "media" / "table" / "drift").glob("features_*.table.json")
    logged_rows = json.loads(table.read_text())["data"]
    prediction = {"(prediction)"} if result["prediction_drifted"] else set()
    assert {row[0] for row in logged_rows if row[-1] is True} == {*SHIFTED, *prediction}
    plots = list((run_dir / "files" / "media" / "images" / "drift" / "plots").glob("*.png"))
    assert len(plots) >= len(SHIFTED)


def test_no_inference_log_yet_gives_a_no_data_report_and_exit_4(project):
    result = monitor.run(project)
    assert result["exit_code"] == 4 and result["verdict"] == "insufficient_data"
    report = json.loads((Path(project.paths.reports_dir) / "drift.json").read_text())
    assert report["rows"]["current"] == 0 and "no inference records" in report["message"]
    assert "insufficient data" in (Path(project.paths.reports_dir) / "drift.html").read_text()


def test_cli_exits_with_the_verdict_and_the_dvc_stage_accepts_it(project, tmp_path, monkeypatch):
    traffic(project, SHIFTED).to_csv(tmp_path / "shifted.csv", index=False)
    monkeypatch.chdir(tmp_path)  # outside the repository: forgeml's shipped config
    overrides = [f"paths.{key}={value}" for key, value in project.paths.items() if key != "root_dir"]
    shifted_run = [
        "monitor",
        *overrides,
        f"monitor.current={tmp_path / 'shifted.csv'}",
        "monitor.wandb=false",
    ]
    assert main(shifted_run) == 3
    params = tmp_path / "params.yaml"
    params.write_text(OmegaConf.to_yaml(project, resolve=True))
    assert main(["monitor", "--params", str(params)]) == 4
    command = yaml.safe_load((PROJECT_ROOT / "dvc.yaml").read_text())["stages"]["monitor"]["cmd"]
    dvc_stage = subprocess.run(command, shell=True, cwd=tmp_path, capture_output=True, text=True)
    assert dvc_stage.returncode == 0, dvc_stage.stderr
    assert json.loads((Path(project.paths.reports_dir) / "drift.json").read_text())["exit_code"] == 4
