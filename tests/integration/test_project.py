"""A project made by `forgeml init` with its own net in src/: DVC trains, evaluates and packages
it; stock TorchServe serves the archive without the project's code; an untraceable net is
refused before training. Runs the CLI from outside the repository (the package's config only)."""

from __future__ import annotations

import json
import urllib.request
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from sklearn.datasets import load_breast_cancer

from tests.helpers.cli import commit_all, run
from tests.helpers.ports import free_serve_ports

pytestmark = pytest.mark.slow

RESMLP = '''
import torch
from torch import nn


class ResMLP(nn.Module):
    """Residual blocks of LayerNorm -> Linear -> GELU."""

    def __init__(self, input_dim: int, output_dim: int, width: int = 32, blocks: int = 2) -> None:
        super().__init__()
        self.inp = nn.Linear(input_dim, width)
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.LayerNorm(width), nn.Linear(width, width), nn.GELU()) for _ in range(blocks)
        )
        self.out = nn.Linear(width, output_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.inp(x)
        for block in self.blocks:
            h = h + block(h)
        return self.out(h)


class Branchy(nn.Module):
    """Control flow on the data's values: torch.export cannot trace it."""

    def __init__(self, input_dim: int, output_dim: int, **unused) -> None:
        super().__init__()
        self.linear = nn.Linear(input_dim, output_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum() > 0:
            return self.linear(x)
        return -self.linear(x)
'''
RESMLP_CONFIG = """defaults:
  - /schema/model/custom@_here_
  - _self_
_target_: mynets.ResMLP
width: 32
blocks: 2
"""
FAST = ["model=resmlp", "trainer.max_epochs=4", "trainer.enable_progress_bar=false", "logger=none"]


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`forgeml init` with a CSV, a ResMLP in src/mynets.py chosen in conf/, `dvc repro`."""
    root = tmp_path_factory.mktemp("own")
    frame = load_breast_cancer(as_frame=True).frame
    frame["churned"] = np.where(frame.pop("target") == 1, "no", "yes")
    frame.to_csv(root / "churn.csv", index=False)
    run(["forgeml", "init", "churn", "--data", "churn.csv", "--target", "churned"], root)
    project = root / "churn"
    (project / "src/mynets.py").write_text(RESMLP)
    (project / "conf/model/resmlp.yaml").parent.mkdir(parents=True)
    (project / "conf/model/resmlp.yaml").write_text(RESMLP_CONFIG)
    with (project / "conf/config.yaml").open("a") as config:
        config.write(free_serve_ports())
    run(["forgeml", "compose", *FAST], project)
    commit_all(project)
    run(["dvc", "repro"], project)
    return project


def test_own_net_from_src_trains_evaluates_and_packages_through_dvc(project):
    manifest = json.loads((project / "models/model.json").read_text())
    assert manifest["config"]["model"] == {"_target_": "mynets.ResMLP", "width": 32, "blocks": 2}
    assert json.loads((project / "reports/metrics.json").read_text())["test/accuracy"] > 0.85
    archive = zipfile.ZipFile(project / "serve/model-store/churn.mar")
    assert not [name for name in archive.namelist() if "mynets" in name]
    assert b"mynets" not in b"".join(archive.read(n) for n in archive.namelist() if n.endswith(".py"))


def test_own_net_serves_on_torchserve_and_answers_as_forgeml_predict(project):
    rows = pd.read_csv(project / "data/raw/churn.csv").drop(columns=["churned"]).head(12)
    rows.to_csv(project / "rows.csv", index=False)
    run(["forgeml", "predict", "input=rows.csv", "output=scored.csv"], project)
    scored = pd.read_csv(project / "scored.csv")
    try:
        run(["forgeml", "serve", "start"], project)
        run(["forgeml", "deploy"], project)
        answers = post(project, {"instances": json.loads(rows.to_json(orient="records"))})
    finally:
        run(["forgeml", "serve", "stop"], project, check=False)
    assert [answer["label"] for answer in answers] == scored["prediction"].tolist()
    served = [answer["probabilities"]["yes"] for answer in answers]
    np.testing.assert_allclose(served, scored["probability_yes"], rtol=1e-5, atol=1e-6)


def test_a_net_torch_export_cannot_trace_is_refused_before_training(project):
    before = (project / "models/model.json").stat().st_mtime_ns
    result = run(["forgeml", "train", *FAST, "model._target_=mynets.Branchy"], project, check=False)
    assert result.returncode == 2
    assert "model mynets.Branchy cannot be exported with torch.export" in result.stderr
    assert "data-dependent" in result.stderr
    assert "Epoch" not in result.stdout + result.stderr
    assert (project / "models/model.json").stat().st_mtime_ns == before


def post(project: Path, payload: dict) -> list[dict]:
    params = yaml.safe_load((project / "params.yaml").read_text())
    key = json.loads((project / "serve/runtime/key_file.json").read_text())["inference"]["key"]
    url = f"http://127.0.0.1:{params['serve']['inference_port']}/predictions/churn"
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    request = urllib.request.Request(url, json.dumps(payload).encode(), headers)
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())["predictions"]
