"""The data contract: what a training table holds, column by column, and how a new one breaks it.

`prepare` writes it beside the splits (layout.DATA_CONTRACT); the model trained on them carries
it (models/, then the archive, so the registry's copy of each version keeps it). On new data,
`prepare` compares the new contract with the one of the version that serves and refuses the data,
naming every column that broke beyond the `data.contract` tolerances.

Only new data of the same data set (`data.name`) is held to a contract: `data=wine` after
`data=breast_cancer` is another experiment, not a retrain.

The contract is read off the train split's fitted preprocessing (columns, their kinds and order)
and its reference profile (missing rates, category shares, ranges): the same two files that the
served model's input schema (serving/archive.py) and `forgeml monitor`'s drift reference come
from, so the three describe one table. Per column:

    type          numeric, categorical, datetime, text or image (the target: categorical for
                  classification, numeric for regression)
    missing_rate  the share of rows without a value (or, for dates, images, one that does not parse)
    categories    categorical: {category: share of the rows}, missing values left to missing_rate
    ranges        {measure: [low, high]}: numeric `value`; datetime `timestamp` (seconds since
                  1970); text `length` (tokens); image `width`, `height` (pixels, as received)

Pure functions of JSON documents: this module reads and writes no file.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from forgeml.config import ContractConfig
from forgeml.data.transform import MISSING_CATEGORY
from forgeml.errors import ForgeError

FORMAT = "forgeml.data_contract/1"
# the measures whose range each kind of column keeps: the reference profile's sketch of the column
# itself (`value`) or of its drift signal `<column>:<measure>` (monitoring/signals.py)
MEASURES = {
    "numeric": ("value",),
    "datetime": ("timestamp",),
    "text": ("length",),
    "image": ("width", "height"),
}
# how many of a column's new categories a break names (the largest first)
NAMED_CATEGORIES = 5


class ContractBroken(ForgeError):
    """New training data broke the data contract of the model it would replace."""


@dataclass(frozen=True)
class Tolerances:
    """How far new data may stray (`data.contract.*`; the defaults are ContractConfig's)."""

    new_category_share: float = ContractConfig.new_category_share
    range_widening: float = ContractConfig.range_widening
    missing_rate_rise: float = ContractConfig.missing_rate_rise


def data_contract(dataset: str, preprocessor: dict[str, Any], profile: dict[str, Any]) -> dict[str, Any]:
    """The contract of a prepared train split of `dataset` (`data.name`): its preprocessor.json
    and reference_profile.json."""
    sketches = profile["features"]
    columns = {
        feature["name"]: column_entry(feature["type"], feature["name"], sketches)
        for feature in preprocessor["features"]
    }
    target = profile["target"]
    kind = "categorical" if profile["task"] == "classification" else "numeric"
    columns[target["name"]] = column_entry(kind, target["name"], {target["name"]: target})
    return {
        "format": FORMAT,
        "dataset": dataset,
        "rows": profile["rows"],
        "task": profile["task"],
        "target": target["name"],
        "columns": columns,
    }


def column_entry(kind: str, name: str, sketches: dict[str, Any]) -> dict[str, Any]:
    """One column's entry, from the profile's sketches (`sketches`, by profile column)."""
    if kind == "categorical":
        sketch = sketches[name]
        rows = sketch["count"] or 1
        shares = {category: count / rows for category, count in sketch["frequencies"].items()}
        missing = shares.pop(MISSING_CATEGORY, 0.0)
        return {"type": kind, "missing_rate": missing, "categories": shares}
    measured = {
        measure: sketches[name if measure == "value" else f"{name}:{measure}"] for measure in MEASURES[kind]
    }
    first = next(iter(measured.values()))
    rows = (first["count"] + first["missing"]) or 1
    ranges = {
        measure: [sketch["min"], sketch["max"]] if sketch["count"] else None
        for measure, sketch in measured.items()
    }
    return {"type": kind, "missing_rate": first["missing"] / rows, "ranges": ranges}


def contract_breaks(
    reference: dict[str, Any],
    current: dict[str, Any],
    tolerances: Tolerances = Tolerances(),
    chosen: Collection[str] = (),
) -> list[str]:
    """How `current` breaks `reference`, one line per break naming its column; none: it holds.
    `chosen`: the columns the config drops or declares a kind for (`data.drop`, `data.features`),
    whose absence or kind is deliberate, not a break."""
    before, after = reference["columns"], current["columns"]
    breaks = [
        f"column '{name}' is gone (it was {before[name]['type']})"
        for name in before
        if name not in after and name not in chosen
    ]
    breaks += [f"column '{name}' is new ({after[name]['type']})" for name in after if name not in before]
    for name in (name for name in before if name in after):
        if before[name]["type"] != after[name]["type"] and name in chosen:
            continue
        breaks += column_breaks(name, before[name], after[name], tolerances)
    return breaks


def column_breaks(
    name: str, before: dict[str, Any], after: dict[str, Any], tolerances: Tolerances
) -> list[str]:
    if before["type"] != after["type"]:
        return [f"column '{name}' was {before['type']}, is now {after['type']}"]
    breaks = []
    rise = after["missing_rate"] - before["missing_rate"]
    if rise > tolerances.missing_rate_rise:
        breaks.append(
            f"column '{name}': missing rate rose from {before['missing_rate']:.1%} to "
            f"{after['missing_rate']:.1%} (data.contract.missing_rate_rise={tolerances.missing_rate_rise})"
        )
    if before["type"] == "categorical":
        breaks += category_breaks(name, before["categories"], after["categories"], tolerances)
    for measure, reference in before.get("ranges", {}).items():
        breaks += range_breaks(name, measure, reference, after["ranges"].get(measure), tolerances)
    return breaks


def category_breaks(
    name: str, before: dict[str, float], after: dict[str, float], tolerances: Tolerances
) -> list[str]:
    """The categories the reference never saw, when together they hold more rows than allowed."""
    new = sorted(
        ((share, category) for category, share in after.items() if category not in before), reverse=True
    )
    total = sum(share for share, _ in new)
    if total <= tolerances.new_category_share:
        return []
    named = ", ".join(f"{category!r} {share:.1%}" for share, category in new[:NAMED_CATEGORIES])
    more = f" and {len(new) - NAMED_CATEGORIES} more" if len(new) > NAMED_CATEGORIES else ""
    return [
        f"column '{name}': new categories hold {total:.1%} of the rows "
        f"(data.contract.new_category_share={tolerances.new_category_share}): {named}{more}"
    ]


def range_breaks(
    name: str, measure: str, before: list[float] | None, after: list[float] | None, tolerances: Tolerances
) -> list[str]:
    """A range that reaches beyond the reference's, widened by `range_widening` of its width on
    either side (a column constant in the reference: any other value breaks it)."""
    if before is None or after is None:
        return []
    margin = tolerances.range_widening * (before[1] - before[0])
    low, high = before[0] - margin, before[1] + margin
    if low <= after[0] and after[1] <= high:
        return []
    what = "values" if measure == "value" else measure
    return [
        f"column '{name}': {what} range [{after[0]:.6g}, {after[1]:.6g}] reaches beyond the reference's "
        f"[{before[0]:.6g}, {before[1]:.6g}] widened to [{low:.6g}, {high:.6g}] "
        f"(data.contract.range_widening={tolerances.range_widening})"
    ]


def broken_contract(breaks: list[str], reference: str) -> ContractBroken:
    """The one error listing every break, and what to do about it."""
    lines = "\n".join(f"  - {line}" for line in breaks)
    return ContractBroken(
        f"the new data breaks {len(breaks)} term(s) of the data contract of {reference}:\n{lines}\n"
        "Fix the data, widen the tolerances (data.contract.*), or accept a deliberate change with "
        "data.contract.accept=true: the model trained on it then carries the new contract."
    )
