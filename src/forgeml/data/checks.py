"""Checks on a raw table before anything is fitted: each problem names the column and the row.

Rows are numbered from 1, counting data rows only (the header is not a row).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from forgeml.config import DataConfig, ImageConfig, TextConfig
from forgeml.data.sources import IMAGE_SUFFIXES
from forgeml.data.transform import decode_image, parse_datetime, parses_as_datetime, tokenize
from forgeml.errors import ForgeError

# an integer target with at most this many distinct values is taken as class labels
MAX_CLASSES_FOR_INTEGER_TARGET = 20
# an object column whose values parse as numbers this often is a numeric column with a typo
NUMERIC_SHARE_FOR_TYPO = 0.9


# how many present values of a string column inference looks at (datetime and text rules)
INFERENCE_SAMPLE = 1000


@dataclass(frozen=True)
class TypeRules:
    """How datetime, text and image columns are recognised, read and fitted (`data.date_format`,
    `data.datetime_share`, `data.text.*`, `data.image.size`): the defaults are DataConfig's."""

    date_format: str | None = DataConfig.date_format
    datetime_share: float = DataConfig.datetime_share
    multi_word_share: float = TextConfig.multi_word_share
    unique_share: float = TextConfig.unique_share
    vocab_size: int = TextConfig.vocab_size
    max_tokens: int = TextConfig.max_tokens
    # (height, width) images are resized to; None: the train split's most common size
    image_size: tuple[int, int] | None = ImageConfig.size


DEFAULT_RULES = TypeRules()


@dataclass(frozen=True)
class TableSchema:
    """What a checked table holds: feature types in column order, the target and the task."""

    features: dict[str, str]
    target: str
    task: str


def check_table(
    frame: pd.DataFrame,
    target: str,
    task: str = "auto",
    declared: Mapping[str, str] | None = None,
    drop: Sequence[str] = (),
    rules: TypeRules = DEFAULT_RULES,
    on_missing_target: str = "error",
) -> tuple[pd.DataFrame, TableSchema]:
    """Validate `frame` and return it with numeric columns as floats, datetimes as text that
    parses (ISO 8601 for a datetime dtype), the rest as strings, plus its schema. Rows without a
    target value are refused, or left out with `on_missing_target="drop"`."""
    declared = dict(declared or {})
    if len(frame) == 0:
        raise ForgeError("the data has a header but no rows")
    columns = list(frame.columns)
    _require_columns([target], columns, "target column (data.target)")
    _require_columns(list(drop), columns, "column to drop (data.drop)")
    _require_columns(list(declared), columns, "feature (data.features)")
    frame = rows_with_target(frame, target, on_missing_target)
    feature_names = [c for c in columns if c != target and c not in drop]
    if not feature_names:
        raise ForgeError(f"no feature columns left besides target '{target}'")
    features = {name: declared.get(name) or _infer_type(frame[name], name, rules) for name in feature_names}
    frame = frame[[*feature_names, target]].copy()
    for name, kind in features.items():
        # numerics as floats (NaN missing), the others as strings (NA missing): one type each
        column = frame[name]
        frame[name] = _as_type(column, name, kind, rules)
    task = _infer_task(frame[target]) if task == "auto" else task
    if task == "classification" and frame[target].nunique() < 2:
        raise ForgeError(
            f"target column '{target}' has a single class ({frame[target].iloc[0]!r}); "
            "classification needs at least two"
        )
    if task == "regression":
        frame[target] = _as_numeric(frame[target], target)
    return frame, TableSchema(features=features, target=target, task=task)


def describe_table(frame: pd.DataFrame, target: str, rules: TypeRules = DEFAULT_RULES) -> dict[str, Any]:
    """A new table at a glance, as `forgeml init` shows it before anything is trained: its size,
    the types inference gives its columns, the task and classes, and what `prepare` will refuse or
    a model cannot learn from (empty targets, constant columns)."""
    features = [name for name in frame.columns if name != target]
    labels = frame[target].dropna()
    task = _infer_task(labels) if len(labels) else "unknown"
    summary: dict[str, Any] = {
        "rows": len(frame),
        "columns": len(frame.columns),
        "types": {name: _infer_type(frame[name], name, rules) for name in features},
        "task": task,
        "empty_targets": int(frame[target].isna().sum()),
        "constant_columns": [name for name in features if frame[name].nunique(dropna=False) <= 1],
    }
    if task == "classification":
        summary["classes"] = {str(label): int(count) for label, count in labels.value_counts().items()}
    return summary


def _require_columns(wanted: Sequence[str], columns: Sequence[str], what: str) -> None:
    for name in wanted:
        if name not in columns:
            raise ForgeError(
                f"{what} '{name}' is not in the data; columns are: {', '.join(map(str, columns))}"
            )


def rows_with_target(frame: pd.DataFrame, name: str, on_missing: str) -> pd.DataFrame:
    """`frame` without the rows whose target is empty (`data.on_missing_target=drop`), or
    `frame` itself when none is; `error` names the first such row instead."""
    missing = frame[name].isna().to_numpy()
    if not missing.any():
        return frame
    if on_missing == "drop":
        if missing.all():
            raise ForgeError(f"target column '{name}' is empty in every row")
        return frame[~missing]
    raise missing_target_error(name, int(missing.argmax()) + 1, int(missing.sum()))


def missing_target_error(name: str, row: int, count: int | None = None) -> ForgeError:
    in_all = f" ({count} rows in all)" if count else ""
    return ForgeError(
        f"target column '{name}' is empty in row {row}{in_all}: fill it, or leave such rows out "
        "with data.on_missing_target=drop"
    )


def _infer_type(column: pd.Series, name: str, rules: TypeRules = DEFAULT_RULES) -> str:
    if pd.api.types.is_bool_dtype(column):
        return "categorical"
    if pd.api.types.is_datetime64_any_dtype(column):
        return "datetime"
    if pd.api.types.is_numeric_dtype(column):
        return "numeric"
    present = column.dropna()
    if len(present) and all(isinstance(value, bytes | bytearray) for value in present):
        return "image"
    parsed = pd.to_numeric(present, errors="coerce")
    if len(present) and parsed.notna().mean() >= NUMERIC_SHARE_FOR_TYPO:
        return "numeric"  # mostly numbers: _as_numeric names the row that is not
    sample = present.astype(str).head(INFERENCE_SAMPLE).tolist()
    if sample and _share(sample, lambda v: parses_as_datetime(v, rules.date_format)) >= rules.datetime_share:
        return "datetime"  # mostly dates: _as_datetime_text names the row that is not
    if sample and _is_text(sample, rules):
        return "text"
    return "categorical"


def _share(values: list[str], test: Callable[[str], bool]) -> float:
    return sum(map(test, values)) / len(values)


def _is_text(values: list[str], rules: TypeRules) -> bool:
    """Free text: mostly several words, and mostly distinct (a category repeats)."""
    multi_word = _share(values, lambda v: len(tokenize(v)) > 1)
    return multi_word >= rules.multi_word_share and len(set(values)) / len(values) >= rules.unique_share


def _as_datetime_text(column: pd.Series, name: str, date_format: str | None) -> pd.Series:
    """Each value checked to parse; a datetime dtype becomes ISO 8601 text, as a request sends it."""
    if pd.api.types.is_datetime64_any_dtype(column):
        return column.map(lambda t: t.isoformat(), na_action="ignore").astype("string")
    text = column.astype("string")
    for row, value in enumerate(text.tolist()):
        try:
            parse_datetime(None if value is pd.NA else value, date_format)
        except ValueError as error:
            raise ForgeError(
                f"column '{name}' is datetime but row {row + 1} holds {value!r}: {error}; fix the "
                f"value, set 'data.date_format', or declare it with 'data.features={{{name}:categorical}}'"
            ) from None
    return text


def _as_type(column: pd.Series, name: str, kind: str, rules: TypeRules) -> pd.Series:
    if kind == "numeric":
        return _as_numeric(column, name)
    if kind == "datetime":
        return _as_datetime_text(column, name, rules.date_format)
    if kind == "image":
        return _as_images(column, name)
    return column.astype("string")


def _as_images(column: pd.Series, name: str) -> pd.Series:
    """Image bytes (None missing), each decodable: an image column read from a CSV holds the
    files' bytes by now (sources.with_image_files)."""
    for row, value in enumerate(column.to_numpy(dtype=object)):
        if value is None or value != value:
            continue
        if not isinstance(value, bytes | bytearray):
            raise ForgeError(
                f"column '{name}' holds images but row {row + 1} holds {str(value)[:80]!r}; an image "
                f"is a file path ending in {', '.join(IMAGE_SUFFIXES)} (relative to the CSV) or bytes"
            )
        try:
            decode_image(value)
        except ValueError as error:
            raise ForgeError(f"column '{name}', row {row + 1}: {error}") from None
    return column.astype(object).where(column.notna(), None)


def _as_numeric(column: pd.Series, name: str) -> pd.Series:
    if pd.api.types.is_bool_dtype(column):
        return column.astype("float64")
    parsed = pd.to_numeric(column, errors="coerce")
    bad = (parsed.isna() & column.notna()).to_numpy().nonzero()[0]
    if len(bad):
        row = bad[0]
        raise ForgeError(
            f"column '{name}' is numeric but row {row + 1} holds {column.iloc[row]!r} "
            f"({len(bad)} such rows); fix the value, or declare it with "
            f"'data.features={{{name}:categorical}}'"
        )
    return parsed.astype("float64")


def _infer_task(target: pd.Series) -> str:
    if pd.api.types.is_float_dtype(target):
        values = target.to_numpy()
        if (values == values.round()).all() and target.nunique() <= MAX_CLASSES_FOR_INTEGER_TARGET:
            return "classification"
        return "regression"
    if pd.api.types.is_integer_dtype(target):
        many = target.nunique() > MAX_CLASSES_FOR_INTEGER_TARGET
        return "regression" if many else "classification"
    return "classification"
