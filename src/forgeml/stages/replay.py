"""replay: would VERSION have answered production's logged traffic as production did, and as well?

    forgeml replay VERSION
    forgeml replay VERSION monitor.window_duration=1d monitor.windows=7 monitor.labels=labels.csv

Scores every request production answered in the window(s) (the inference log under
`monitor.log_dir`, or `monitor.current`; the records of `serve.model_name`) through VERSION's
archive, the registry's copy, as its endpoint would, and compares the answers with those the log
holds, per window (serving/comparison.py): agreement and the class flips, the shift of the
scores and a test of the two prediction distributions, the CBPE estimate of both (each with the
calibration `evaluate` fitted for its model, else its probabilities as they are) and, where
delayed labels arrived (`monitor.labels`, joined by request id), the measured metrics of both.
Writes reports/rollout/<VERSION>/replay.json and replay.html and records the verdict and its
numbers in the registry's history (`forgeml history`). Nothing serves differently.

Exit code, for CI and `forgeml rollout` to act on:
    0  passed
    3  refused: in a window of at least monitor.min_samples requests, the agreement is below
       serve.rollout.min_agreement, the estimated accuracy more than
       serve.rollout.max_estimated_drop below production's, a measured metric worse than
       production's by more than gate.max_regression, or (regression) the predictions moved
    4  too few logged requests: no window of monitor.min_samples
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from omegaconf import DictConfig

from forgeml.config import check_monitor, check_ranges
from forgeml.contract import probability_column
from forgeml.errors import ForgeError
from forgeml.io import write_json, write_text
from forgeml.layout import REPLAY_PAGE, REPLAY_REPORT, rollout_reports
from forgeml.monitoring.decay import stamp, time_windows
from forgeml.monitoring.drift import DriftSettings
from forgeml.monitoring.performance import read_labels
from forgeml.monitoring.replay_page import render_replay_html
from forgeml.serving.comparison import Answers, Thresholds, compare, verdict
from forgeml.serving.registry import Registry
from forgeml.serving.replay import ArchivedVersion, check_replayable, load_version, score
from forgeml.stages.monitor import load_current, version_calibration, window_end

REPORT_FORMAT = "forgeml.replay/1"
# the candidate's answers beside production's in one table, so that both are cut into the same windows
REPLAYED = "replayed:"


def run(cfg: DictConfig) -> dict[str, Any]:
    monitor = cfg.monitor
    check_monitor(monitor)
    check_ranges("serve.rollout", cfg.serve.rollout)
    registry = Registry(cfg.serve.model_store)
    candidate = load_version(registry, cfg.serve.model_name, candidate_version(cfg))
    traffic, source = answered_requests(monitor, candidate)
    traffic = traffic.join(score(candidate, traffic).add_prefix(REPLAYED))
    labels = read_labels(monitor.labels, candidate.spec["task"]) if monitor.labels else None
    comparison = Comparison(
        candidate, version_calibrations(cfg, registry, candidate, traffic), thresholds(cfg), labels
    )
    windows = time_windows(traffic, monitor.window_duration, monitor.windows, window_end(monitor))
    compared = [
        {"window": {"start": stamp(window.start), "end": stamp(window.end)}, **comparison.of(window.records)}
        for window in windows
    ]
    report = replay_report(cfg, comparison, traffic, source, compared)
    directory = rollout_reports(cfg.paths.reports_dir, candidate.version)
    write_json(directory / REPLAY_REPORT, report)
    write_text(directory / REPLAY_PAGE, render_replay_html(report))
    numbers = event_numbers(report)
    registry.record_event(candidate.model, candidate.version, "replay", **numbers, report=str(directory))
    return {**numbers, "model": candidate.model, "version": candidate.version, "report": str(directory)}


@dataclass(frozen=True)
class Comparison:
    """The candidate's answers to logged requests against production's, with the calibrations,
    thresholds and delayed labels that every window shares."""

    candidate: ArchivedVersion
    calibrations: dict[str, dict[str, Any] | None]
    thresholds: Thresholds
    labels: pd.DataFrame | None

    def of(self, records: pd.DataFrame) -> dict[str, Any]:
        production, replayed = answers(records, self.candidate, self.calibrations)
        task = self.candidate.spec["task"]
        return compare(task, production, replayed, self.thresholds, records.get("id"), self.labels)


def thresholds(cfg: DictConfig) -> Thresholds:
    rollout, monitor = cfg.serve.rollout, cfg.monitor
    return Thresholds(
        rollout.min_agreement,
        rollout.max_estimated_drop,
        cfg.gate.max_regression,
        monitor.min_samples,
        DriftSettings.from_monitor(monitor),
    )


def replay_report(
    cfg: DictConfig, comparison: Comparison, traffic: pd.DataFrame, source: str, windows: list[dict[str, Any]]
) -> dict[str, Any]:
    """replay.json: the verdict over the windows, each window's comparison and that of all of them."""
    outcome, exit_code, message = verdict(windows, cfg.monitor.min_samples)
    settings = comparison.thresholds
    return {
        "format": REPORT_FORMAT,
        "created_at": pd.Timestamp.now(tz="UTC").isoformat(timespec="seconds"),
        "model": comparison.candidate.model,
        "candidate": comparison.candidate.version,
        "production": dict(Counter(traffic["version"].astype(str))) if "version" in traffic else {},
        "source": source,
        "verdict": outcome,
        "exit_code": exit_code,
        "message": message,
        "thresholds": {
            "serve.rollout.min_agreement": settings.min_agreement,
            "serve.rollout.max_estimated_drop": settings.max_estimated_drop,
            "gate.max_regression": settings.max_regression,
            "monitor.min_samples": settings.min_samples,
        },
        "calibration": {side: fitted["method"] for side, fitted in comparison.calibrations.items() if fitted},
        "overall": comparison.of(traffic),
        "windows": windows,
    }


def candidate_version(cfg: DictConfig) -> str:
    if cfg.candidate is None:
        raise ForgeError("say which version to replay: forgeml replay VERSION (`forgeml models` lists them)")
    return str(cfg.candidate)


def answered_requests(monitor: DictConfig, candidate: ArchivedVersion) -> tuple[pd.DataFrame, str]:
    """The requests of the candidate's model that production answered (not the rejected ones),
    with every feature the candidate needs as they were sent."""
    frame, source = load_current(monitor)
    if "model" in frame.columns:
        frame = frame[frame["model"] == candidate.model]
    if "rejected" in frame.columns:
        frame = frame[frame["rejected"].isna()]
    if "prediction" not in frame.columns:
        raise ForgeError(f"{source} holds no `prediction` column: there is nothing to compare with")
    frame = frame[frame["prediction"].notna()].reset_index(drop=True)
    if len(frame):
        # the log leaves out monitor.redact and hashes monitor.hash; a table holds what it holds
        withheld = {} if monitor.current else {"monitor.redact": monitor.redact, "monitor.hash": monitor.hash}
        check_replayable(candidate, frame.columns, {key: list(names) for key, names in withheld.items()})
    return frame, source


def version_calibrations(
    cfg: DictConfig, registry: Registry, candidate: ArchivedVersion, traffic: pd.DataFrame
) -> dict[str, dict[str, Any] | None]:
    """The calibration each side's CBPE uses: `evaluate`'s (reports/calibration.json) where it was
    fitted for that version's model, else its probabilities as they are. Production's is that of
    the version that answered most of the requests."""
    if candidate.spec["task"] != "classification":
        return {"production": None, "candidate": None}
    served = traffic["version"].astype(str).mode() if "version" in traffic and len(traffic) else []
    production = served[0] if len(served) else None
    classes = candidate.spec["labels"]
    return {
        side: version_calibration(cfg.paths.reports_dir, registry, candidate.model, version, classes)
        for side, version in (("production", production), ("candidate", candidate.version))
    }


def answers(
    records: pd.DataFrame, candidate: ArchivedVersion, calibrations: dict[str, Any]
) -> tuple[Answers, Answers]:
    """(production's logged answers, the candidate's replayed ones) to `records`."""
    columns = [probability_column(label) for label in candidate.spec["labels"] or []]

    def probabilities(prefix: str) -> np.ndarray | None:
        names = [prefix + column for column in columns]
        if not names or not set(names) <= set(records.columns):
            return None
        return records[names].apply(pd.to_numeric, errors="coerce").to_numpy(np.float64)

    production = Answers(
        records["prediction"].to_numpy(object), probabilities(""), calibrations["production"]
    )
    replayed = Answers(
        records[REPLAYED + "prediction"].to_numpy(object), probabilities(REPLAYED), calibrations["candidate"]
    )
    return production, replayed


def event_numbers(report: dict[str, Any]) -> dict[str, Any]:
    """What the registry's history keeps of a replay: the verdict and the numbers over all of it."""
    overall = report["overall"]
    return {
        "verdict": report["verdict"],
        "exit_code": report["exit_code"],
        "message": report["message"],
        "requests": overall["rows"],
        "production": report["production"],
        "agreement": overall.get("agreement"),
        "estimated_accuracy_drop": (overall.get("estimated") or {}).get("accuracy_drop"),
        "score_shift": overall["score_shift"],
    }
