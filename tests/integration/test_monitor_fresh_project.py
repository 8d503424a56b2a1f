"""`dvc repro` on a fresh project reaches the monitor stage before any server ran: with
`monitor.hash` set there is no hash key yet (`forgeml serve start` makes it) and no inference
log, and the stage reports "no data" instead of failing."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from forgeml.layout import DRIFT_REPORT
from forgeml.monitoring.privacy import KEY_FILE
from forgeml.stages import monitor, prepare
from tests.helpers.config import compose_config


def test_fresh_project_with_hashed_columns_reports_no_data(tmp_path):
    rng = np.random.default_rng(0)
    city = rng.choice(["Oslo", "Rome", "Lima"], size=200)
    age = rng.normal(40, 10, size=200).round(1)
    frame = pd.DataFrame({"age": age, "city": city, "label": np.where(city == "Rome", "yes", "no")})
    frame.to_csv(tmp_path / "people.csv", index=False)
    cfg = compose_config(
        tmp_path,
        "data=csv",
        f"data.path={tmp_path / 'people.csv'}",
        "data.target=label",
        "data.features={city:categorical}",
        "monitor.hash=[city]",
        "monitor.wandb=false",
    )
    prepare.run(cfg)
    assert not (Path(cfg.serve.runtime_dir) / KEY_FILE).exists()  # never served: no key yet

    result = monitor.run(cfg)

    assert result["exit_code"] == 4 and result["verdict"] == "insufficient_data"
    report = json.loads((Path(cfg.paths.reports_dir) / DRIFT_REPORT).read_text())
    assert report["rows"]["current"] == 0 and "no inference records" in report["message"]
    assert not (Path(cfg.serve.runtime_dir) / KEY_FILE).exists()  # monitor makes no key
