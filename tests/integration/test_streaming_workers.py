"""The row-group-sharded dataset read by data-loader worker processes on every rank: each row once
an epoch, the same number of steps on every rank."""

from __future__ import annotations

import torch

from tests.helpers.streaming import epoch_rows, id_split


def test_an_epoch_reads_every_row_once_across_two_ranks_and_two_workers(tmp_path):
    split = id_split(tmp_path, rows=10_000, row_group_size=700, batch=64)
    batches = {rank: epoch_rows(split, rank, world=2, workers=2) for rank in (0, 1)}
    seen = torch.cat([torch.cat(b) for b in batches.values()]).long().sort().values
    assert torch.equal(seen, torch.arange(10_000))
    # the same number of steps on every rank (DDP would hang otherwise), and as announced
    assert len(batches[0]) == len(batches[1]) == len(split)
    # shuffled: neither the file's order nor one row group at a time
    first = batches[0][0]
    assert not torch.equal(first, first.sort().values)
    assert len(set((first // 700).tolist())) > 1


def test_ranks_with_rows_that_do_not_divide_take_equal_steps_with_one_padded_row(tmp_path):
    split = id_split(tmp_path, rows=1001, row_group_size=100, batch=50)
    batches = {rank: epoch_rows(split, rank, world=2, workers=3) for rank in (0, 1)}
    assert len(batches[0]) == len(batches[1]) == len(split)
    seen = torch.cat([torch.cat(b) for b in batches.values()]).long()
    assert set(seen.tolist()) == set(range(1001))
    assert len(seen) == 1002
