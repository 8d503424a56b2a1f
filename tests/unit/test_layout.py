"""The stage contract (forgeml.layout) is what dvc.yaml declares: each stage's outs, metrics and
plots are the files layout names for it, and every file a stage reads from another is an out."""

from __future__ import annotations

from pathlib import Path

import yaml
from omegaconf import OmegaConf

from forgeml.layout import (
    CONFUSION_PAIRS,
    FEATURE_DRIFT_TABLE,
    FIGURES,
    PREDICTED_VS_ACTUAL,
    ROC_POINTS,
    WINDOWS_TABLE,
    monitoring_table,
    plot_file,
    stage_outputs,
)
from tests.helpers.config import PROJECT_ROOT


def declared(entries: list) -> set[Path]:
    """dvc.yaml's entries as paths (an entry is a path or a {path: options} mapping)."""
    return {Path(next(iter(entry)) if isinstance(entry, dict) else entry) for entry in entries}


def test_dvc_yaml_outs_are_the_files_layout_names_for_each_stage():
    params = OmegaConf.create(yaml.safe_load((PROJECT_ROOT / "params.yaml").read_text()))
    pipeline = OmegaConf.create(yaml.safe_load((PROJECT_ROOT / "dvc.yaml").read_text()))
    stages = OmegaConf.to_container(OmegaConf.merge(params, {"stages": pipeline.stages}), resolve=True)[
        "stages"
    ]
    expected = stage_outputs(params)
    assert set(stages) == set(expected)
    outputs = set()
    for name, stage in stages.items():
        written = declared(stage.get("outs", []) + stage.get("metrics", []) + stage.get("plots", []))
        assert written == set(expected[name]), name
        outputs |= written
    for name, stage in stages.items():
        produced_elsewhere = [Path(dep) for dep in stage["deps"] if Path(dep) in outputs]
        assert all(dep not in expected[name] for dep in produced_elsewhere), name
    assert {Path("data/processed"), Path("models")} <= {Path(d) for s in stages.values() for d in s["deps"]}


def test_dvc_yaml_plots_draw_the_files_layout_names():
    """The top-level plots of dvc.yaml read evaluate's plot data, its figures and monitor's
    per-window tables by the names the stages write them under."""
    params = OmegaConf.create(yaml.safe_load((PROJECT_ROOT / "params.yaml").read_text()))
    reports = Path(params.paths.reports_dir)
    written = {plot_file(reports, name) for name in (CONFUSION_PAIRS, ROC_POINTS, PREDICTED_VS_ACTUAL)}
    written |= {reports / FIGURES}
    written |= {monitoring_table(reports, name) for name in (WINDOWS_TABLE, FEATURE_DRIFT_TABLE)}
    pipeline = yaml.safe_load((PROJECT_ROOT / "dvc.yaml").read_text())
    drawn = set()
    for plot in pipeline["plots"]:
        name, options = next(iter(plot.items())) if isinstance(plot, dict) else (plot, None)
        files = (options or {}).get("y") if isinstance((options or {}).get("y"), dict) else None
        drawn |= {Path(file) for file in files} if files else {Path(name)}
    assert drawn and drawn <= written, drawn - written
