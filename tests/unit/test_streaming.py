"""Streaming prepare and the row-group-sharded dataset (data.streaming=true), on small files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch

from forgeml.data.checks import check_table
from forgeml.data.preprocessing import fit_preprocessor
from forgeml.data.sources import streaming_enabled
from forgeml.data.streaming import (
    CountingLoader,
    median_rank_bound,
    prepare_streaming,
)
from forgeml.errors import ForgeError
from forgeml.monitoring.profile import build_profile, streamed_profile
from tests.helpers.streaming import epoch_rows, id_split, write_parquet

ROWS = 20_000
DATA = {"target": "label", "task": "auto", "features": {}, "drop": [], "val_size": 0.15, "test_size": 0.15}


def mixed_table(rows: int = ROWS, seed: int = 0) -> pd.DataFrame:
    """Numeric columns with missing cells, a categorical with missing cells, a learnable label."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({f"x{i}": rng.normal(i, 1 + i, rows) for i in range(4)})
    frame.loc[rng.random(rows) < 0.1, "x1"] = np.nan
    frame["city"] = rng.choice(["berlin", "paris", "rome", None], rows)
    frame["label"] = np.where(frame["x0"] + (frame["city"] == "rome") > 0.5, "yes", "no")
    return frame


def in_memory_fit(out: Path) -> tuple[dict, dict]:
    """What the in-memory path fits on the very rows the streaming prepare put in train."""
    train, schema = check_table(pd.read_parquet(out / "train.parquet"), "label")
    return fit_preprocessor(train, schema), build_profile(train, schema)


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_streaming_prepare_fits_the_in_memory_statistics(tmp_path, suffix):
    source = tmp_path / f"data{suffix}"
    frame = mixed_table()
    write_parquet(frame, source) if suffix == ".parquet" else frame.to_csv(source, index=False)
    out = tmp_path / "processed"
    rows, _, spec, statistics = prepare_streaming(source, out, DATA, seed=3, batch_rows=3000)
    profile = streamed_profile(statistics)
    assert sum(rows.values()) == ROWS
    assert rows == {split: pq.ParquetFile(out / f"{split}.parquet").metadata.num_rows for split in rows}
    expected, expected_profile = in_memory_fit(out)
    # the sample holds every train row here: medians too are exact
    assert spec.keys() == expected.keys()
    for got, want in zip(spec["features"], expected["features"], strict=True):
        assert got.keys() == want.keys()
        for key, value in want.items():
            assert got[key] == (pytest.approx(value, rel=1e-9) if isinstance(value, float) else value), key
    assert spec["labels"] == expected["labels"] == ["no", "yes"]
    assert {key: spec[key] for key in ("format", "task", "target", "input_dim")} == {
        key: expected[key] for key in ("format", "task", "target", "input_dim")
    }
    for name, sketch in expected_profile["features"].items():
        for key in ("count", "missing", "mean", "std", "min", "max", "frequencies"):
            if key in sketch:
                assert profile["features"][name][key] == pytest.approx(sketch[key], rel=1e-9), (name, key)
    assert profile["target"]["frequencies"] == expected_profile["target"]["frequencies"]


def test_sampled_medians_stay_within_the_documented_rank_bound(tmp_path):
    source = write_parquet(mixed_table(), tmp_path / "data.parquet")
    out = tmp_path / "processed"
    sample_rows = 1000
    _, _, spec, _ = prepare_streaming(source, out, DATA, seed=3, batch_rows=3000, sample_rows=sample_rows)
    expected, _ = in_memory_fit(out)
    train = pd.read_parquet(out / "train.parquet")
    bound = median_rank_bound(sample_rows)
    for got, want in zip(spec["features"], expected["features"], strict=True):
        if got["type"] != "numeric":
            continue
        present = train[got["name"]].dropna().to_numpy()
        rank = (present < got["fill"]).mean()
        assert abs(rank - 0.5) <= bound, (got["name"], rank, bound)
        assert got["fill"] != want["fill"]  # a real sample, not the whole column
        # mean and std count missing cells at the sampled fill, exactly
        filled = train[got["name"]].fillna(got["fill"]).to_numpy()
        assert got["mean"] == pytest.approx(filled.mean(), rel=1e-9)
        assert got["std"] == pytest.approx(filled.std(), rel=1e-9)


def test_split_depends_on_the_seed_not_on_the_batch_size(tmp_path):
    source = write_parquet(mixed_table(5000), tmp_path / "data.parquet")
    splits = {}
    for seed, batch_rows in ((1, 700), (1, 5000), (2, 700)):
        out = tmp_path / f"out-{seed}-{batch_rows}"
        prepare_streaming(source, out, DATA, seed=seed, batch_rows=batch_rows)
        splits[seed, batch_rows] = pd.read_parquet(out / "test.parquet")
    pd.testing.assert_frame_equal(splits[1, 700], splits[1, 5000])
    assert not splits[1, 700].equals(splits[2, 700])


def test_bad_cell_in_a_late_batch_names_row_and_column_and_writes_nothing(tmp_path):
    frame = mixed_table().astype({"x2": object})
    frame.loc[17_654, "x2"] = "12,5"
    source = tmp_path / "data.csv"
    frame.to_csv(source, index=False)
    out = tmp_path / "processed"
    out.mkdir()
    (out / "train.parquet").write_bytes(b"the previous split")
    with pytest.raises(ForgeError, match=r"column 'x2' is numeric but row 17655 holds '12,5'"):
        prepare_streaming(source, out, DATA, seed=0, batch_rows=1000)
    assert sorted(p.name for p in out.iterdir()) == ["train.parquet"]
    assert (out / "train.parquet").read_bytes() == b"the previous split"


def test_empty_target_in_a_late_batch_names_the_row(tmp_path):
    frame = mixed_table()
    frame.loc[12_000, "label"] = None
    source = write_parquet(frame, tmp_path / "data.parquet")
    with pytest.raises(ForgeError, match=r"target column 'label' is empty in row 12001"):
        prepare_streaming(source, tmp_path / "processed", DATA, seed=0, batch_rows=1000)


def test_streaming_turns_itself_on_above_the_size_threshold_unless_set(tmp_path):
    source = tmp_path / "data.csv"
    mixed_table(500).to_csv(source, index=False)
    size_mb = source.stat().st_size / 2**20
    assert streaming_enabled({"streaming": None, "streaming_above_mb": size_mb / 2}, source)
    assert not streaming_enabled({"streaming": None, "streaming_above_mb": size_mb * 2}, source)
    assert not streaming_enabled({"streaming": False, "streaming_above_mb": 0}, source)
    assert streaming_enabled({"streaming": True, "streaming_above_mb": 1e9}, source)
    assert not streaming_enabled({"streaming": None, "streaming_above_mb": 0}, None)


def test_streaming_a_bundled_dataset_is_refused_naming_what_to_set(make_config):
    from forgeml.stages import prepare

    with pytest.raises(ForgeError, match=r"data.streaming=true reads a file: use data=csv data.path="):
        prepare.run(make_config("data.streaming=true"))


# ---------------------------------------------------------------- the sharded dataset


def test_each_epoch_has_its_own_order_and_the_same_rows(tmp_path):
    split = id_split(tmp_path, rows=3000, row_group_size=250, batch=100)
    loader = CountingLoader(split, batch_size=None, num_workers=0)
    epochs = [torch.cat([inputs[:, 0] for inputs, _ in loader]) for _ in range(2)]
    assert not torch.equal(epochs[0], epochs[1])
    assert torch.equal(epochs[0].sort().values, epochs[1].sort().values)
    assert split.rows_served == 6000


def test_evaluation_order_is_the_file_order(tmp_path):
    split = id_split(tmp_path, rows=1000, row_group_size=128, batch=300, shuffle=False)
    rows = torch.cat(epoch_rows(split, rank=0, world=1, workers=0))
    assert torch.equal(rows.long(), torch.arange(1000))


@pytest.mark.parametrize("classes", [2, 3])
def test_binned_auroc_matches_the_exact_auroc(classes):
    from torchmetrics.functional import auroc

    from forgeml.models.streamed_evaluation import BinnedROC

    generator = torch.Generator().manual_seed(0)
    targets = torch.randint(0, classes, (20_000,), generator=generator)
    logits = torch.randn(20_000, classes, generator=generator) + 1.5 * torch.nn.functional.one_hot(targets)
    probabilities = logits.softmax(-1)
    roc = BinnedROC(classes)
    for chunk in range(0, 20_000, 3000):  # accumulated batch by batch
        roc.update(probabilities[chunk : chunk + 3000].numpy(), targets[chunk : chunk + 3000].numpy())
    if classes == 2:
        exact = auroc(probabilities[:, 1], targets, task="binary")
    else:
        exact = auroc(probabilities, targets, task="multiclass", num_classes=classes, average="macro")
    assert roc.auroc() == pytest.approx(exact.item(), abs=1e-3)
