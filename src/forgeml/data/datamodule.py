"""The LightningDataModule: processed splits encoded once into in-memory tensors.

Batches are sliced from those tensors with one indexing operation each, never assembled sample
by sample: the sampler hands out whole index tensors (slices of one permutation per epoch), so
the loader costs next to nothing beside the model. Training batches come in blocks of
`batches_per_training_step`, one block per `training_step` call (see ForgeModule).

The order of an epoch is a function of (seed, epoch) alone, so a run resumed from a checkpoint
sees the same batches as one that never stopped. In a distributed run each process takes every
`world_size`-th row of the same permutation, padded to equal shares as DistributedSampler does.
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
from forgeml.layout import PREPROCESSOR, SPLITS, split_file
from forgeml.tables import read_table

EVAL_BATCH_FACTOR = 8
Batch = tuple[torch.Tensor, torch.Tensor]


def epoch_seed(seed: int, epoch: int) -> int:
    """A seed for one epoch of one run: distinct for each (seed, epoch) pair."""
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0])


def batch_count(limit: int | float | None, available: int) -> int:
    """Lightning's `limit_*_batches` rule: None = all, an int = that many, a float = that share."""
    if limit is None:
        return available
    if isinstance(limit, float):
        return int(available * limit)
    return min(limit, available)


class TensorTable(Dataset):
    """Rows of an (inputs, targets) pair of tensors, fetched a whole batch (or block) at a time."""

    def __init__(self, inputs: torch.Tensor, targets: torch.Tensor) -> None:
        self.inputs, self.targets = inputs, targets
        # rows handed out so far: training throughput without a callback in the loop
        self.rows_served = 0

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: torch.Tensor | list[torch.Tensor]) -> Batch | list[Batch]:
        if isinstance(index, list):
            return [self[batch] for batch in index]
        self.rows_served += len(index)
        return self.rows(index)

    def rows(self, index: torch.Tensor) -> Batch:
        return self.inputs[index], self.targets[index]


class IndexBatches(Sampler):
    """Batches of row indices (slices of a seeded permutation, or of the row order), handed out
    one at a time, or `block` at a time as lists, at most `max_batches` an epoch."""

    def __init__(
        self,
        rows: int,
        batch_size: int,
        shuffle: bool,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        block: int | None = None,
        max_batches: int | float | None = None,
    ) -> None:
        self.rows, self.batch_size, self.shuffle = rows, batch_size, shuffle
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.block, self.max_batches = block, max_batches
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Lightning calls this before each epoch (as for DistributedSampler)."""
        self.epoch = epoch

    def batches(self) -> int:
        shard = -(-self.rows // self.world_size)
        return batch_count(self.max_batches, -(-shard // self.batch_size))

    def __len__(self) -> int:
        return -(-self.batches() // self.block) if self.block else self.batches()

    def __iter__(self):
        if self.shuffle:
            generator = torch.Generator().manual_seed(epoch_seed(self.seed, self.epoch))
            order = torch.randperm(self.rows, generator=generator)
        else:
            order = torch.arange(self.rows)
        padding = -self.rows % self.world_size
        if padding:
            order = torch.cat([order, order[:padding]])
        batches = order[self.rank :: self.world_size].split(self.batch_size)[: self.batches()]
        if not self.block:
            return iter(batches)
        return (list(batches[start : start + self.block]) for start in range(0, len(batches), self.block))


class DecodingTable(TensorTable):
    """Rows kept raw (image bytes) and encoded a batch at a time when fetched: with
    `data.num_workers` > 0 the DataLoader's worker processes decode, the costly part, while the
    main process trains; holding every split decoded would also take C*H*W floats per image."""

    def __init__(self, spec: dict[str, Any], columns: dict[str, np.ndarray], targets: torch.Tensor) -> None:
        self.spec, self.columns, self.targets = spec, columns, targets
        self.rows_served = 0

    def rows(self, index: torch.Tensor) -> Batch:
        rows = index.numpy()
        inputs = encode_features(self.spec, {name: column[rows] for name, column in self.columns.items()})
        return torch.from_numpy(inputs), self.targets[index]


def keep_batch(batch: Batch | list[Batch]) -> Batch | list[Batch]:
    """The collate step: a batch sliced by TensorTable is already stacked."""
    return batch


def encode_split(frame: pd.DataFrame, spec: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
    """Model inputs and training targets (class indices, or the standardised value)."""
    return torch.from_numpy(encode_features(spec, feature_columns(frame, spec))), encode_targets(frame, spec)


def split_table(frame: pd.DataFrame, spec: dict[str, Any]) -> TensorTable:
    """A split encoded once, or, with an image feature, decoded batch by batch (DecodingTable)."""
    if any(feature["type"] == "image" for feature in spec["features"]):
        return DecodingTable(spec, feature_columns(frame, spec), encode_targets(frame, spec))
    return TensorTable(*encode_split(frame, spec))


def encode_targets(frame: pd.DataFrame, spec: dict[str, Any]) -> torch.Tensor:
    """Class indices, or the standardised value."""
    target = frame[spec["target"]]
    if spec["task"] == "classification":
        return torch.from_numpy(encode_labels(spec, target.to_numpy()))
    value = (target.to_numpy(np.float64) - spec["target_mean"]) / spec["target_std"]
    return torch.from_numpy(value.astype(np.float32))


class TableDataModule(pl.LightningDataModule):
    """`limit_train_batches` counts data batches, as in Lightning; the loader applies it, since
    Lightning would count blocks."""

    def __init__(
        self,
        processed_dir: str | Path,
        batch_size: int,
        num_workers: int = 0,
        seed: int | None = None,
        batches_per_training_step: int = 1,
        limit_train_batches: int | float | None = None,
    ) -> None:
        super().__init__()
        self.seed = seed or 0
        self.processed_dir = Path(processed_dir)
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.block, self.limit_train_batches = batches_per_training_step, limit_train_batches
        self.spec: dict[str, Any] = read_json(self.processed_dir / PREPROCESSOR)
        self.tables: dict[str, TensorTable] = {}

    def setup(self, stage: str | None = None) -> None:
        for split in SPLITS:
            if split not in self.tables:
                frame = read_table(split_file(self.processed_dir, split))
                self.tables[split] = split_table(frame, self.spec)

    def _loader(self, split: str, train: bool) -> DataLoader:
        trainer = self.trainer
        rank, world_size = (trainer.global_rank, trainer.world_size) if trainer else (0, 1)
        table = self.tables[split]
        if train:
            sampler = IndexBatches(len(table), self.batch_size, True, self.seed, rank, world_size)
            sampler.block, sampler.max_batches = self.block, self.limit_train_batches
            # a resumed run fetches its first batch before Lightning calls set_epoch with this value
            sampler.set_epoch(trainer.fit_loop.epoch_progress.current.processed if trainer else 0)
        else:
            # evaluation keeps no gradients: bigger batches cost no accuracy and fewer loop steps
            sampler = IndexBatches(
                len(table), self.batch_size * EVAL_BATCH_FACTOR, False, 0, rank, world_size
            )
        return DataLoader(
            table,
            sampler=sampler,
            batch_size=None,
            collate_fn=keep_batch,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", train=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", train=False)
