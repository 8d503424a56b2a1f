"""Benchmarks build their own data and model in a temporary workspace: what the current
directory holds (another dataset, a broken model) changes nothing."""

from __future__ import annotations

import importlib.util
import json

from tests.helpers.config import PROJECT_ROOT


def bench_module(name: str):
    spec = importlib.util.spec_from_file_location(name, PROJECT_ROOT / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_serve_benchmark_trains_its_own_model_whatever_the_workspace_holds(tmp_path, monkeypatch):
    # a workspace prepared with another dataset (target "label"), and a model that is not one
    (tmp_path / "data" / "processed").mkdir(parents=True)
    (tmp_path / "data" / "processed" / "test.parquet").write_text("not parquet")
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "model.pt2").write_text("not a model")
    (tmp_path / "models" / "preprocessor.json").write_text(json.dumps({"target": "label"}))
    monkeypatch.chdir(tmp_path)
    serve_bench = bench_module("serve_throughput")
    work = tmp_path / "bench-work"
    models_dir, test_split = serve_bench.trained_model(work)
    assert models_dir.is_relative_to(work) and test_split.is_relative_to(work)
    (record,) = json.loads(serve_bench.request_body(models_dir, test_split))["instances"]
    assert len(record) == 30 and "target" not in record
