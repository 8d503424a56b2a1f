"""`forgeml monitor` end to end on the trained breast_cancer project, with a JSONL inference log
written here in the serving handler's format; the CLI's exit codes; the DVC stage's command."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import yaml
from omegaconf import DictConfig, OmegaConf

from forgeml.cli import main
from forgeml.models.artifact import ModelArtifact
from forgeml.monitoring.report import render_monitoring_html
from forgeml.stages import monitor, prepare
from tests.helpers.data import chile_like_table

PROJECT_ROOT = Path(__file__).resolve().parents[2]
SHIFTED = ["mean radius", "mean texture", "worst smoothness", "area error", "mean symmetry"]


@pytest.fixture
def project(trained_project: DictConfig, tmp_path: Path) -> DictConfig:
    """The trained project with this test's own reports, logs and inference log directories."""
    cfg = trained_project.copy()
    # evaluate's reports (metrics, reference predictions, calibration) are the monitor's inputs
    shutil.copytree(trained_project.paths.reports_dir, tmp_path / "reports")
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


def write_inference_log(cfg: DictConfig, rows: pd.DataFrame, stamps: list[str] | None = None) -> list[str]:
    """Two workers' files (one rotated), records as the serving handler writes them; their ids."""
    artifact = ModelArtifact.load(cfg.paths.models_dir)
    outputs = artifact.predict(rows)
    names = [str(label) for label in artifact.spec["labels"]]
    labels = np.asarray(names)[outputs.argmax(axis=1)]
    stamps = stamps or [datetime.now(timezone.utc).isoformat()] * len(rows)
    ids = [f"r{i}" for i in range(len(rows))]
    records = [
        {
            "ts": ts,
            "model": "breast_cancer",
            "version": "1",
            "latency_ms": 2.0,
            "id": request_id,
            "input": inputs,
            "prediction": label,
            "probabilities": dict(zip(names, probabilities, strict=True)),
        }
        for ts, request_id, inputs, label, probabilities in zip(
            stamps, ids, rows.to_dict("records"), labels.tolist(), outputs.tolist(), strict=True
        )
    ]
    log_dir = Path(cfg.monitor.log_dir)
    log_dir.mkdir(parents=True)
    for index, name in enumerate(["worker-101.1.jsonl", "worker-101.jsonl", "worker-202.jsonl"]):
        lines = [json.dumps(record) + "\n" for record in records[index::3]]
        (log_dir / name).write_text("".join(lines))
    return ids


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
    assert page.count('<div class="plot"') >= len(SHIFTED)
    assert (Path(project.paths.reports_dir) / "plotly.min.js").is_file()
    run_dir = Path(result["wandb_run"])
    assert run_dir.parent == Path(project.paths.log_dir, "wandb")
    [history] = run_dir.glob("run-*.wandb")
    for key in ("drift/share_drifted", "drift/features", "drift/verdict", "drift/plots/mean radius"):
        assert key.encode() in history.read_bytes()
    [table] = (run_dir / "files" / "media" / "table" / "drift").glob("features_*.table.json")
    logged_rows = json.loads(table.read_text())["data"]
    prediction = {"(prediction)"} if result["prediction_drifted"] else set()
    assert {row[0] for row in logged_rows if row[-1] is True} == {*SHIFTED, *prediction}
    plots = list((run_dir / "files" / "media" / "plotly" / "drift" / "plots").glob("*.plotly.json"))
    assert len(plots) >= len(SHIFTED)


def test_two_severely_shifted_features_of_seven_are_drift_through_the_stage(make_config, tmp_path):
    """The issue's case on a prepared project (no model: no prediction drift): age +25 years and
    income x3, 2 of 7 features, exit 3 by the severe rule; `monitor.severe=null`: the share rule
    alone, which calls it no drift."""
    rng = np.random.default_rng(20)
    table = chile_like_table(rng, 2700).assign(vote=rng.choice(["Y", "N"], 2700))
    table.to_csv(tmp_path / "chile.csv", index=False)
    traffic = chile_like_table(rng, 500)
    traffic.assign(age=traffic["age"] + 25, income=traffic["income"] * 3).to_parquet(
        tmp_path / "traffic.parquet"
    )
    overrides = ["data=csv", f"data.path={tmp_path / 'chile.csv'}", "data.target=vote", "monitor.wandb=false"]
    prepare.run(make_config(*overrides))
    cfg = make_config(*overrides, f"monitor.current={tmp_path / 'traffic.parquet'}")
    result = monitor.run(cfg)
    assert result["exit_code"] == 3 and result["rule"] == "severe"
    assert sorted(result["drifted_features"]) == sorted(result["severe_features"]) == ["age", "income"]
    assert "age, income severely shifted (PSI " in result["message"]
    report = json.loads(Path(result["report"]).read_text())
    assert report["rule"] == "severe" and report["severe_thresholds"] == {"psi": 1.0, "wasserstein": 1.0}
    assert all(effects["psi"] > 1.0 for effects in report["severe_features"].values())
    share_only = monitor.run(
        make_config(*overrides, f"monitor.current={tmp_path / 'traffic.parquet'}", "monitor.severe=null")
    )
    assert share_only["exit_code"] == 0 and share_only["rule"] is None


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


def labelled_traffic(cfg: DictConfig) -> tuple[pd.DataFrame, np.ndarray]:
    """Every prepared row without its target, and the target as text."""
    processed = Path(cfg.paths.processed_dir)
    rows = pd.concat([pd.read_parquet(processed / f"{split}.parquet") for split in ("train", "val", "test")])
    rows = rows.reset_index(drop=True)
    return rows.drop(columns=cfg.data.target), rows[cfg.data.target].astype(str).to_numpy()


def three_days(rows: int) -> list[str]:
    """Stamps spread over the last three days, oldest first, one window (day) each third."""
    now = datetime.now(timezone.utc)
    return [(now - pd.Timedelta(hours=70 - 69 * i / rows)).isoformat() for i in range(rows)]


def test_labels_join_by_id_and_each_window_measures_as_a_direct_computation(project, tmp_path):
    from sklearn.metrics import accuracy_score, f1_score

    rows, actual = labelled_traffic(project)
    stamps = three_days(len(rows))
    ids = write_inference_log(project, rows, stamps)
    labelled = np.arange(len(rows)) % 5 != 0  # a fifth of the labels has not arrived yet
    pd.DataFrame({"id": np.asarray(ids)[labelled], "label": actual[labelled]}).to_csv(
        tmp_path / "labels.csv", index=False
    )
    project.monitor.labels = str(tmp_path / "labels.csv")
    project.monitor.window_duration = "1d"
    project.monitor.windows = 3
    project.monitor.min_samples = 50
    project.monitor.max_metric_drop = 0.5
    result = monitor.run(project)
    assert result["windows"] == 3 and result["exit_code"] == 0
    report = json.loads((Path(project.paths.reports_dir) / "monitoring.json").read_text())
    log = pd.read_json(Path(project.monitor.log_dir) / "worker-202.jsonl", lines=True)
    assert len(log) and len(report["windows"]) == 3
    predicted = ModelArtifact.load(project.paths.models_dir).predict(rows).argmax(axis=1)
    names = np.asarray([str(label) for label in ModelArtifact.load(project.paths.models_dir).spec["labels"]])
    ts = pd.to_datetime(pd.Series(stamps), utc=True, format="ISO8601")
    evaluation = json.loads((Path(project.paths.reports_dir) / "metrics.json").read_text())
    for window in report["windows"]:
        start, end = pd.Timestamp(window["window"]["start"]), pd.Timestamp(window["window"]["end"])
        inside = ((ts >= start) & (ts < end)).to_numpy()
        chosen = inside & labelled
        assert window["rows"]["current"] == inside.sum() > 100
        measured = window["measured"]
        assert measured["labelled_rows"] == chosen.sum()
        expected_accuracy = accuracy_score(actual[chosen], names[predicted[chosen]])
        assert measured["metrics"]["accuracy"] == pytest.approx(expected_accuracy)
        assert measured["metrics"]["f1_macro"] == pytest.approx(
            f1_score(actual[chosen], names[predicted[chosen]], average="macro")
        )
        assert measured["drops"]["accuracy"] == pytest.approx(evaluation["test/accuracy"] - expected_accuracy)
        estimated = window["estimated"]
        low, high = estimated["accuracy_band"]
        assert low <= estimated["accuracy"] <= high and 0.8 < estimated["accuracy"] <= 1.0
    table = pd.read_csv(Path(project.paths.reports_dir) / "monitoring" / "windows.csv")
    assert table["rows"].tolist() == [w["rows"]["current"] for w in report["windows"]]
    # the page is drawn in a forked process: it is the page of the report beside it
    page = (Path(project.paths.reports_dir) / "monitoring.html").read_text()
    assert page == render_monitoring_html(report)
    assert table["measured_accuracy"].tolist() == pytest.approx(
        [w["measured"]["metrics"]["accuracy"] for w in report["windows"]]
    )
    features = pd.read_csv(Path(project.paths.reports_dir) / "monitoring" / "feature_drift.csv")
    assert len(features) == 3 * 30


def test_a_measured_drop_beyond_max_metric_drop_is_a_retrain_verdict_without_drift(project, tmp_path):
    rows, actual = labelled_traffic(project)
    ids = write_inference_log(project, rows)
    names = sorted(set(actual))
    wrong = np.where(
        np.arange(len(rows)) % 4 == 0, [names[1] if a == names[0] else names[0] for a in actual], actual
    )
    pd.DataFrame({"id": ids, "label": wrong}).to_parquet(tmp_path / "labels.parquet")
    project.monitor.labels = str(tmp_path / "labels.parquet")
    project.monitor.max_metric_drop = 0.1
    result = monitor.run(project)
    assert result["exit_code"] == 3 and result["verdict"] == "decay"
    assert result["drifted_features"] == [] and result["prediction_drifted"] is False
    assert "measured accuracy" in result["message"] and "monitor.max_metric_drop=0.1" in result["message"]
    project.monitor.max_metric_drop = None
    assert monitor.run(project)["exit_code"] == 0


def test_monitor_process_imports_no_torch(project, tmp_path):
    """The reference predictions and the calibration come from `evaluate`: no model is loaded."""
    write_inference_log(project, traffic(project, SHIFTED))
    params = tmp_path / "params.yaml"
    params.write_text(OmegaConf.to_yaml(project, resolve=True))
    code = (
        "import sys; from forgeml import cli; code = cli.main(['monitor', '--params', sys.argv[1]]);"
        "heavy = [m for m in ('torch', 'pytorch_lightning', 'dvc', 'wandb') if m in sys.modules];"
        "print('EXIT', code, 'HEAVY', heavy)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, str(params)], cwd=tmp_path, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert "EXIT 3 HEAVY []" in result.stdout
    report = json.loads((Path(project.paths.reports_dir) / "drift.json").read_text())
    assert report["prediction"]["test"] == "chi2" and report["estimated"]["accuracy"] > 0


def test_reference_files_of_another_model_are_not_used(project):
    """A retrained model without a new `evaluate`: no stale estimate, no stale prediction drift."""
    write_inference_log(project, traffic(project))
    reports = Path(project.paths.reports_dir)
    calibration = json.loads((reports / "calibration.json").read_text())
    (reports / "calibration.json").write_text(json.dumps({**calibration, "model_hash": "another"}))
    predictions = pq.read_table(reports / "reference_predictions.parquet")
    pq.write_table(
        predictions.replace_schema_metadata({"model_hash": "another"}),
        reports / "reference_predictions.parquet",
    )
    result = monitor.run(project)
    assert result["estimated_accuracy"] is None and result["prediction_drifted"] is None
    assert result["exit_code"] == 0 and result["rows"] == 569
