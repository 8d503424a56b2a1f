"""prepare: load the source, check it, split it, fit the preprocessing, profile the train split,
and hold it to the data contract of the model it would replace.

Writes data/processed/: train/val/test Parquet splits (raw values, checked types),
preprocessor.json (fitted on train only), reference_profile.json (for drift checks) and
data_contract.json (columns, kinds, categories, ranges, missing rates: data/contract.py).
The split is stratified for classification and fixed by `seed`. With `data.streaming` a file
larger than memory is prepared in one pass of batches instead (see data/streaming.py).

New data is compared with the contract of the version that serves (the registry in
`serve.model_store` says which; its archive carries the contract), else with the one of the model
in models/; a break beyond `data.contract.*` stops the stage before the splits are written (the
streaming path writes them as it reads), naming every broken column, unless
`data.contract.accept=true`. A fresh project, or another data set (`data.name`), has nothing to
compare with. The reference is not a
DVC dependency: it decides whether the stage passes, never what it writes.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

import pandas as pd
from hydra.utils import instantiate
from omegaconf import DictConfig

from forgeml.config import check_ranges, plain
from forgeml.data.checks import TableSchema, TypeRules, check_table
from forgeml.data.contract import Tolerances, broken_contract, contract_breaks, data_contract
from forgeml.data.preprocessing import fit_preprocessor
from forgeml.data.sources import streaming_enabled
from forgeml.errors import ForgeError
from forgeml.io import read_json, write_json
from forgeml.layout import DATA_CONTRACT, PREPROCESSOR, REFERENCE_PROFILE, split_file
from forgeml.monitoring.profile import build_profile, streamed_profile
from forgeml.monitoring.signals import with_signals
from forgeml.serving.archive import archived_data_contract
from forgeml.serving.registry import Registry
from forgeml.tables import write_table

log = logging.getLogger(__name__)


def run(cfg: DictConfig) -> dict[str, Any]:
    data = cfg.data
    check_ranges("data.contract", data.contract)
    out = Path(cfg.paths.processed_dir)
    if streaming_enabled(data, data.get("path")):
        from forgeml.data import streaming  # torch and Lightning: only when streaming

        if not data.get("path"):
            raise ForgeError("data.streaming=true reads a file: use data=csv data.path=<file>")
        rows, schema, preprocessor, statistics = streaming.prepare_streaming(data.path, out, data, cfg.seed)
        write_prepared(cfg, preprocessor, streamed_profile(statistics))
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
    preprocessor = fit_preprocessor(splits["train"], schema, rules)
    train, signals = with_signals(splits["train"], preprocessor)
    write_prepared(cfg, preprocessor, build_profile(train, replace(schema, features=signals)))
    for name, split in splits.items():
        write_table(split, split_file(out, name))
    return _summary(data.name, schema, {name: len(split) for name, split in splits.items()}, out)


def write_prepared(cfg: DictConfig, preprocessor: dict[str, Any], profile: dict[str, Any]) -> None:
    """Hold the train split's contract to the reference's, then write it, the preprocessing and
    the profile."""
    contract = data_contract(cfg.data.name, preprocessor, profile)
    hold_to_contract(contract, reference_contract(cfg), cfg.data)
    out = Path(cfg.paths.processed_dir)
    write_json(out / PREPROCESSOR, preprocessor)
    write_json(out / REFERENCE_PROFILE, profile)
    write_json(out / DATA_CONTRACT, contract)


def hold_to_contract(
    contract: dict[str, Any], reference: tuple[dict[str, Any], str] | None, data: DictConfig
) -> None:
    """Raise ContractBroken listing every break of `reference` ((contract, whose)) beyond the
    tolerances; with `accept`, warn instead."""
    if reference is None:
        log.info("no data contract to compare with yet (nothing serves, no model in models/)")
        return
    if reference[0].get("dataset") != contract["dataset"]:
        log.info(
            "%s was trained on another data set: no contract to hold '%s' to",
            reference[1],
            contract["dataset"],
        )
        return
    settings = data.contract
    tolerances = Tolerances(settings.new_category_share, settings.range_widening, settings.missing_rate_rise)
    breaks = contract_breaks(reference[0], contract, tolerances, chosen_columns(data))
    if not breaks:
        log.info("the data keeps the data contract of %s", reference[1])
    elif not settings.accept:
        raise broken_contract(breaks, reference[1])
    else:
        log.warning(
            "data.contract.accept=true: accepted as a deliberate change, the data breaks %d term(s) of "
            "the data contract of %s:\n%s",
            len(breaks),
            reference[1],
            "\n".join(f"  - {line}" for line in breaks),
        )


def chosen_columns(data: DictConfig) -> set[str]:
    """The columns whose absence or kind the config decides (`data.drop`, `data.features`)."""
    return {*data.drop, *(data.features or {})}


def reference_contract(cfg: DictConfig) -> tuple[dict[str, Any], str] | None:
    """The data contract new data is held to, and whose it is: the serving version's (in the
    registry's copy of its archive), else the one of the model in models/; None: neither."""
    name = cfg.serve.model_name
    registry = Registry(cfg.serve.model_store)
    version = registry.serving(name)
    archive = registry.archive_copy(name, version) if version else None
    if archive is not None and archive.is_file():
        contract = archived_data_contract(archive)
        if contract is not None:
            return contract, f"version {version} of '{name}' (serving)"
        log.warning(
            "version %s of '%s', which serves, carries no data contract (packaged before forgeml "
            "wrote one): holding the data to the contract in models/, if any",
            version,
            name,
        )
    current = Path(cfg.paths.models_dir) / DATA_CONTRACT
    if current.is_file():
        return read_json(current), f"the model in {cfg.paths.models_dir}/"
    return None


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
