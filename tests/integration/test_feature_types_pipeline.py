"""Datetime and text features through the stages: a date-seasonal regression learns from its date,
drift signals flag a shifted text and date feature (not an unshifted one), and one mixed CSV (numeric,
categorical, datetime, text) goes through `forgeml init`, `dvc repro`, one real TorchServe start,
a real request (and a 400), `forgeml predict` and `forgeml monitor`."""

from __future__ import annotations

import ast
import json
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from forgeml.data.sources import mixed
from forgeml.stages import evaluate, monitor, prepare, train
from tests.helpers.cli import commit_all, run
from tests.helpers.ports import free_serve_ports
from tests.helpers.serving import WORKER_MODULES

pytestmark = pytest.mark.slow

TYPES = {"amount": "numeric", "channel": "categorical", "opened": "datetime", "note": "text"}
FAST = ["trainer.max_epochs=10", "trainer.enable_progress_bar=false", "logger=none"]
OTHER_WORDS = ("weather", "sunny", "beach", "holiday", "mountain", "river", "snow", "forest")


def shifted(frame: pd.DataFrame, seed: int = 7) -> pd.DataFrame:
    """Notes from words training never saw, dates three years later."""
    rng = np.random.default_rng(seed)
    notes = [" ".join(rng.choice(OTHER_WORDS, rng.integers(6, 12))) for _ in range(len(frame))]
    later = pd.to_datetime(frame["opened"], format="ISO8601") + pd.DateOffset(years=3)
    return frame.assign(note=notes, opened=later.dt.strftime("%Y-%m-%dT%H:%M:%S"))


def test_date_feature_lifts_r2_of_a_seasonal_regression(make_config):
    r2 = {}
    for label, extra in (("with", []), ("without", ["data.drop=[date]"])):
        cfg = make_config("data=seasonal", "data.source.n_samples=800", "trainer.max_epochs=12", *extra)
        prepare.run(cfg)
        train.run(cfg)
        r2[label] = evaluate.run(cfg)["test/r2"]
    assert r2["with"] >= 0.7 and r2["with"] - r2["without"] >= 0.5, r2


def test_monitor_flags_a_shifted_text_and_date_feature_and_not_unshifted_ones(make_config, tmp_path):
    cfg = make_config("data=mixed", "data.source.n_samples=600")
    prepare.run(cfg)
    fresh = mixed(600, seed=1).drop(columns=["target"])
    verdicts = {}
    for name, frame in (("fresh", fresh), ("shifted", shifted(fresh))):
        frame.to_parquet(tmp_path / f"{name}.parquet")
        cfg.monitor.current = str(tmp_path / f"{name}.parquet")
        verdicts[name] = set(monitor.run(cfg)["drifted_features"])
    signals = {"note:tokens", "note:length", "note:unknown_share", "opened:timestamp"}
    assert not verdicts["fresh"] & signals  # a plain feature may raise its 5% false alarm
    assert {"note:tokens", "note:unknown_share", "opened:timestamp"} <= verdicts["shifted"]

    # an inference log without the redacted text: its signals leave the report, not "all missing"
    log_dir = Path(cfg.monitor.log_dir)
    log_dir.mkdir(parents=True)
    head = {"ts": "2026-01-01T00:00:00Z", "model": "mixed", "version": "1"}
    lines = [json.dumps({**head, "id": str(i), "input": row}) for i, row in enumerate(inputs(fresh))]
    (log_dir / "worker-1.jsonl").write_text("\n".join(lines) + "\n")
    cfg.monitor.current, cfg.monitor.redact = None, ["note"]
    monitor.run(cfg)
    report = json.loads(Path(cfg.paths.reports_dir, "drift.json").read_text())
    assert set(report["features"]) == {"amount", "channel", "opened:timestamp"}
    assert not report["missing_drifted_features"]


def inputs(frame: pd.DataFrame) -> list[dict]:
    """Records as the handler logs them with `monitor.redact=[note]`."""
    return json.loads(frame.drop(columns=["note"]).to_json(orient="records"))


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`forgeml init` on a mixed CSV (every feature type), every request logged, `dvc repro`."""
    root = tmp_path_factory.mktemp("mixed")
    mixed(800, seed=0).to_csv(root / "orders.csv", index=False)
    run(["forgeml", "init", "orders", "--data", "orders.csv", "--target", "target"], root)
    project = root / "orders"
    with (project / "conf/config.yaml").open("a") as config:
        config.write(free_serve_ports())
        config.write("monitor:\n  sample_rate: 1.0\n")
    run(["forgeml", "compose", *FAST], project)
    commit_all(project)
    run(["dvc", "repro"], project)
    return project


def test_mixed_csv_trains_through_dvc_with_every_feature_type(project):
    spec = json.loads((project / "models/preprocessor.json").read_text())
    assert {f["name"]: f["type"] for f in spec["features"]} == TYPES
    assert json.loads((project / "reports/metrics.json").read_text())["test/accuracy"] > 0.75
    archive = zipfile.ZipFile(project / "serve/model-store/orders.mar")
    tree = ast.parse(archive.read("transform.py"))
    imported = {a.name for node in ast.walk(tree) if isinstance(node, ast.Import) for a in node.names}
    imported |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.level == 0}
    assert {module.split(".")[0] for module in imported} <= WORKER_MODULES
    assert not [name for name in archive.namelist() if name.endswith((".pkl", ".pickle", ".pt", ".pth"))]


def test_mixed_model_serves_answers_as_predict_refuses_a_bad_date_and_monitor_sees_the_shift(project):
    rows = pd.read_csv(project / "data/raw/orders.csv").drop(columns=["target"])
    rows.head(20).to_csv(project / "rows.csv", index=False)
    run(["forgeml", "predict", "input=rows.csv", "output=scored.csv"], project)
    scored = pd.read_csv(project / "scored.csv")
    traffic = json.loads(shifted(rows.tail(200)).to_json(orient="records"))
    try:
        run(["forgeml", "serve", "start"], project)
        run(["forgeml", "deploy"], project)
        status, answer = post(project, {"instances": json.loads(rows.head(20).to_json(orient="records"))})
        bad_status, bad = post(project, {"instances": [{**traffic[0], "opened": "31/31/2024"}]})
        assert post(project, {"instances": traffic})[0] == 200
    finally:
        run(["forgeml", "serve", "stop"], project, check=False)
    assert status == 200
    assert [p["label"] for p in answer["predictions"]] == scored["prediction"].tolist()
    served = [p["probabilities"]["1"] for p in answer["predictions"]]
    np.testing.assert_allclose(served, scored["probability_1"], rtol=1e-5, atol=1e-6)
    assert (bad_status, bad["field"]) == (400, "opened") and "is datetime" in bad["error"]
    result = run(["forgeml", "monitor"], project, check=False)
    assert result.returncode == 3, result.stdout + result.stderr
    drifted = set(json.loads((project / "reports/drift.json").read_text())["drifted_features"])
    assert {"note:tokens", "opened:timestamp"} <= drifted and "amount" not in drifted


def post(project: Path, payload: dict) -> tuple[int, dict]:
    params = yaml.safe_load((project / "params.yaml").read_text())
    key = json.loads((project / "serve/runtime/key_file.json").read_text())["inference"]["key"]
    url = f"http://127.0.0.1:{params['serve']['inference_port']}/predictions/orders"
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    request = urllib.request.Request(url, json.dumps(payload).encode(), headers)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())
