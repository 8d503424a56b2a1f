"""`forgeml replay VERSION` on the command line, and its event in `forgeml history`."""

from __future__ import annotations

import pytest
from rich.console import Console

from forgeml.cli import main
from forgeml.config import check_ranges
from forgeml.errors import ForgeError
from forgeml.report import show


def test_the_version_argument_stays_the_text_it_is(tmp_path, monkeypatch, capsys):
    """1e5 would be a number as a bare override value; a version is a name."""
    monkeypatch.chdir(tmp_path)
    assert main(["replay", "1e5", "--cfg", "job"]) == 0
    assert "candidate: '1e5'" in capsys.readouterr().out


def test_a_version_with_a_quote_is_a_usage_error(capsys):
    assert main(["replay", "v'1"]) == 2
    assert "no quote" in capsys.readouterr().err


def test_history_shows_a_replay_with_its_verdict_and_agreement(monkeypatch):
    event = {
        "at": "2026-12-07T21:20:05+00:00",
        "model": "churn",
        "action": "replay",
        "version": "v2",
        "verdict": "refused",
        "message": "refused: window 1: agreement with production 0.638 is below 0.9",
        "requests": 569,
        "agreement": 0.638,
        "user": "ci",
        "host": "runner",
    }
    console = Console(width=400, record=True, highlight=False)
    monkeypatch.setattr("forgeml.report.console", lambda: console)
    show("history", {"registry": "serve/model-store", "events": [event]})
    line = console.export_text().splitlines()[1]
    assert "replay v2: refused: window 1: agreement with production 0.638" in line
    assert "(569 requests, agreement 0.638)" in line


def test_a_rollout_threshold_out_of_range_names_its_key(make_config):
    cfg = make_config("serve.rollout.min_agreement=1.5")
    with pytest.raises(ForgeError, match=r"serve\.rollout\.min_agreement=1\.5 must lie between 0 and 1"):
        check_ranges("serve.rollout", cfg.serve.rollout)
