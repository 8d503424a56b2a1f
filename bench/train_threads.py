"""Training threads: `forgeml train` with torch on one intra-op thread against one per core, same
process, same data, alternating runs.

Two workloads: the default MLP on synthetic tabular data (20,000 rows x 20 features, batch 64, as
`data=synthetic` ships) and the CNN on the bundled digits images. Each runs `--repeats` times per
setting (default 3), alternating one thread and all cores; the median samples/s of each counts,
with the spread. The lines `ratio <workload>: <one thread / all cores>` say which default pays:
above 1, one thread trains faster.

    python bench/train_threads.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
from pathlib import Path

from hydra import compose, initialize_config_dir

from forgeml.stages import prepare, train

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"
WORKLOADS = {
    "mlp": ["data=synthetic", "data.source.n_samples=20000", "trainer.max_epochs=2"],
    "cnn": ["data=digits", "model=cnn", "trainer.max_epochs=2"],
}


def config(workdir: str, workload: list[str], threads: int):
    overrides = [
        *workload,
        f"trainer.threads={threads}",
        "trainer.enable_progress_bar=false",
        "callbacks.early_stopping=null",
        "logger=none",
        *(f"paths.{name}_dir={workdir}/{name}" for name in ("data", "models", "reports", "log")),
    ]
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        return compose("config", overrides=overrides)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    for name, workload in WORKLOADS.items():
        with tempfile.TemporaryDirectory() as workdir:
            prepare.run(config(workdir, workload, 1))
            rates: dict[int, list[float]] = {1: [], cores: []}
            for _ in range(args.repeats):
                for threads in rates:
                    rates[threads].append(
                        train.run(config(workdir, workload, threads))["fit/samples_per_second"]
                    )
        for threads, values in rates.items():
            print(f"{name} threads={threads}: median {statistics.median(values):.0f} samples/s "
                  f"(min {min(values):.0f}, max {max(values):.0f})")  # fmt: skip
        print(f"ratio {name}: {statistics.median(rates[1]) / statistics.median(rates[cores]):.2f}")


if __name__ == "__main__":
    main()
