"""Training throughput: `forgeml train` vs a hand-written torch loop, same data, same process.

Synthetic binary data, 200,000 rows x 32 features (70% of it is the train split), MLP 128-128,
batch 512, one epoch, default trainer, no logger. Both sides train on the same encoded rows.
forgeml's samples/s is measured over `trainer.fit` (train epoch + validation + checkpoint);
its end-to-end time (data loading, export) is printed too.

    python bench/train_throughput.py [--rows 200000]

The last line is `ratio: <forgeml samples/s / raw samples/s>` (target >= 0.85).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from torch import nn

from forgeml.data.datamodule import TableDataModule
from forgeml.stages import prepare, train

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"
BATCH = 512


def forgeml_config(workdir: str, rows: int):
    overrides = [
        "data=synthetic",
        f"data.source.n_samples={rows}",
        f"data.batch_size={BATCH}",
        "model.hidden=[128,128]",
        "model.dropout=0.0",
        "trainer.max_epochs=1",
        "trainer.enable_progress_bar=false",
        "logger=none",
        *(f"paths.{name}_dir={workdir}/{name}" for name in ("data", "models", "reports", "log")),
    ]
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        return compose("config", overrides=overrides)


def raw_torch_loop(inputs: torch.Tensor, targets: torch.Tensor, lr: float) -> float:
    """The baseline: a plain loop over shuffled slices of the same tensors; returns samples/s."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(inputs.shape[1], 128), nn.ReLU(), nn.Linear(128, 128), nn.ReLU(), nn.Linear(128, 2))
    optimizer = torch.optim.AdamW(net.parameters(), lr=lr)
    started = time.perf_counter()
    order = torch.randperm(len(inputs))
    for start in range(0, len(inputs), BATCH):
        index = order[start : start + BATCH]
        loss = nn.functional.cross_entropy(net(inputs[index]), targets[index])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return len(inputs) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    rows = parser.parse_args().rows
    with tempfile.TemporaryDirectory() as workdir:
        cfg = forgeml_config(workdir, rows)
        prepare.run(cfg)
        datamodule = TableDataModule(cfg.paths.processed_dir, BATCH)
        datamodule.setup()
        table = datamodule.tables["train"]
        raw_torch_loop(table.inputs[: BATCH * 20], table.targets[: BATCH * 20], cfg.optimizer.lr)  # warm-up
        started = time.perf_counter()
        metrics = train.run(cfg)
        end_to_end = time.perf_counter() - started
        raw = raw_torch_loop(table.inputs, table.targets, cfg.optimizer.lr)
    forgeml_rate = metrics["fit/samples_per_second"]
    print(f"train rows: {len(table):,}  features: {table.inputs.shape[1]}  batch: {BATCH}  threads: {torch.get_num_threads()}")
    print(f"raw torch loop:  {raw:12,.0f} samples/s")
    print(f"forgeml train:   {forgeml_rate:12,.0f} samples/s (fit {metrics['fit/seconds']:.2f}s, end to end {end_to_end:.2f}s)")
    print(f"ratio: {forgeml_rate / raw:.3f}")


if __name__ == "__main__":
    main()
