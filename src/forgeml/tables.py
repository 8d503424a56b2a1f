"""Tables on disk: CSV or Parquet, chosen by the file's suffix, read and written whole or in batches.

Every reader and writer of a table (prepare's source, the splits, `forgeml predict`'s input and
output, `forgeml monitor`'s current data and labels, `forgeml init`'s data) comes here, so that
they agree on what a suffix means and refuse any other suffix alike, naming the file.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from forgeml.errors import ForgeError
from forgeml.io import atomic_path

CSV, PARQUET = "csv", "parquet"
FORMATS = {".csv": CSV, ".parquet": PARQUET, ".pq": PARQUET}
BATCH_ROWS = 65_536
CSV_BLOCK_BYTES = 16 << 20
PARQUET_BUFFER_BYTES = 1 << 20
# the types a CSV column may be given, narrowest first (narrowest_types); text holds any cell
TEXT_TYPES = (pa.int64(), pa.float64(), pa.bool_(), pa.string())
# Parquet integers and booleans as pandas' nullable types (read_frames)
NULLABLE = {
    arrow: pandas()
    for arrow, pandas in [
        (pa.int8(), pd.Int8Dtype),
        (pa.int16(), pd.Int16Dtype),
        (pa.int32(), pd.Int32Dtype),
        (pa.int64(), pd.Int64Dtype),
        (pa.uint8(), pd.UInt8Dtype),
        (pa.uint16(), pd.UInt16Dtype),
        (pa.uint32(), pd.UInt32Dtype),
        (pa.uint64(), pd.UInt64Dtype),
        (pa.bool_(), pd.BooleanDtype),
    ]
}


def table_format(path: str | Path, key: str | None = None) -> str:
    """CSV or PARQUET, by `path`'s suffix; another suffix is an error naming the file (and the
    config key or option `key` that gave it)."""
    found = FORMATS.get(Path(path).suffix.lower())
    if found is None:
        where = f"{key}: " if key else ""
        raise ForgeError(f"{where}{path}: expected a CSV or Parquet file ({', '.join(FORMATS)})")
    return found


def read_table(
    path: str | Path,
    columns: list[str] | None = None,
    csv_types: Mapping[str, Any] | None = None,
    key: str | None = None,
) -> pd.DataFrame:
    """The whole table (or its `columns`). Parquet columns keep their types, one block each
    (pandas' own reader copies same-typed columns into one block: a second pass over every
    value), read from the file memory-mapped (read into fresh buffers instead, a table of
    300 MB cost a new process half a second of page faults); CSV columns are typed by
    `csv_types` where given, else inferred over the whole column (never chunk by chunk, which
    warns of mixed types)."""
    path = Path(path)
    if table_format(path, key) == PARQUET:
        with _readable(path):
            table = pq.read_table(path, columns=columns, memory_map=True)
        return table.to_pandas(split_blocks=True, self_destruct=True)
    with _readable(path):
        return pd.read_csv(path, usecols=columns, dtype=csv_types, low_memory=False)


def leading_rows(path: str | Path, rows: int | None) -> pd.DataFrame:
    """The first `rows` rows of a table (None: all of it), read without the rest."""
    path = Path(path)
    if rows is None:
        return read_table(path)
    if table_format(path) == CSV:
        with _readable(path):
            return pd.read_csv(path, nrows=rows, low_memory=False)
    with _readable(path):
        parquet = pq.ParquetFile(path)
        first = next(parquet.iter_batches(batch_size=rows), None)
    return (first or parquet.schema_arrow.empty_table()).to_pandas()


def read_header(path: str | Path) -> list[str]:
    """The table's column names, without reading its rows."""
    path = Path(path)
    if table_format(path) == CSV:
        with _readable(path):
            return [str(column) for column in pd.read_csv(path, nrows=0).columns]
    with _readable(path):
        return [str(name) for name in pq.read_schema(path).names]


def read_frames(path: str | Path, batch_rows: int = BATCH_ROWS) -> Iterator[pd.DataFrame]:
    """The table's rows in frames of `batch_rows` (at least one frame, empty for no rows), as the
    file holds them: CSV cells as text (missing ones NaN), since a type inferred frame by frame
    differs between frames (an integer column with a gap in one frame is float there); Parquet
    columns in the file's types, integers and booleans as pandas' nullable types, so that a
    missing value does not turn them into floats or objects."""
    path = Path(path)
    if table_format(path) == PARQUET:
        with _readable(path):
            parquet = open_parquet(path)
        batches = parquet.iter_batches(batch_size=batch_rows)
        yield next(batches, parquet.schema_arrow.empty_table()).to_pandas(types_mapper=NULLABLE.get)
        for batch in batches:
            yield batch.to_pandas(types_mapper=NULLABLE.get)
        return
    with _readable(path):
        yield from pd.read_csv(path, chunksize=batch_rows, encoding="utf-8", dtype=str)


def parquet_types(path: str | Path) -> dict[str, pa.DataType]:
    """The Arrow type of each column of a Parquet file, without reading its rows."""
    with _readable(Path(path)):
        return {field.name: field.type for field in pq.read_schema(path)}


def narrowest_types(frames: Iterable[pd.DataFrame]) -> dict[str, pa.DataType]:
    """For each column of `frames` of text (a CSV file's, as read_frames gives them), the
    narrowest of TEXT_TYPES that holds every cell in every frame, so that each frame casts to
    it; text for a column with no value at all."""
    narrowest: dict[str, int] = {}
    filled: set[str] = set()
    for frame in frames:
        for name in frame.columns:
            cells = pa.array(frame[name], from_pandas=True)
            at = narrowest.setdefault(name, 0)
            while not _casts(cells, TEXT_TYPES[at]):
                at += 1
            narrowest[name] = at
            if cells.null_count < len(cells):
                filled.add(name)
    return {name: TEXT_TYPES[at] if name in filled else pa.string() for name, at in narrowest.items()}


def _casts(cells: pa.Array, to: pa.DataType) -> bool:
    try:
        cells.cast(to)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return False
    return True


def read_batches(path: str | Path, batch_rows: int = BATCH_ROWS) -> Iterator[pa.RecordBatch]:
    """The table's rows in Arrow batches; CSV cells arrive as text, so that checks can name a
    bad cell."""
    path = Path(path)
    if table_format(path) == PARQUET:
        with _readable(path):
            parquet = open_parquet(path)
        yield from parquet.iter_batches(batch_size=batch_rows)
        return
    read = pa_csv.ReadOptions(block_size=CSV_BLOCK_BYTES)
    with _readable(path):
        names = pa_csv.open_csv(path, read_options=read).schema.names
        text = pa_csv.ConvertOptions(column_types=dict.fromkeys(names, pa.string()), strings_can_be_null=True)
        yield from pa_csv.open_csv(path, read_options=read, convert_options=text)


def open_parquet(path: str | Path) -> pq.ParquetFile:
    """A Parquet file read in bounded memory: with pre-buffering (pyarrow's default) the reader
    keeps every row group it has read until it is closed, so memory grows with the file."""
    return pq.ParquetFile(path, pre_buffer=False, buffer_size=PARQUET_BUFFER_BYTES)


def write_table(frame: pd.DataFrame, path: str | Path) -> None:
    """The whole frame, atomically, without its index."""
    path = Path(path)
    csv = table_format(path) == CSV
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False) if csv else frame.to_parquet(tmp, index=False)


class TableWriter:
    """Appends frames to one CSV or Parquet file. Parquet columns take the `types` given, the
    others the first frame's; a frame's column is cast to its type (text to numbers, say), and
    a column that does not fit is named."""

    def __init__(self, path: str | Path, types: Mapping[str, pa.DataType] | None = None):
        self.path, self.types = Path(path), dict(types or {})
        self.parquet = table_format(self.path) == PARQUET
        self.schema: pa.Schema | None = None
        self.writer: pq.ParquetWriter | None = None
        self.wrote_header = False

    def __enter__(self) -> TableWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.writer is not None:
            self.writer.close()

    def write(self, frame: pd.DataFrame) -> None:
        if not self.parquet:
            frame.to_csv(self.path, mode="a", header=not self.wrote_header, index=False)
            self.wrote_header = True
            return
        if self.writer is None:
            inferred = pa.Schema.from_pandas(frame, preserve_index=False)
            self.schema = pa.schema([pa.field(f.name, self.types.get(f.name, f.type)) for f in inferred])
            self.writer = pq.ParquetWriter(self.path, self.schema)
        arrays = []
        for column in self.schema:
            try:
                arrays.append(pa.array(frame[column.name], from_pandas=True).cast(column.type))
            except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as error:
                raise ForgeError(
                    f"column {column.name!r} changes type between chunks of the input (it began as "
                    f"{column.type}): {error}; write CSV, or give the column one type"
                ) from None
        self.writer.write_table(pa.Table.from_arrays(arrays, schema=self.schema))


@contextlib.contextmanager
def _readable(path: Path) -> Iterator[None]:
    """Reading `path`: a missing file, no header, a parse error, bytes that are not UTF-8 or a
    broken Parquet file are errors naming it."""
    try:
        yield
    except FileNotFoundError:
        raise ForgeError(f"{path} not found") from None
    except pd.errors.EmptyDataError:
        raise ForgeError(f"{path} is empty: expected a header line and rows") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as error:
        raise ForgeError(f"cannot parse {path} as CSV: {error}") from None
    except (pa.ArrowInvalid, OSError) as error:
        if table_format(path) == CSV:
            raise ForgeError(f"cannot parse {path} as CSV: {error}") from None
        raise ForgeError(f"{path}: not a readable Parquet file ({error})") from None
