"""The LightningDataModule: processed splits encoded once into in-memory tensors.

Batches are sliced from those tensors with one indexing operation each, never assembled sample
by sample: the sampler hands out whole index tensors (a slice of one permutation per epoch), so
the loader costs next to nothing beside the model. In a distributed run each process takes every
`world_size`-th row of the same permutation, as DistributedSampler would.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from forgeml.data.preprocessing import feature_columns
from forgeml.data.transform import encode_features, encode_labels
from forgeml.io import read_json
from forgeml.layout import PREPROCESSOR, split_file

SPLITS = ("train", "val", "test")
EVAL_BATCH_FACTOR = 8


class TensorTable(Dataset):
    """Rows of an (inputs, targets) pair of tensors, fetched a whole batch at a time."""

    def __init__(self, inputs: torch.Tensor, targets: torch.Tensor) -> None:
        self.inputs, self.targets = inputs, targets
        # rows handed out so far: training throughput without a callback in the loop
        self.rows_served = 0

    def __len__(self) -> int:
        return len(self.inputs)

    def __getitem__(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.rows_served += len(index)
        return self.inputs[index], self.targets[index]


class IndexBatches(Sampler[torch.Tensor]):
    """Batches of row indices: slices of a seeded permutation (or of the row order)."""

    def __init__(
        self, rows: int, batch_size: int, shuffle: bool, seed: int = 0, rank: int = 0, world_size: int = 1
    ) -> None:
        self.rows, self.batch_size, self.shuffle = rows, batch_size, shuffle
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.epoch = 0

    def __len__(self) -> int:
        shard = len(range(self.rank, self.rows, self.world_size))
        return -(-shard // self.batch_size)

    def __iter__(self):
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(self.rows, generator=generator)
        else:
            order = torch.arange(self.rows)
        self.epoch += 1
        shard = order[self.rank :: self.world_size]
        return iter(shard.split(self.batch_size))


def keep_batch(batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """The collate step: a batch sliced by TensorTable is already stacked."""
    return batch


def encode_split(frame: pd.DataFrame, spec: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
    """Model inputs and training targets (class indices, or the standardised value)."""
    inputs = torch.from_numpy(encode_features(spec, feature_columns(frame, spec)))
    target = frame[spec["target"]]
    if spec["task"] == "classification":
        return inputs, torch.from_numpy(encode_labels(spec, target.to_numpy()))
    value = (target.to_numpy(np.float64) - spec["target_mean"]) / spec["target_std"]
    return inputs, torch.from_numpy(value.astype(np.float32))


class TableDataModule(pl.LightningDataModule):
    def __init__(
        self, processed_dir: str | Path, batch_size: int, num_workers: int = 0, seed: int | None = None
    ) -> None:
        super().__init__()
        self.seed = seed or 0
        self.processed_dir = Path(processed_dir)
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.spec: dict[str, Any] = read_json(self.processed_dir / PREPROCESSOR)
        self.tables: dict[str, TensorTable] = {}

    def setup(self, stage: str | None = None) -> None:
        for split in SPLITS:
            if split not in self.tables:
                frame = pd.read_parquet(split_file(self.processed_dir, split))
                self.tables[split] = TensorTable(*encode_split(frame, self.spec))

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        # evaluation keeps no gradients: bigger batches cost no accuracy and fewer loop steps
        batch_size = self.batch_size if shuffle else self.batch_size * EVAL_BATCH_FACTOR
        trainer = self.trainer
        rank, world_size = (trainer.global_rank, trainer.world_size) if trainer else (0, 1)
        table = self.tables[split]
        return DataLoader(
            table,
            sampler=IndexBatches(len(table), batch_size, shuffle, self.seed, rank, world_size),
            batch_size=None,
            collate_fn=keep_batch,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)
