"""Which LightningDataModule a training run reads its splits with."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytorch_lightning as pl

from forgeml.data.datamodule import TableDataModule
from forgeml.data.sources import streaming_enabled
from forgeml.data.streaming import StreamingDataModule
from forgeml.layout import split_file


def build_datamodule(
    processed_dir: str | Path, data: Any, seed: int | None, **training: Any
) -> pl.LightningDataModule:
    """In-memory tensors, or row groups streamed from Parquet when `data.streaming` says so.
    `training`: batches_per_training_step and limit_train_batches (see TableDataModule)."""
    if streaming_enabled(data, split_file(processed_dir, "train")):
        return StreamingDataModule(processed_dir, data.batch_size, data.num_workers, seed, **training)
    return TableDataModule(processed_dir, data.batch_size, data.num_workers, seed=seed, **training)
