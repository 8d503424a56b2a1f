"""Parquet files in row groups and a sharded split whose only feature is the row's number, so that
the batches an epoch yields say which rows they hold."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from torch.utils.data import DataLoader

from forgeml.data.streaming import StreamingSplit

ID_SPEC = {
    "format": "forgeml.preprocessor/1",
    "task": "regression",
    "target": "y",
    "features": [{"name": "id", "type": "numeric", "fill": 0.0, "mean": 0.0, "std": 1.0}],
    "input_dim": 1,
    "target_mean": 0.0,
    "target_std": 1.0,
}


def write_parquet(frame: pd.DataFrame, path: Path, row_group_size: int = 4096) -> Path:
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), path, row_group_size=row_group_size)
    return path


def id_split(
    tmp_path: Path, rows: int, row_group_size: int, batch: int, shuffle: bool = True
) -> StreamingSplit:
    """A split whose only feature is the row's number, so batches say which rows they hold."""
    ids = np.arange(rows, dtype=np.float64)
    path = write_parquet(pd.DataFrame({"id": ids, "y": ids}), tmp_path / "train.parquet", row_group_size)
    split = StreamingSplit(path, ID_SPEC, batch, shuffle=shuffle, seed=7)
    split.shuffle_rows = 3 * row_group_size
    return split


def epoch_rows(split: StreamingSplit, rank: int, world: int, workers: int) -> list[torch.Tensor]:
    split.rank, split.world_size = rank, world
    loader = DataLoader(split, batch_size=None, num_workers=workers)
    return [inputs[:, 0] for inputs, _ in loader]
