"""Data larger than memory: prepare in one streaming pass, train from Parquet row groups.

`data.streaming=true` (or null, the default: on when the file is larger than
`data.streaming_above_mb`) makes the stages read the data in pyarrow batches instead of one table:

- prepare reads the CSV/Parquet source once, BATCH_ROWS rows at a time. Each row goes to
  train/val/test by a seeded hash of its row number (random, not stratified: the same seed and
  file give the same split whatever the batch size), is checked as the in-memory path checks it
  (a bad cell names its row and column) and is appended to the split's Parquet file in row groups
  of ROW_GROUP_ROWS. The preprocessing statistics accumulate over the train rows: min/max, mean
  and std (exact: Chan's parallel update), category and label counts (exact; categoricals must
  have a bounded number of values). Medians (the numeric fill values) come from a uniform sample
  of SAMPLE_ROWS train rows (bottom-k of a seeded hash): exact when the train split is no larger,
  otherwise the fill's rank lies within `median_rank_bound()` of 50% (±0.7 percentile points with
  probability ≥ 99.98% for 100,000 rows, by the Dvoretzky-Kiefer-Wolfowitz inequality). The means
  and stds count missing cells at that fill, as the in-memory path does. preprocessor.json has
  exactly the in-memory format. reference_profile.json takes its quantiles and bins from the same
  sample and its counts, means, stds, ranges and category frequencies from the whole train split.
  Types and the task are inferred from the first batch: declare `data.features` and `data.task`
  when the first rows are not representative. Nothing is written when a check fails.
- training reads the splits as an IterableDataset: each epoch the row groups are put in a seeded
  order, each DDP rank takes an equal contiguous share of that sequence (DistributedSampler's
  padding: at most one repeated row when the rows do not divide), and each DataLoader worker
  takes whole batches of its rank's share. Row groups are encoded a whole group at a time by the
  same transform the model ships with, then shuffled in a buffer of SHUFFLE_ROWS rows.
- evaluate accumulates its metrics over batches of the test split (stages/evaluate.py).
"""

from __future__ import annotations

import itertools
import math
from collections import Counter
from collections.abc import Iterator, Mapping
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from forgeml import tables
from forgeml.data.checks import TableSchema, _infer_task, _infer_type, _require_columns, missing_target_error
from forgeml.data.datamodule import EVAL_BATCH_FACTOR, TableDataModule, batch_count
from forgeml.data.preprocessing import (
    categorical_entry,
    make_spec,
    numeric_entry,
    sorted_labels,
    target_scale,
)
from forgeml.data.sources import checked_data_file
from forgeml.data.transform import MISSING_CATEGORY, encode_features, encode_labels
from forgeml.errors import ForgeError
from forgeml.io import atomic_path
from forgeml.layout import SPLITS, split_file

BATCH_ROWS = 65_536
ROW_GROUP_ROWS = 65_536
SAMPLE_ROWS = 100_000
SHUFFLE_ROWS = 262_144
# salts of the row hash: one decides the split, the other the sample
SPLIT_SALT, SAMPLE_SALT = 0x5EED, 0x5A3B1E


def median_rank_bound(sample_rows: int = SAMPLE_ROWS, failure_probability: float = 2e-4) -> float:
    """How far from 0.5 the rank of a sampled median may lie, but for `failure_probability` (DKW)."""
    return math.sqrt(math.log(2 / failure_probability) / (2 * sample_rows))


# ---------------------------------------------------------------- reading and checking batches


def read_batches(path: str | Path, batch_rows: int = BATCH_ROWS) -> Iterator[pa.RecordBatch]:
    """The data file's rows in batches; CSV cells arrive as text so that checks can name a bad cell."""
    return tables.read_batches(checked_data_file(path), batch_rows)


# the feature types a streamed prepare fits in one pass (datetime and text: read the file whole)
STREAMED_TYPES = ("numeric", "categorical")


def infer_schema(
    first: pa.RecordBatch, target: str, task: str, declared: Mapping[str, str], drop: list[str]
) -> TableSchema:
    """Feature types and task from the first batch, as check_table infers them from a whole table."""
    columns = first.schema.names
    _require_columns([target], columns, "target column (data.target)")
    _require_columns(drop, columns, "column to drop (data.drop)")
    _require_columns(list(declared), columns, "feature (data.features)")
    names = [c for c in columns if c != target and c not in drop]
    if not names:
        raise ForgeError(f"no feature columns left besides target '{target}'")
    frame = first.select([*names, target]).to_pandas()
    features = {name: declared.get(name) or _infer_type(frame[name], name) for name in names}
    for name, kind in features.items():
        if kind not in STREAMED_TYPES:
            raise ForgeError(
                f"column '{name}' is {kind}: data.streaming supports numeric and categorical features "
                f"only; read the file whole (data.streaming=false) or drop it (data.drop=[{name}])"
            )
    if task == "auto":
        task = _infer_task(_numbers_if_all_numbers(frame[target]))
    return TableSchema(features=features, target=target, task=task)


def _numbers_if_all_numbers(column: pd.Series) -> pd.Series:
    """A CSV's text target as numbers when every value is one (pandas would have read it so)."""
    if not pd.api.types.is_string_dtype(column):
        return column
    parsed = pd.to_numeric(column, errors="coerce")
    if parsed.isna().any():
        return column
    return parsed.astype("int64") if (parsed == parsed.round()).all() else parsed


def target_type(first: pa.RecordBatch, schema: TableSchema) -> pa.DataType:
    """The target's column type in the splits: as stored, numbers for CSV text, float for regression."""
    if schema.task == "regression":
        return pa.float64()
    kind = first.schema.field(schema.target).type
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        values = _numbers_if_all_numbers(first.column(schema.target).to_pandas())
        return pa.string() if pd.api.types.is_string_dtype(values) else pa.from_numpy_dtype(values.dtype)
    return kind


def check_batch(
    batch: pa.RecordBatch, schema: TableSchema, target: pa.DataType, rows: np.ndarray
) -> pa.Table:
    """The batch as the splits store it (numerics float64, categoricals text); `rows` are its
    rows' numbers in the file (1-based), so that a bad cell is named by its row."""
    labels = batch.column(schema.target)
    if labels.null_count:
        raise missing_target_error(schema.target, int(rows[pc.index(pc.is_null(labels), True).as_py()]))
    columns = [
        _as_float(batch.column(name), name, rows) if kind == "numeric" else _as_text(batch.column(name))
        for name, kind in schema.features.items()
    ]
    labels = _as_float(labels, schema.target, rows) if target == pa.float64() else _cast(labels, target)
    return pa.Table.from_arrays([*columns, labels], names=[*schema.features, schema.target])


def _as_float(column: pa.Array, name: str, rows: np.ndarray) -> pa.Array:
    try:
        return pc.cast(column, pa.float64())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        values = column.to_pandas()
        bad = (pd.to_numeric(values, errors="coerce").isna() & values.notna()).to_numpy().nonzero()[0]
        row = bad[0] if len(bad) else 0
        raise ForgeError(
            f"column '{name}' is numeric but row {rows[row]} holds {values.iloc[row]!r}; fix the "
            f"value, or declare it with 'data.features={{{name}:categorical}}'"
        ) from None


def _as_text(column: pa.Array) -> pa.Array:
    if pa.types.is_boolean(column.type):  # as pandas writes them: True/False
        return pc.if_else(column, "True", "False")
    return pc.cast(column, pa.string())


def _cast(column: pa.Array, kind: pa.DataType) -> pa.Array:
    try:
        return pc.cast(column, kind)
    except pa.ArrowInvalid as error:
        raise ForgeError(f"the target column changes type within the file: {error}") from None


def split_of_rows(rows: np.ndarray, seed: int, val_size: float, test_size: float) -> np.ndarray:
    """0 (train), 1 (val) or 2 (test) for the rows numbered `rows` (1-based): a seeded hash of the
    row number, so a row's split does not depend on which rows around it were left out."""
    draw = uniform_hash(rows.astype(np.uint64), seed, SPLIT_SALT)
    return np.where(draw < test_size, 2, np.where(draw < test_size + val_size, 1, 0))


def uniform_hash(rows: np.ndarray, seed: int, salt: int) -> np.ndarray:
    """splitmix64 of (row, seed, salt) as floats in [0, 1): independent of how rows are batched."""
    with np.errstate(over="ignore"):
        z = rows + np.uint64((seed * 0x9E3779B97F4A7C15 + salt) % 2**64)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) / 2.0**53


# ---------------------------------------------------------------- statistics of one pass


@dataclass
class Moments:
    """Count, mean, sum of squared deviations, min and max of each numeric column (NaN: missing)."""

    width: int
    present: np.ndarray = field(init=False)
    mean: np.ndarray = field(init=False)
    m2: np.ndarray = field(init=False)
    low: np.ndarray = field(init=False)
    high: np.ndarray = field(init=False)
    rows: int = 0

    def __post_init__(self) -> None:
        self.present, self.mean, self.m2 = (np.zeros(self.width) for _ in range(3))
        self.low, self.high = np.full(self.width, np.inf), np.full(self.width, -np.inf)

    def update(self, values: np.ndarray) -> None:
        """Chan et al.'s parallel update with a batch (rows x width)."""
        self.rows += len(values)
        missing = np.isnan(values)
        if missing.any():  # the slower path, only for batches with missing cells
            count = (~missing).sum(axis=0)
            present = np.where(missing, 0.0, values)
            mean = np.divide(present.sum(axis=0), count, out=np.zeros(self.width), where=count > 0)
            m2 = np.where(missing, 0.0, (values - mean) ** 2).sum(axis=0)
            low = np.where(missing, np.inf, values).min(axis=0)
            high = np.where(missing, -np.inf, values).max(axis=0)
        else:
            count = np.full(self.width, len(values))
            mean = values.mean(axis=0)
            m2 = ((values - mean) ** 2).sum(axis=0)
            low, high = values.min(axis=0), values.max(axis=0)
        merged = self.present + count
        delta = mean - self.mean
        share = np.divide(count, merged, out=np.zeros(self.width), where=merged > 0)
        self.mean = self.mean + delta * share
        self.m2 = self.m2 + m2 + delta**2 * self.present * share
        self.present = merged
        self.low, self.high = np.fmin(self.low, low), np.fmax(self.high, high)

    def filled(self, column: int, fill: float) -> tuple[float, float]:
        """Mean and std (ddof 0) of the column with its missing cells set to `fill`."""
        present, rows = self.present[column], self.rows
        missing = rows - present
        mean = (present * self.mean[column] + missing * fill) / rows
        m2 = self.m2[column] + present * missing / rows * (self.mean[column] - fill) ** 2
        return float(mean), float(math.sqrt(m2 / rows))


class Sample:
    """A uniform sample of at most `size` rows: those with the smallest hash of their row number."""

    def __init__(self, size: int, seed: int) -> None:
        self.size, self.seed = size, seed
        self.table: pa.Table | None = None
        self.keys = np.empty(0)

    def update(self, table: pa.Table, rows: np.ndarray) -> None:
        keys = uniform_hash(rows.astype(np.uint64), self.seed, SAMPLE_SALT)
        if self.table is not None and len(self.keys) >= self.size:
            keep = keys < self.keys.max()
            table, keys = table.filter(pa.array(keep)), keys[keep]
        merged = table if self.table is None else pa.concat_tables([self.table, table])
        keys = np.concatenate([self.keys, keys])
        if len(keys) > self.size:
            chosen = np.sort(np.argpartition(keys, self.size - 1)[: self.size])
            merged, keys = merged.take(pa.array(chosen)), keys[chosen]
        self.table, self.keys = merged.combine_chunks(), keys


@dataclass
class TrainStatistics:
    """What the preprocessing and the reference profile need, accumulated over the train rows."""

    schema: TableSchema
    sample: Sample
    moments: Moments = field(init=False)
    counts: dict[str, Counter] = field(init=False)
    target_moments: Moments = field(init=False)
    rows: int = 0

    def __post_init__(self) -> None:
        self.numeric = [n for n, kind in self.schema.features.items() if kind == "numeric"]
        self.moments = Moments(len(self.numeric))
        categorical = [n for n, kind in self.schema.features.items() if kind == "categorical"]
        self.counts = {name: Counter() for name in [*categorical, self.schema.target]}
        self.target_moments = Moments(1)

    def update(self, table: pa.Table, rows: np.ndarray) -> None:
        if len(table) == 0:
            return
        self.rows += len(table)
        if self.numeric:
            values = np.empty((len(table), len(self.numeric)), order="F")
            for index, name in enumerate(self.numeric):
                values[:, index] = numbers(table.column(name))
            self.moments.update(values)
        regression = self.schema.task == "regression"
        for name, counter in self.counts.items():
            if name == self.schema.target and regression:
                self.target_moments.update(numbers(table.column(name))[:, None])
                continue
            for entry in pc.value_counts(table.column(name)).to_pylist():
                value = entry["values"]
                counter[MISSING_CATEGORY if value is None else value] += entry["counts"]
        self.sample.update(table, rows)

    def preprocessor(self) -> dict[str, Any]:
        """preprocessor.json, exactly as preprocessing.fit_preprocessor writes it."""
        fills = self._fills()
        features = {}
        for name, kind in self.schema.features.items():
            if kind == "categorical":
                features[name] = categorical_entry(sorted({_category(value) for value in self.counts[name]}))
                continue
            column = self.numeric.index(name)
            mean, std = self.moments.filled(column, fills[name])
            seen = self.moments.present[column] > 0
            low, high = (float(self.moments.low[column]), float(self.moments.high[column]))
            features[name] = numeric_entry(fills[name], mean, std, *((low, high) if seen else (None, None)))
        if self.schema.task == "classification":
            return make_spec(
                self.schema, features, {"labels": sorted_labels(list(self.counts[self.schema.target]))}
            )
        return make_spec(self.schema, features, target_scale(*self.target_moments.filled(0, 0.0)))

    def frequencies(self, name: str) -> dict[str, Any]:
        """The exact count and category frequencies of categorical column `name` (or the class
        target), categories written as the in-memory path writes them."""
        merged: Counter = Counter()
        for value, count in self.counts[name].items():
            merged[_category(value)] += count
        ordered = dict(sorted(merged.items()))
        return {"count": int(sum(ordered.values())), "frequencies": ordered}

    def summary(self, name: str) -> dict[str, Any]:
        """The exact count, missing count, mean, std, min and max of numeric column `name` (or
        the regression target); count and missing only when no value is present."""
        if name == self.schema.target:
            moments, column = self.target_moments, 0
        else:
            moments, column = self.moments, self.numeric.index(name)
        present = int(moments.present[column])
        summary: dict[str, Any] = {"count": present, "missing": moments.rows - present}
        if present:
            summary |= {
                "mean": float(moments.mean[column]),
                "std": math.sqrt(moments.m2[column] / present),
                "min": float(moments.low[column]),
                "max": float(moments.high[column]),
            }
        return summary

    def _fills(self) -> dict[str, float]:
        """Numeric fill values: medians of the sample's present values (0 for an empty column)."""
        fills = {}
        for name in self.numeric:
            values = numbers(self.sample.table.column(name))
            present = values[~np.isnan(values)]
            fills[name] = float(np.median(present)) if len(present) else 0.0
        return fills


def numbers(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """A float column as float64 with NaN where missing."""
    return np.asarray(column.to_numpy(zero_copy_only=False), dtype=np.float64)


def _category(value: Any) -> str:
    """A category as the in-memory path writes it (transform.category_column: str of the value)."""
    return value if isinstance(value, str) else str(value)


# ---------------------------------------------------------------- prepare


class SplitWriter:
    """Appends checked rows to a split's Parquet file in row groups of ROW_GROUP_ROWS."""

    def __init__(self, path: Path, schema: pa.Schema, row_group_rows: int) -> None:
        # dictionaries only for text: building one for float columns costs most of the write time;
        # lz4 reads 3x faster than snappy here where floats hardly compress
        text = [f.name for f in schema if not pa.types.is_floating(f.type)]
        self.writer = pq.ParquetWriter(path, schema, use_dictionary=text, compression="lz4")
        self.pending: list[pa.Table] = []
        self.pending_rows, self.rows, self.row_group_rows = 0, 0, row_group_rows

    def write(self, table: pa.Table) -> None:
        self.pending.append(table)
        self.pending_rows += len(table)
        self.rows += len(table)
        if self.pending_rows >= self.row_group_rows:
            self._flush(whole_groups_only=True)

    def close(self) -> None:
        self._flush(whole_groups_only=False)
        self.writer.close()

    def _flush(self, whole_groups_only: bool) -> None:
        table = pa.concat_tables(self.pending) if self.pending else None
        if table is None or len(table) == 0:
            return
        cut = len(table) - len(table) % self.row_group_rows if whole_groups_only else len(table)
        self.writer.write_table(table.slice(0, cut), row_group_size=self.row_group_rows)
        rest = table.slice(cut)
        self.pending, self.pending_rows = ([rest] if len(rest) else []), len(rest)


def prepare_streaming(
    path: str | Path,
    out: Path,
    data: Mapping[str, Any],
    seed: int | None,
    batch_rows: int = BATCH_ROWS,
    row_group_rows: int = ROW_GROUP_ROWS,
    sample_rows: int = SAMPLE_ROWS,
) -> tuple[dict[str, int], TableSchema, dict[str, Any], TrainStatistics]:
    """One pass over `path`: the three splits written to `out`, plus the preprocessing and the
    statistics of the train split that its reference profile is built from
    (monitoring.profile.streamed_profile).

    Returns (rows per split, schema, preprocessor spec, train statistics); the splits replace
    any old ones only once every row has been checked.
    """
    seed = seed or 0
    batches = read_batches(path, batch_rows)
    first = next(batches, None)
    if first is None or first.num_rows == 0:
        raise ForgeError("the data has a header but no rows")
    declared = {name: getattr(kind, "value", kind) for name, kind in (data.get("features") or {}).items()}
    task = getattr(data.get("task", "auto"), "value", data.get("task", "auto"))
    schema = infer_schema(first, data["target"], task, declared, list(data.get("drop") or []))
    label_type = target_type(first, schema)
    on_missing_target = getattr(data.get("on_missing_target"), "value", data.get("on_missing_target"))
    statistics = TrainStatistics(schema, Sample(sample_rows, seed))
    with ExitStack() as stack:
        writers: dict[int, SplitWriter] = {}
        first_row = 1
        for batch in itertools.chain([first], batches):
            rows = np.arange(first_row, first_row + batch.num_rows)
            first_row += batch.num_rows
            if on_missing_target == "drop":
                batch, rows = _rows_with_target(batch, rows, schema.target)
            table = check_batch(batch, schema, label_type, rows)
            if not writers:
                for index, split in enumerate(SPLITS):
                    tmp = stack.enter_context(atomic_path(split_file(out, split)))
                    writers[index] = SplitWriter(tmp, table.schema, row_group_rows)
                    stack.callback(writers[index].writer.close)
            assignment = split_of_rows(rows, seed, data["val_size"], data["test_size"])
            for index, writer in writers.items():
                chosen = np.flatnonzero(assignment == index)
                part = table.take(pa.array(chosen))
                writer.write(part)
                if index == 0:
                    statistics.update(part, rows[chosen])
        _require_classes(statistics, schema)
        for writer in writers.values():
            writer.close()
        rows = {split: writers[index].rows for index, split in enumerate(SPLITS)}
    return rows, schema, statistics.preprocessor(), statistics


def _rows_with_target(
    batch: pa.RecordBatch, rows: np.ndarray, target: str
) -> tuple[pa.RecordBatch, np.ndarray]:
    """The batch's rows that have a target value, and their numbers (`data.on_missing_target=drop`)."""
    present = pc.is_valid(batch.column(target))
    return batch.filter(present), rows[present.to_numpy(zero_copy_only=False)]


def _require_classes(statistics: TrainStatistics, schema: TableSchema) -> None:
    if statistics.rows == 0:
        raise ForgeError("no rows went to the train split: the data is too small for these split sizes")
    labels = statistics.counts[schema.target]
    if schema.task == "classification" and len(labels) < 2:
        raise ForgeError(
            f"target column '{schema.target}' has a single class ({next(iter(labels))!r}) in the train "
            "split; classification needs at least two"
        )


# ---------------------------------------------------------------- training


@dataclass(frozen=True)
class Piece:
    """Rows [start, stop) of one row group."""

    row_group: int
    start: int
    stop: int


def pieces_of(sizes: np.ndarray, order: np.ndarray, start: int, stop: int) -> list[Piece]:
    """Rows [start, stop) of the row groups laid end to end in `order`; past the end it wraps
    around to the beginning (the padding that gives every rank the same number of rows)."""
    total = int(sizes.sum())
    ends = np.cumsum(sizes[order])
    pieces = []
    position = start
    while position < stop:
        at = position % total
        slot = int(np.searchsorted(ends, at, side="right"))
        group_start = int(ends[slot] - sizes[order[slot]])
        take = min(stop - position, int(ends[slot]) - at)
        pieces.append(Piece(int(order[slot]), at - group_start, at - group_start + take))
        position += take
    return pieces


def shard_rows(total: int, batch: int, rank: int, world: int, worker: int, workers: int) -> tuple[int, int]:
    """The rows one worker of one rank reads: each rank an equal share (padded), each worker whole
    batches of its rank's share, so every rank takes the same number of steps."""
    per_rank = ceil_div(total, world)
    batches = ceil_div(per_rank, batch)
    base, extra = divmod(batches, workers)
    first_batch = worker * base + min(worker, extra)
    mine = base + (worker < extra)
    begin = rank * per_rank + first_batch * batch
    end = rank * per_rank + min((first_batch + mine) * batch, per_rank)
    return begin, max(begin, end)


def encode_table(table: pa.Table, spec: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """datamodule.encode_split for an Arrow table, as numpy: columns go to the transform without
    pandas, and the rows are shuffled in numpy (whose gather is several times faster than torch's)."""
    columns = {
        f["name"]: numbers(table[f["name"]])
        if f["type"] == "numeric"
        else table[f["name"]].to_numpy(zero_copy_only=False)
        for f in spec["features"]
    }
    inputs = encode_features(spec, columns)
    target = table[spec["target"]].to_numpy(zero_copy_only=False)
    if spec["task"] == "classification":
        # each distinct label looked up once: text conversion per row costs more than the rest
        distinct, index = np.unique(target, return_inverse=True)
        return inputs, encode_labels(spec, distinct)[index]
    value = (target.astype(np.float64) - spec["target_mean"]) / spec["target_std"]
    return inputs, value.astype(np.float32)


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


class StreamingSplit(IterableDataset):
    """Batches of (inputs, targets) read from one split's Parquet row groups."""

    def __init__(
        self, path: Path, spec: dict[str, Any], batch_size: int, shuffle: bool, seed: int = 0
    ) -> None:
        self.path, self.spec, self.batch_size, self.shuffle, self.seed = path, spec, batch_size, shuffle, seed
        metadata = pq.ParquetFile(path).metadata
        self.sizes = np.array([metadata.row_group(i).num_rows for i in range(metadata.num_row_groups)])
        self.rows = int(self.sizes.sum())
        self.columns = [f["name"] for f in spec["features"]] + [spec["target"]]
        self.rank, self.world_size, self.epoch = 0, 1, 0
        self.shuffle_rows = SHUFFLE_ROWS
        # rows handed out so far, counted in the main process (see CountingLoader)
        self.rows_served = 0

    def __len__(self) -> int:
        """Batches per epoch on this rank."""
        return ceil_div(ceil_div(self.rows, self.world_size), self.batch_size)

    def order(self) -> np.ndarray:
        if not self.shuffle:
            return np.arange(len(self.sizes))
        return np.random.default_rng([self.seed, self.epoch]).permutation(len(self.sizes))

    def shard(self, worker: int, workers: int) -> list[Piece]:
        begin, end = shard_rows(self.rows, self.batch_size, self.rank, self.world_size, worker, workers)
        return pieces_of(self.sizes, self.order(), begin, end)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        pieces = self.shard(worker, workers)
        generator = np.random.default_rng([self.seed, self.epoch, worker])
        file = tables.open_parquet(self.path)
        held: list[tuple[np.ndarray, np.ndarray]] = []
        held_rows = 0
        for piece in pieces:
            rows = file.read_row_group(piece.row_group, columns=self.columns, use_threads=False)
            held.append(encode_table(rows.slice(piece.start, piece.stop - piece.start), self.spec))
            held_rows += piece.stop - piece.start
            if held_rows >= self.shuffle_rows:
                held, held_rows = yield from self._batches(held, generator, final=False)
        yield from self._batches(held, generator, final=True)

    def _batches(self, held: list, generator: np.random.Generator, final: bool):
        """Whole batches of the held rows, shuffled together; the rest stays held (unless final)."""
        if not held:
            return [], 0
        inputs = np.concatenate([h[0] for h in held])
        targets = np.concatenate([h[1] for h in held])
        if self.shuffle:
            order = generator.permutation(len(inputs))
            inputs, targets = inputs.take(order, axis=0), targets.take(order)
        whole = len(inputs) if final else len(inputs) - len(inputs) % self.batch_size
        for start in range(0, whole, self.batch_size):
            stop = min(start + self.batch_size, whole)
            yield torch.from_numpy(inputs[start:stop]), torch.from_numpy(targets[start:stop])
        rest = (inputs[whole:], targets[whole:])
        return ([rest] if len(rest[0]) else []), len(rest[0])


class CountingLoader(DataLoader):
    """A DataLoader that counts the rows it hands out and numbers the epochs of its dataset.

    Both happen in the main process: workers hold copies of the dataset, made afresh each epoch
    (no persistent workers) so that they see the epoch's row-group order. For training it hands
    out at most `max_batches` batches (Lightning's `limit_train_batches` rule), `block` at a time
    as lists, as the in-memory loader does (one block per `training_step`, see ForgeModule).
    """

    def __init__(
        self,
        dataset: StreamingSplit,
        block: int | None = None,
        max_batches: int | float | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(dataset, **kwargs)
        self.block, self.max_batches = block, max_batches
        self.epochs_started = 0

    def batches(self) -> int:
        return batch_count(self.max_batches, len(self.dataset))

    def __len__(self) -> int:
        return ceil_div(self.batches(), self.block) if self.block else self.batches()

    def __iter__(self) -> Iterator[Any]:
        dataset: StreamingSplit = self.dataset
        dataset.epoch = self.epochs_started
        self.epochs_started += 1
        batches = self.counted(dataset)
        if not self.block:
            yield from batches
            return
        block: list[tuple[torch.Tensor, torch.Tensor]] = []
        for batch in batches:
            block.append(batch)
            if len(block) == self.block:
                yield block
                block = []
        if block:
            yield block

    def counted(self, dataset: StreamingSplit) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for served, batch in enumerate(super().__iter__()):
            if served == self.batches():
                break
            dataset.rows_served += len(batch[1])
            yield batch


class StreamingDataModule(TableDataModule):
    """The splits as StreamingSplit datasets: nothing is loaded beyond a shuffle buffer per worker
    (the same settings as TableDataModule; its batches come from Parquet row groups instead)."""

    def setup(self, stage: str | None = None) -> None:
        for split in SPLITS:
            if split not in self.tables:
                shuffle = split == "train"
                batch = self.batch_size if shuffle else self.batch_size * EVAL_BATCH_FACTOR
                path = split_file(self.processed_dir, split)
                self.tables[split] = StreamingSplit(path, self.spec, batch, shuffle, self.seed)

    def _loader(self, split: str, **training: Any) -> DataLoader:
        dataset = self.tables[split]
        trainer = self.trainer
        dataset.rank, dataset.world_size = (trainer.global_rank, trainer.world_size) if trainer else (0, 1)
        return CountingLoader(dataset, batch_size=None, num_workers=self.num_workers, **training)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", block=self.block, max_batches=self.limit_train_batches)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")
