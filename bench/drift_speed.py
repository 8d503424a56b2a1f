"""Drift statistics on 1,000,000 current rows x 32 numeric features, forgeml vs naive scipy.

Two cases, as `forgeml monitor` picks them (monitor.small_reference_rows = 1000):
- large reference (50,000 rows): Wasserstein distance / reference std (+ PSI)
  naive: scipy.stats.wasserstein_distance(reference, current) per feature on the raw arrays
- small reference (1,000 rows): KS test (+ PSI)
  naive: scipy.stats.ks_2samp(reference, current) per feature on the raw arrays

forgeml's time includes summarising the reference. Both run in this process on the same data;
the largest difference between the two answers is printed as a check. Ends with the line
`ratio: <naive time / forgeml time>` over both cases.

Then `forgeml monitor` end to end, as a user runs it (a new process: Python start-up, Hydra,
reading, every test, CBPE, the reports; wandb off), on a project whose inference log holds the
same rows as the handler writes them (JSON Lines: id, inputs, prediction, probabilities; two
workers, each file rotated at monitor.log_max_bytes, 10 MB) and on the same rows as one Parquet
table (`monitor.current=`); the reference is 50,000 train rows with the model's predictions and
calibration as `evaluate` leaves them. The log's first run parses every segment and keeps the
closed (rotated) ones as Arrow files in the log's .segment-cache/; every later run on a log that
grew by less than a segment (the steady state) parses only the two live files. Then `--runs`
rounds (3) alternate the steady state and the Parquet table; each prints its median, its range
and the load average, against the targets: Parquet <= 3 s, the log's steady state <= 4 s. The
commands run once this process has let go of its tables (while it held them, each command
measured about a second slower: docs/benchmarks.md, 2026-12-03).

    python bench/drift_speed.py [--rows 1000000] [--features 32] [--runs 3] [--no-cli]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from scipy import stats

from forgeml.config import MonitorConfig
from forgeml.contract import probability_column
from forgeml.data.checks import TableSchema
from forgeml.data.preprocessing import fit_preprocessor
from forgeml.io import write_json
from forgeml.monitoring.drift import DriftSettings, NumericReference, dataset_drift
from forgeml.monitoring.performance import fit_calibration
from forgeml.monitoring.profile import build_profile
from forgeml.serving.monitoring import InferenceLog

LABELS = ["no", "yes"]
# records the benchmark's handler appends to its log at once, as a batch it answered
LOG_BATCH = 1000
# what the command may take (seconds), from Parquet and from the log in steady state
TARGETS = {"Parquet table": 3.0, "inference log, steady state": 4.0}


def make_data(
    rows: int, features: int, reference_rows: int, seed: int = 0
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Reference and current tables; every fourth current feature is shifted and widened."""
    rng = np.random.default_rng(seed)
    names = [f"f{i:02d}" for i in range(features)]
    scales = rng.uniform(0.5, 20.0, features)
    reference = pd.DataFrame(rng.normal(0.0, scales, (reference_rows, features)), columns=names)
    current = rng.normal(0.0, scales, (rows, features))
    current[:, ::4] = current[:, ::4] * 1.3 + 0.2 * scales[::4]
    return reference, pd.DataFrame(current, columns=names)


def timed(function: Callable[[], dict[str, float]]) -> tuple[float, dict[str, float]]:
    start, cpu = time.perf_counter(), time.process_time()
    result = function()
    seconds = time.perf_counter() - start
    print(f"  ({seconds:.2f} s wall, {time.process_time() - cpu:.2f} s CPU in this process)")
    return seconds, result


def forgeml_drift(reference: pd.DataFrame, current: pd.DataFrame) -> dict[str, float]:
    references = {name: NumericReference.from_values(reference[name].to_numpy()) for name in reference}
    drift = dataset_drift(references, current, DriftSettings())
    return {name: entry["statistic"] for name, entry in drift["features"].items()}


def naive_wasserstein(reference: pd.DataFrame, current: pd.DataFrame) -> dict[str, float]:
    return {
        name: stats.wasserstein_distance(reference[name], current[name]) / reference[name].std(ddof=0)
        for name in reference
    }


def naive_ks(reference: pd.DataFrame, current: pd.DataFrame) -> dict[str, float]:
    return {name: stats.ks_2samp(reference[name], current[name]).statistic for name in reference}


def run_case(
    label: str, reference: pd.DataFrame, current: pd.DataFrame, naive: Callable
) -> tuple[float, float]:
    forgeml_seconds, ours = timed(lambda: forgeml_drift(reference, current))
    naive_seconds, theirs = timed(lambda: naive(reference, current))
    difference = max(abs(ours[name] - theirs[name]) for name in ours)
    rows, features = current.shape
    print(f"{label}: {rows:,} rows x {features} features, reference {len(reference):,} rows")
    print(f"  forgeml: {forgeml_seconds:.2f} s ({rows / forgeml_seconds:,.0f} rows/s)")
    print(f"  naive:   {naive_seconds:.2f} s ({rows / naive_seconds:,.0f} rows/s)")
    print(f"  largest difference in the statistic: {difference:.2e}")
    return forgeml_seconds, naive_seconds


def scored(frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """A stand-in model's probability of "yes" and its labels: a logistic score of f00."""
    probability = 1.0 / (1.0 + np.exp(-frame["f00"].to_numpy() / frame["f00"].std()))
    return probability, np.where(probability > 0.5, "yes", "no")


def write_project(root: Path, reference: pd.DataFrame, current: pd.DataFrame) -> None:
    """data/processed, models/model.json and reports/ as prepare/train/evaluate leave them, and
    the current rows as the handler's inference log and as one Parquet table."""
    processed, reports = root / "data" / "processed", root / "reports"
    train = reference.assign(target=scored(reference)[1])
    processed.mkdir(parents=True)
    train.to_parquet(processed / "train.parquet")
    schema = TableSchema({name: "numeric" for name in reference}, "target", "classification")
    write_json(processed / "preprocessor.json", fit_preprocessor(train, schema))
    write_json(processed / "reference_profile.json", build_profile(train, schema))
    write_json(root / "models" / "model.json", {"config_hash": "bench", "model_hash": "bench"})
    reports.mkdir()
    predictions = pa.table({"prediction": scored(reference)[1]}).replace_schema_metadata(
        {"model_hash": "bench"}
    )
    pq.write_table(predictions, reports / "reference_predictions.parquet")
    probability, _ = scored(reference)
    truth = (np.random.default_rng(1).random(len(reference)) < probability).astype(int)
    calibration = fit_calibration(np.column_stack([1 - probability, probability]), truth, LABELS)
    write_json(reports / "calibration.json", {**calibration, "model_hash": "bench"})
    write_json(reports / "metrics.json", {"test/accuracy": 0.75})
    write_log(root / "log", current)


def write_log(log_dir: Path, current: pd.DataFrame) -> None:
    """The rows as the serving handler logs them (one file per worker: two workers here); the same
    rows as one Parquet table, log_dir/../current.parquet."""
    probability, labels = scored(current)
    stamp = pd.Timestamp.now(tz="UTC") - pd.to_timedelta(np.linspace(3600, 1, len(current)), unit="s")
    ids = [f"{i:032x}" for i in range(len(current))]
    records = pd.DataFrame(
        {
            "ts": stamp.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "model": "bench",
            "version": "1",
            "latency_ms": 2.5,
            "id": ids,
            "input": current.to_dict("records"),
            "prediction": labels,
            "probabilities": [{"no": 1 - p, "yes": p} for p in probability.tolist()],
        }
    )
    half = len(current) // 2
    for worker, part in ((101, records.iloc[:half]), (202, records.iloc[half:])):
        write_worker_log(log_dir, worker, part)
    frame = current.assign(ts=stamp, model="bench", id=ids, prediction=labels)
    frame = frame.assign(
        **{probability_column("no"): 1 - probability, probability_column("yes"): probability}
    )
    frame.to_parquet(log_dir.parent / "current.parquet")


def write_worker_log(log_dir: Path, worker: int, records: pd.DataFrame) -> None:
    """`records` as one worker's handler leaves them: appended by its own InferenceLog a batch
    at a time, rotated at monitor.log_max_bytes, every rotated file kept (log_backups as large
    as the log needs: the default, 5, would keep the last 60 MB only)."""
    batches = [
        batch.to_json(orient="records", lines=True, double_precision=15).encode()
        for batch in (records.iloc[start : start + LOG_BATCH] for start in range(0, len(records), LOG_BATCH))
    ]
    max_bytes = MonitorConfig.log_max_bytes
    log = InferenceLog(str(log_dir), max_bytes, backups=2 * sum(map(len, batches)) // max_bytes + 2)
    log.stem = str(log_dir / f"worker-{worker}")  # a worker of its own, not this process's pid
    for batch in batches:
        log.append(batch)
    log.close()


def cli_seconds(root: Path, *overrides: str) -> tuple[float, float, int]:
    """Wall time of `forgeml monitor` in a new process, its CPU time (user + system, all its
    threads: what a loaded machine does not inflate as much), and its exit code."""
    paths = [f"paths.{key}={root / value}" for key, value in PATHS.items()]
    command = [sys.executable, "-m", "forgeml.cli", "monitor", *paths, "monitor.wandb=false", *overrides]
    environment = {**os.environ, "FORGEML_CONFIG_DIR": str(Path(__file__).resolve().parents[1] / "conf")}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    result = subprocess.run(command, cwd=root, env=environment, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if result.returncode not in (0, 3):
        raise SystemExit(f"forgeml monitor failed ({result.returncode}):\n{result.stderr[-3000:]}")
    return seconds, cpu, result.returncode


PATHS = {
    "data_dir": "data",
    "models_dir": "models",
    "reports_dir": "reports",
    "log_dir": "logs",
}


def cli_sources(root: Path) -> dict[str, str]:
    """The two ways the benchmark's rows reach `forgeml monitor`, as the override that says so."""
    return {
        "inference log, steady state": f"monitor.log_dir={root / 'log'}",
        "Parquet table": f"monitor.current={root / 'current.parquet'}",
    }


def run_cli(root: Path, runs: int) -> None:
    """The log's first run, then `runs` rounds alternating the log's steady state and Parquet:
    each source's median wall time, its range, CPU time, and the load average over the rounds."""
    rows = pq.read_metadata(root / "current.parquet").num_rows
    print(f"forgeml monitor, end to end: {rows:,} logged rows")
    print(f"  (the log: {len(list((root / 'log').glob('*.jsonl')))} files, two of them live)")
    sources = cli_sources(root)
    seconds, cpu, _ = cli_seconds(root, sources["inference log, steady state"])
    print(
        f"  inference log, first run (parses all, keeps closed files): {seconds:.2f} s wall, {cpu:.2f} s CPU"
    )
    timings: dict[str, list[tuple[float, float]]] = {label: [] for label in sources}
    loads = [os.getloadavg()[0]]
    for _ in range(runs):
        for label, source in sources.items():
            seconds, cpu, code = cli_seconds(root, source)
            timings[label].append((seconds, cpu))
            print(f"  {label}: {seconds:.2f} s wall, {cpu:.2f} s CPU (exit {code})")
        loads.append(os.getloadavg()[0])
    print(f"  load average (1 min) over the rounds: {min(loads):.1f}-{max(loads):.1f}")
    for label, measured in timings.items():
        walls = [wall for wall, _ in measured]
        median = statistics.median(walls)
        verdict = "met" if median <= TARGETS[label] else "NOT met"
        print(
            f"monitor {label}: median {median:.2f} s wall ({min(walls):.2f}-{max(walls):.2f}, "
            f"{len(walls)} runs), {statistics.median(cpu for _, cpu in measured):.2f} s CPU; "
            f"target <= {TARGETS[label]:.0f} s {verdict}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--features", type=int, default=32)
    parser.add_argument("--runs", type=int, default=3, help="rounds of the end-to-end commands")
    parser.add_argument("--no-cli", action="store_true", help="skip the end-to-end `forgeml monitor` runs")
    args = parser.parse_args()
    large_reference, current = make_data(args.rows, args.features, reference_rows=50_000)
    small_reference = large_reference.head(1_000)
    ours_large, naive_large = run_case(
        "wasserstein (large reference)", large_reference, current, naive_wasserstein
    )
    ours_small, naive_small = run_case("ks (small reference)", small_reference, current, naive_ks)
    total_ours, total_naive = ours_large + ours_small, naive_large + naive_small
    print(f"total: forgeml {total_ours:.2f} s, naive {total_naive:.2f} s")
    print(f"ratio: {total_naive / total_ours:.2f}")
    if args.no_cli:
        return
    with tempfile.TemporaryDirectory() as directory:
        root = Path(directory)
        started = time.perf_counter()
        write_project(root, large_reference, current)
        print(f"(project and log written in {time.perf_counter() - started:.0f} s)")
        # the commands' own memory only: this process lets go of its 1M-row tables first
        del large_reference, small_reference, current
        run_cli(root, args.runs)


if __name__ == "__main__":
    main()
