"""Data larger than memory: streamed prepare + one training epoch on 10,000,000 x 32 rows.

Everything happens in a temporary workspace (nothing of the repository's data/ or models/ is read):
1. 10,000,000 rows of a learnable binary task (32 float features) are generated to Parquet in
   chunks, so generation itself stays in bounded memory;
2. `forgeml prepare` + `forgeml train` (one epoch) run on it with `data.streaming=true`, while a
   thread samples the resident memory of this process plus its DataLoader workers; the peak is
   printed beside getrusage's high-water marks (self, and the largest finished child);
3. the in-memory path (`data.streaming=false`) runs on 1,000,000 rows of the same task, same net
   (MLP 128-128) and batch (512), in this same process.

Throughput is forgeml's own `fit/samples_per_second` (train rows / `trainer.fit` seconds, with
its validation pass) for both sides. The last line is `ratio: <streaming / in-memory>` (target
>= 0.8); the peak RSS must stay <= 2 GB.

    python bench/streaming.py [--rows 10000000] [--baseline-rows 1000000] [--num-workers 0]
"""

from __future__ import annotations

import argparse
import contextlib
import resource
import shutil
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from hydra import compose, initialize_config_dir

from forgeml.stages import prepare, train

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"
FEATURES, BATCH, CHUNK = 32, 512, 500_000
RSS_LIMIT = 2 * 2**30


def generate(path: Path, rows: int, seed: int = 0) -> None:
    """A linear-plus-noise binary task, written chunk by chunk (never the whole table in memory)."""
    rng = np.random.default_rng(seed)
    weights = np.random.default_rng(1234).normal(size=FEATURES).astype(np.float32)
    names = [f"x{i}" for i in range(FEATURES)]
    schema = pa.schema([*(pa.field(n, pa.float32()) for n in names), ("target", pa.int64())])
    # random floats do not compress: no dictionaries, the fastest codec
    with pq.ParquetWriter(path, schema, use_dictionary=False, compression="lz4") as out:
        for start in range(0, rows, CHUNK):
            x = rng.standard_normal((min(CHUNK, rows - start), FEATURES), dtype=np.float32)
            target = (x @ weights + rng.normal(0, 2, len(x)) > 0).astype(np.int64)
            out.write_table(pa.table({**{n: x[:, i] for i, n in enumerate(names)}, "target": target}))


def config(workdir: Path, source: Path, streaming: bool, num_workers: int):
    overrides = [
        "data=csv",
        f"data.path={source}",
        "data.name=bench",
        "data.target=target",
        "data.task=classification",
        f"data.streaming={str(streaming).lower()}",
        f"data.batch_size={BATCH}",
        f"data.num_workers={num_workers}",
        "model.hidden=[128,128]",
        "model.dropout=0.0",
        "trainer.max_epochs=1",
        "trainer.accelerator=cpu",
        "trainer.enable_progress_bar=false",
        "logger=none",
        *(f"paths.{name}_dir={workdir}/{name}" for name in ("data", "models", "reports", "log")),
        f"paths.processed_dir={workdir}/data/processed",
    ]
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        return compose("config", overrides=overrides)


class PeakMemory:
    """Samples RSS of this process plus all its children (DataLoader workers) every 50 ms."""

    def __init__(self) -> None:
        self.process, self.peak, self.running = psutil.Process(), 0, True
        self.thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> PeakMemory:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.running = False
        self.thread.join()

    def _sample(self) -> None:
        while self.running:
            total = self.process.memory_info().rss
            for child in self.process.children(recursive=True):
                with contextlib.suppress(psutil.NoSuchProcess):  # a worker that just finished
                    total += child.memory_info().rss
            self.peak = max(self.peak, total)
            time.sleep(0.05)


def run_pipeline(workdir: Path, source: Path, streaming: bool, num_workers: int) -> tuple[float, float]:
    """(prepare rows/s, training samples/s)."""
    cfg = config(workdir, source, streaming, num_workers)
    started = time.perf_counter()
    summary = prepare.run(cfg)
    prepare_seconds = time.perf_counter() - started
    rows = sum(v for k, v in summary.items() if k.startswith("rows/"))
    metrics = train.run(cfg)
    return rows / prepare_seconds, metrics["fit/samples_per_second"]


def gib(value: float) -> str:
    return f"{value / 2**30:.2f} GiB"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--baseline-rows", type=int, default=1_000_000)
    parser.add_argument("--num-workers", type=int, default=0)
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        big = workdir / "raw" / "big.parquet"
        big.parent.mkdir()
        started = time.perf_counter()
        generate(big, args.rows)
        print(f"generated {args.rows:,} x {FEATURES} rows in {time.perf_counter() - started:.1f}s")
        with PeakMemory() as memory:
            stream_prepare, stream_train = run_pipeline(workdir / "stream", big, True, args.num_workers)
        self_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        child_peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
        shutil.rmtree(workdir / "stream")
        big.unlink()
        small = workdir / "raw" / "small.parquet"
        generate(small, args.baseline_rows)
        memory_prepare, memory_train = run_pipeline(workdir / "memory", small, False, args.num_workers)
    print(
        f"{torch.get_num_threads()} torch threads, batch {BATCH}, MLP 128-128, num_workers {args.num_workers}"
    )
    for name, rows, rates in (
        ("streaming", args.rows, (stream_prepare, stream_train)),
        ("in memory", args.baseline_rows, (memory_prepare, memory_train)),
    ):
        print(
            f"{name}, {rows:>10,} rows: prepare {rates[0]:10,.0f} rows/s, train {rates[1]:10,.0f} samples/s"
        )
    print(
        f"peak RSS while streaming (process + workers, sampled): {gib(memory.peak)}; "
        f"getrusage self {gib(self_peak)}, largest child {gib(child_peak)} (limit {gib(RSS_LIMIT)})"
    )
    print(f"rss_ok: {max(memory.peak, self_peak + child_peak) <= RSS_LIMIT}")
    print(f"ratio: {stream_train / memory_train:.3f}")


if __name__ == "__main__":
    main()
