"""The inference log, read back as one table, and other sources of current data.

The serving handler appends a sample of its requests to JSON Lines files under `monitor.log_dir`,
one file per worker (rotated: worker-<pid>.jsonl, worker-<pid>.1.jsonl, ...), one object a line:

    {"ts": "2025-06-01T12:00:00.123Z", "model": "breast_cancer", "version": "3",
     "latency_ms": 1.7, "id": "5f0c…", "sample_rate": 0.1, "seen": 12,
     "input": {"mean radius": 14.2, ...}, "prediction": 1, "probabilities": {"0": 0.1, "1": 0.9}}

(`sample_rate` and `seen`, the records its worker answered since its previous logged one, are
missing from logs written before they were; decay.traffic reads them where present)

and a line `{"ts": ..., "model": ..., "version": ..., "rejected": reason}` per refused request.

`read_current` returns one row per record: a column per input feature (raw values as received)
plus ts (UTC), model, version, latency_ms, id, sample_rate, seen, prediction and rejected, and a column
`probability_<class>` per class (contract.probability_column, as `forgeml predict` names
them), ordered by ts. Files are parsed by
pyarrow's multithreaded JSON reader. A rotated file (closed: the handler never writes it again)
is parsed once: its table is kept in log_dir/.segment-cache/ (SegmentCache) and read from there
by every later run, so a growing log costs each run the parse of its live files only. A last line without its
newline (a worker stopped mid-write) is skipped if it is not valid JSON; a file with a corrupt
line falls back to parsing line by line, skipping only the bad lines.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import re
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.feather as feather
import pyarrow.json as pa_json

from forgeml.contract import PROBABILITY_PREFIX
from forgeml.errors import ForgeError
from forgeml.io import atomic_path
from forgeml.tables import FORMATS, read_table

log = logging.getLogger(__name__)

JSONL_SUFFIXES = (".jsonl", ".json")
RECORD_FIELDS = (
    "ts",
    "model",
    "version",
    "latency_ms",
    "id",
    "sample_rate",
    "seen",
    "prediction",
    "rejected",
)
# the first lines of a log file (this many bytes) give the types of its fields
SCHEMA_SAMPLE_BYTES = 1 << 20
# a rotated file, worker-<pid>.<n>.jsonl, is closed: the handler never appends to it again
CLOSED_SEGMENT = re.compile(r"\.\d+\.jsonl$")
# where closed segments are kept as Arrow tables (SegmentCache), inside the log directory
SEGMENT_CACHE = ".segment-cache"
# part of every segment's fingerprint: a new format (another parse) never reads an old copy
CACHE_FORMAT = b"forgeml.segment/1"
# bytes of each end of a segment that its fingerprint hashes, with its size and mtime
FINGERPRINT_BYTES = 1 << 16


def read_current(source: str | Path) -> pd.DataFrame:
    """A directory of JSONL logs, one .jsonl file, or a CSV/Parquet table (with its own columns)."""
    source = Path(source)
    if source.is_dir():
        return read_inference_log(source)
    if not source.is_file():
        raise ForgeError(f"monitor.current: {source} does not exist (a CSV, Parquet or JSONL file/dir)")
    if source.suffix.lower() in JSONL_SUFFIXES:
        return order_by_time(read_jsonl(source))
    if source.suffix.lower() not in FORMATS:
        raise ForgeError(
            f"monitor.current: cannot read {source}; use {', '.join((*FORMATS, *JSONL_SUFFIXES))} "
            "or a directory"
        )
    return read_table(source, key="monitor.current")


def read_inference_log(log_dir: str | Path) -> pd.DataFrame:
    """Every *.jsonl file under `log_dir` (all workers, rotated files too); empty if none yet.
    Closed segments come from their copies as Arrow tables (SegmentCache); live files are parsed.
    The files' tables become one before pandas sees them (one conversion, not one per file),
    unless their fields are typed differently (a label as a number here, as text there)."""
    cache = SegmentCache(Path(log_dir) / SEGMENT_CACHE)
    parts = [
        read_jsonl_table(path, cache if CLOSED_SEGMENT.search(path.name) else None)
        for path in sorted(Path(log_dir).rglob("*.jsonl"))
    ]
    cache.prune()
    tables = [part for part in parts if isinstance(part, pa.Table) and part.num_rows]
    # fields typed differently in two files stay apart: pandas unifies them (as objects)
    with contextlib.suppress(pa.ArrowInvalid, pa.ArrowTypeError):
        tables = [pa.concat_tables(tables, promote_options="permissive")] if len(tables) > 1 else tables
    frames = [table_to_frame(in_time_order(table)) for table in tables]
    frames += [part for part in parts if isinstance(part, pd.DataFrame) and len(part)]
    if not frames:
        return pd.DataFrame(columns=list(RECORD_FIELDS))
    return order_by_time(frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True))


def read_jsonl(path: Path) -> pd.DataFrame:
    part = read_jsonl_table(path)
    return table_to_frame(part) if isinstance(part, pa.Table) else part


def read_jsonl_table(path: Path, cache: SegmentCache | None = None) -> pa.Table | pd.DataFrame:
    """One JSONL file as pyarrow parsed it, or as a frame where some line needed the slow path;
    with a cache, its table comes from there, or is put there once parsed."""
    with path.open("rb") as handle:
        key = cache.key(handle) if cache else ""
        table = cache.get(key) if cache else None
        if table is None:
            complete = complete_lines(handle.read())
            if not complete.strip():
                return pd.DataFrame()
            try:
                table = parse_table(complete)
            except pa.ArrowInvalid:
                # mixed types or a corrupt line: the slow path, so one bad record costs only itself
                return records_to_frame(parse_lines(complete, path))
            if cache:
                cache.put(key, table)
    return table


class SegmentCache:
    """Closed segments of the inference log (rotated files, which the handler never writes
    again) as the tables their parse gave, so a growing log is parsed once, not at every
    `forgeml monitor`. A copy is an uncompressed Arrow IPC (Feather) file, memory-mapped when
    read: it keeps every Arrow type as parsed (Parquet would turn timestamp[s] into [ms]) and
    costs no decoding.

    A copy is named by the segment's fingerprint: its size, mtime and SHA-256 of its first and
    last FINGERPRINT_BYTES (and CACHE_FORMAT), not by its name, which moves up at each rotation.
    A segment changed in any of these gets a new fingerprint, so a stale copy is never read; a
    copy that does not read back (truncated, corrupt) is parsed and written again. Copies are
    written atomically; the ones no segment matched in a read are deleted (their segments were
    rotated out). A directory that cannot be written costs the speed, never the read."""

    def __init__(self, directory: Path):
        self.directory = directory
        self.used: set[str] = set()

    def key(self, handle: BinaryIO) -> str:
        """The fingerprint of the open file (read from its descriptor: the file that is read)."""
        stat = os.fstat(handle.fileno())
        digest = hashlib.sha256(CACHE_FORMAT)
        digest.update(f"{stat.st_size}:{stat.st_mtime_ns}:".encode())
        digest.update(handle.read(FINGERPRINT_BYTES))
        handle.seek(max(stat.st_size - FINGERPRINT_BYTES, 0))
        digest.update(handle.read())
        handle.seek(0)
        key = digest.hexdigest()[:32]
        self.used.add(key)
        return key

    def path(self, key: str) -> Path:
        return self.directory / f"{key}.arrow"

    def get(self, key: str) -> pa.Table | None:
        path = self.path(key)
        if not path.is_file():
            return None
        try:
            return feather.read_table(path, memory_map=True)
        except (pa.ArrowException, OSError) as error:
            log.warning("%s does not read back (%s): parsing its segment again", path, error)
            return None

    def put(self, key: str, table: pa.Table) -> None:
        try:
            with atomic_path(self.path(key)) as tmp:
                feather.write_feather(table, tmp, compression="uncompressed")
        except OSError as error:
            log.warning("cannot keep a copy in %s (%s): parsed again next time", self.directory, error)

    def prune(self) -> None:
        if not self.directory.is_dir():
            return
        for path in self.directory.glob("[0-9a-f]*.arrow"):
            if path.stem not in self.used:
                path.unlink(missing_ok=True)


def parse_table(data: bytes) -> pa.Table:
    """pyarrow's reader, told the types its first lines have (ts as a UTC time), so that it does
    not infer them again in every block (a quarter of the parse of a large log) and parses the
    times itself; fields first seen later are inferred. A line that disagrees with those types
    costs a second parse, with every type inferred."""
    sample = data[: data.find(b"\n", SCHEMA_SAMPLE_BYTES) + 1] or data
    inferred = pa_json.read_json(io.BytesIO(sample)).schema
    fields = [typed_field(field) for field in inferred if not pa.types.is_null(field.type)]
    options = pa_json.ParseOptions(explicit_schema=pa.schema(fields))
    try:
        return pa_json.read_json(io.BytesIO(data), parse_options=options)
    except pa.ArrowInvalid:
        return pa_json.read_json(io.BytesIO(data))


def typed_field(field: pa.Field) -> pa.Field:
    """ts as a UTC time (pyarrow parses ISO 8601), any other field as its first lines have it."""
    if field.name == "ts" and pa.types.is_string(field.type):
        return pa.field("ts", pa.timestamp("us", tz="UTC"))
    return field


def complete_lines(data: bytes) -> bytes:
    """`data` without a trailing fragment that is not a whole JSON object."""
    end = data.rfind(b"\n") + 1
    tail = data[end:]
    if tail.strip():
        try:
            json.loads(tail)
            return data + b"\n"
        except ValueError:
            log.warning("skipping an incomplete last line (%d bytes)", len(tail))
    return data[:end]


def parse_lines(data: bytes, path: Path) -> list[dict[str, Any]]:
    records, bad = [], 0
    for line in data.splitlines():
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except ValueError:
            bad += 1
    if bad:
        log.warning("%s: skipped %d lines that are not JSON", path, bad)
    return [record for record in records if isinstance(record, dict)]


def table_to_frame(table: pa.Table) -> pd.DataFrame:
    """Record fields as columns, the `input` struct flattened into one column per feature.
    The flattened columns convert as one table, a block each (no copy into a 2-D block)."""
    flattened: dict[str, pa.ChunkedArray] = {}
    for name, prefix in (("input", ""), ("probabilities", PROBABILITY_PREFIX)):
        if name in table.column_names:
            struct = table.column(name)
            if pa.types.is_struct(struct.type):
                for field, child in zip(struct.type, struct.flatten(), strict=True):
                    flattened[prefix + field.name] = child
    # a feature named like a record field takes its place, as the later of two keys
    fields = {
        name: plain_column(table.column(name).combine_chunks())
        for name in RECORD_FIELDS
        if name in table.column_names and name not in flattened
    }
    values = pa.table(flattened).to_pandas(split_blocks=True) if flattened else pd.DataFrame()
    return pd.concat([pd.DataFrame(fields, index=values.index if flattened else None), values], axis=1)


def plain_column(array: pa.Array) -> pd.Series:
    """A prediction logged as an object keeps its `label` (classification) or `value`. Integers
    stay integers where some lines lack the field (a rejected request's line): as floats, label
    1 would read as "1.0" and match no class."""
    if pa.types.is_struct(array.type):
        for key in ("label", "value"):
            if array.type.get_field_index(key) >= 0:
                return array.field(key).to_pandas(integer_object_nulls=True)
        return pd.Series([json.dumps(item) for item in array.to_pylist()])
    return array.to_pandas(integer_object_nulls=True)


def records_to_frame(records: list[dict[str, Any]]) -> pd.DataFrame:
    fields = pd.DataFrame({name: [record.get(name) for record in records] for name in RECORD_FIELDS})
    inputs = pd.DataFrame([record.get("input") or {} for record in records], index=fields.index)
    predictions = fields["prediction"]
    fields["prediction"] = [p.get("label", p.get("value")) if isinstance(p, dict) else p for p in predictions]
    probabilities = pd.DataFrame(
        [record.get("probabilities") or {} for record in records], index=fields.index
    ).add_prefix(PROBABILITY_PREFIX)
    inputs = inputs.drop(columns=list(RECORD_FIELDS), errors="ignore")
    return pd.concat([fields, inputs, probabilities], axis=1)


def in_time_order(table: pa.Table) -> pa.Table:
    """The table's rows by ts, sorted in Arrow before its one conversion to pandas, which then
    copies nothing more (sorted as a frame, every column of a million rows was copied twice:
    about a second of a steady-state run). Arrow's sort is stable with missing times last, as
    order_by_time's; a table already in order, or whose ts is not a parsed time, is left as it
    is for order_by_time."""
    if "ts" not in table.column_names or not pa.types.is_timestamp(table.schema.field("ts").type):
        return table
    order = pc.sort_indices(table, sort_keys=[("ts", "ascending")])
    if np.array_equal(order.to_numpy(), np.arange(len(order))):
        return table
    return table.take(order)


def order_by_time(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows in time order (stable); a frame already in order is not copied row by row."""
    if "ts" not in frame.columns:
        return frame
    frame = frame.assign(ts=pd.to_datetime(frame["ts"], utc=True, errors="coerce", format="ISO8601"))
    if frame["ts"].is_monotonic_increasing:
        return frame.reset_index(drop=True)
    return frame.sort_values("ts", kind="stable", ignore_index=True)


def select_window(
    frame: pd.DataFrame, model_name: str | None = None, last_rows: int | None = None
) -> pd.DataFrame:
    """Records of one model, at most the last `last_rows` (time windows: monitoring.decay)."""
    if model_name is not None:
        if "model" not in frame.columns:
            raise ForgeError("monitor.model_name is set but the current data has no `model` column")
        frame = frame[frame["model"] == model_name]
    if last_rows is not None:
        frame = frame.tail(last_rows)
    return frame.reset_index(drop=True)
