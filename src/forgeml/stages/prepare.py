"""prepare: load the source, check it, split it, fit the preprocessing, profile the train split.

Writes data/processed/: train/val/test Parquet splits (raw values, checked types),
preprocessor.json (fitted on train only) and reference_profile.json (for drift checks).
The split is stratified for classification and fixed by `seed`. With `data.streaming` a file
larger than memory is prepared in one pass of batches instead (see data/streaming.py).
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

import pandas as pd
from hydra.utils import instantiate
from omegaconf import DictConfig

from forgeml.config import plain
from forgeml.data.checks import TableSchema, TypeRules, check_table
from forgeml.data.preprocessing import fit_preprocessor
from forgeml.data.sources import streaming_enabled
from forgeml.errors import ForgeError
from forgeml.io import write_json
from forgeml.layout import PREPROCESSOR, REFERENCE_PROFILE, split_file
from forgeml.monitoring.profile import build_profile, streamed_profile
from forgeml.monitoring.signals import with_signals
from forgeml.tables import write_table

log = logging.getLogger(__name__)


def run(cfg: DictConfig) -> dict[str, Any]:
    data = cfg.data
    out = Path(cfg.paths.processed_dir)
    if streaming_enabled(data, data.get("path")):
        from forgeml.data import streaming  # torch and Lightning: only when streaming

        if not data.get("path"):
            raise ForgeError("data.streaming=true reads a file: use data=csv data.path=<file>")
        rows, schema, preprocessor, statistics = streaming.prepare_streaming(data.path, out, data, cfg.seed)
        write_json(out / PREPROCESSOR, preprocessor)
        write_json(out / REFERENCE_PROFILE, streamed_profile(statistics))
        return _summary(data.name, schema, rows, out)
    frame = instantiate(data.source)
    frame.columns = frame.columns.map(str)
    features = {name: plain(kind) for name, kind in (data.features or {}).items()}
    rules = type_rules(data)
    raw_rows = len(frame)
    frame, schema = check_table(
        frame, data.target, plain(data.task), features, list(data.drop), rules, plain(data.on_missing_target)
    )
    if len(frame) < raw_rows:
        log.warning(
            "left out %d of %d rows without a target (data.on_missing_target=drop)",
            raw_rows - len(frame),
            raw_rows,
        )
    splits = split_table(frame, schema, data.val_size, data.test_size, cfg.seed)
    for name, split in splits.items():
        write_table(split, split_file(out, name))
    preprocessor = fit_preprocessor(splits["train"], schema, rules)
    write_json(out / PREPROCESSOR, preprocessor)
    train, signals = with_signals(splits["train"], preprocessor)
    write_json(out / REFERENCE_PROFILE, build_profile(train, replace(schema, features=signals)))
    return _summary(data.name, schema, {name: len(split) for name, split in splits.items()}, out)


def type_rules(data: DictConfig) -> TypeRules:
    """How datetime, text and image columns are recognised and fitted, from `data`."""
    text = data.text
    return TypeRules(
        date_format=data.date_format,
        datetime_share=data.datetime_share,
        multi_word_share=text.multi_word_share,
        unique_share=text.unique_share,
        vocab_size=text.vocab_size,
        max_tokens=text.max_tokens,
        image_size=tuple(data.image.size) if data.image.size else None,
    )


def _summary(name: str, schema: TableSchema, rows: dict[str, int], out: Path) -> dict[str, Any]:
    summary = {f"rows/{split}": count for split, count in rows.items()}
    log.info("prepared %s (%s): %s -> %s", name, schema.task, summary, out)
    return {**summary, "task": schema.task, "features": len(schema.features)}


def split_table(
    frame: pd.DataFrame, schema: TableSchema, val_size: float, test_size: float, seed: int | None
) -> dict[str, pd.DataFrame]:
    """Deterministic train/val/test split, stratified by class where every class allows it."""
    from sklearn.model_selection import train_test_split

    def cut(table: pd.DataFrame, size: float) -> list[pd.DataFrame]:
        labels = table[schema.target] if schema.task == "classification" else None
        try:
            return train_test_split(table, test_size=size, random_state=seed, stratify=labels)
        except ValueError:
            log.warning("a class is too small to stratify the split; splitting at random")
            return train_test_split(table, test_size=size, random_state=seed)

    rest, test = cut(frame, test_size)
    train, val = cut(rest, val_size / (1.0 - test_size))
    return {"train": train, "val": val, "test": test}
