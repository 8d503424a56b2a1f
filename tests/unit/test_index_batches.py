"""The training sampler: an epoch's order depends on (seed, epoch) alone; distributed shares are
equal (a rank with one batch more would wait for the others forever); blocks and limits count batches."""

from __future__ import annotations

import torch

from forgeml.data.datamodule import IndexBatches


def rows_of(sampler: IndexBatches) -> list[int]:
    return torch.cat(list(sampler)).tolist()


def test_epoch_order_depends_on_seed_and_epoch_only():
    first, later = IndexBatches(100, 10, shuffle=True, seed=3), IndexBatches(100, 10, shuffle=True, seed=3)
    list(later)  # iterating does not move the order on: Lightning's set_epoch does
    first.set_epoch(4)
    later.set_epoch(4)
    assert rows_of(first) == rows_of(later)
    later.set_epoch(5)
    assert rows_of(first) != rows_of(later)
    assert sorted(rows_of(later)) == list(range(100))


def test_ranks_get_equal_shares_of_one_permutation():
    shares = [IndexBatches(101, 8, shuffle=True, seed=0, rank=rank, world_size=4) for rank in range(4)]
    assert {len(share) for share in shares} == {4}
    assert {len(rows_of(share)) for share in shares} == {26}
    assert set().union(*(rows_of(share) for share in shares)) == set(range(101))


def test_blocks_group_batches_and_limits_count_batches():
    sampler = IndexBatches(100, 10, shuffle=False, block=4, max_batches=9)
    blocks = list(sampler)
    assert [len(block) for block in blocks] == [4, 4, 1] and len(sampler) == 3
    assert torch.cat([torch.cat(block) for block in blocks]).tolist() == list(range(90))
    assert IndexBatches(100, 10, shuffle=False, max_batches=0.5).batches() == 5
