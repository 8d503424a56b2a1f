"""The fitted preprocessing, applied: raw feature columns -> the model's float32 input matrix.

This module imports numpy and the standard library only. It is used by training, evaluation and
batch prediction, and ships unchanged inside every model archive so the serving handler applies
exactly the same arithmetic. The spec it reads is `preprocessor.json` (see preprocessing.py).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import io
import math
import re
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from itertools import groupby
from typing import Any

import numpy as np

MISSING_CATEGORY = "__missing__"
# the largest magnitude a standardised value may have: beyond it, float32 holds inf
FLOAT32_MAX = float(np.finfo(np.float32).max)


def numeric_column(values: Sequence[Any] | np.ndarray) -> np.ndarray:
    """float64 column with NaN for missing (None) values; raises ValueError on non-numbers."""
    return np.asarray(values, dtype=np.float64)


def category_column(values: Sequence[Any] | np.ndarray) -> np.ndarray:
    """str column with missing values (None, NaN) as their own category."""
    column = np.asarray(values, dtype=object)
    missing = np.equal(column, None) | np.not_equal(column, column)
    column = column.copy()
    column[missing] = MISSING_CATEGORY
    return column.astype(str)


def lookup(sorted_values: np.ndarray, column: np.ndarray) -> np.ndarray:
    """Index of each value in `sorted_values`, -1 where absent (vectorised binary search)."""
    if len(sorted_values) == 0:
        return np.full(len(column), -1, dtype=np.int64)
    position = np.searchsorted(sorted_values, column).clip(0, len(sorted_values) - 1)
    return np.where(sorted_values[position] == column, position, -1)


def standardise(feature: Mapping[str, Any], column: np.ndarray) -> np.ndarray:
    """A numeric column, imputed and standardised, in float64 (float32 happens at the end)."""
    column = np.where(np.isnan(column), feature["fill"], column)
    return (column - feature["mean"]) / feature["std"]


def overflowing_features(spec: Mapping[str, Any], inputs: np.ndarray) -> np.ndarray:
    """Per row of `inputs` (encode_features' output), the index in `spec['features']` of its
    first feature that is not finite there, or -1: a finite extreme like 1e300 passes every
    type check, then overflows float32 once standardised and would come out of the model as
    NaN, so the endpoint refuses it and batch prediction reports the row."""
    overflow = np.full(len(inputs), -1, dtype=np.int64)
    beyond = ~np.isfinite(inputs)
    if beyond.any():  # rare: the common case costs one pass over the matrix
        widths = [feature_width(f) for f in spec["features"]]
        owner = np.repeat(np.arange(len(widths)), widths)
        rows = beyond.any(axis=1)
        overflow[rows] = owner[beyond[rows].argmax(axis=1)]
    return overflow


def keyed_hashes(key: bytes, values: Sequence[Any]) -> list[str | None]:
    """HMAC-SHA256 (hex) of each value's text as training's categories spell it (str(value));
    a missing value (None, NaN) stays None. The inference log writes these for `monitor.hash` columns, and
    `forgeml monitor` hashes the reference categories alike, so drift compares hashes."""
    return [
        None
        if value is None or value != value
        else hmac.new(key, str(value).encode("utf-8"), hashlib.sha256).hexdigest()
        for value in values
    ]


def feature_width(feature: Mapping[str, Any]) -> int:
    """How many columns of the model's input matrix one feature fills: every feature type
    encodes to a fixed number of float32 columns, so one matrix stays the contract between
    preprocessing, training, the exported model and the handler."""
    return WIDTHS[feature["type"]](feature)


WIDTHS = {
    "numeric": lambda feature: 1,
    "categorical": lambda feature: len(feature["categories"]),
    # standardised year, four sine/cosine pairs, the missing flag
    "datetime": lambda feature: 10,
    "text": lambda feature: feature["max_tokens"],
    "image": lambda feature: feature["channels"] * feature["size"][0] * feature["size"][1],
}

# formats tried after ISO 8601 (datetime.fromisoformat) when `data.date_format` forces none
DATE_FORMATS = (
    "%Y/%m/%d",
    "%Y/%m/%d %H:%M",
    "%Y/%m/%d %H:%M:%S",
    "%d.%m.%Y",
    "%d.%m.%Y %H:%M",
    "%m/%d/%Y",
    "%m/%d/%Y %H:%M",
    "%d %b %Y",
    "%b %d %Y",
    "%b %d, %Y",
)
# (period, value of a datetime) of each calendar feature written as a sine/cosine pair
CYCLES = (
    (12.0, lambda t: t.month - 1),
    (366.0, lambda t: t.timetuple().tm_yday - 1),
    (7.0, lambda t: t.weekday()),
    (24.0, lambda t: t.hour + t.minute / 60),
)
# token ids: 0 pads, 1 stands for any token outside the vocabulary, whose tokens follow from 2
PADDING_ID, UNKNOWN_ID, FIRST_TOKEN_ID = 0, 1, 2
# word pieces: runs of letters/digits, or single punctuation marks
TOKEN_PATTERN = re.compile(r"\w+|[^\w\s]")


def is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def parse_datetime(value: Any, date_format: str | None = None) -> datetime | None:
    """A date or time given as text, in UTC when it carries a zone (naive ones are taken as
    they are); None for a missing value; ValueError naming the value when it does not parse."""
    if is_missing(value):
        return None
    if isinstance(value, datetime):
        parsed = value
    elif not isinstance(value, str):
        raise ValueError(f"expected a date as text, got {value!r}")
    elif date_format:
        parsed = datetime.strptime(value.strip(), date_format)
    else:
        parsed = _parse_common(value.strip())
    if parsed.tzinfo is not None:
        parsed = parsed.astimezone(timezone.utc).replace(tzinfo=None)
    return parsed


def parses_as_datetime(value: Any, date_format: str | None = None) -> bool:
    try:
        parse_datetime(value, date_format)
    except ValueError:
        return False
    return True


def _parse_common(text: str) -> datetime:
    try:  # Python before 3.11 reads no "Z"
        return datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith("Z") else text)
    except ValueError:
        pass
    for date_format in DATE_FORMATS:
        try:
            return datetime.strptime(text, date_format)
        except ValueError:
            continue
    raise ValueError(
        f"{text!r} is not a date in a known format (ISO 8601, YYYY/MM/DD, ...; set data.date_format)"
    )


def encode_datetime(feature: Mapping[str, Any], raw: Any) -> np.ndarray:
    """Year standardised; month, day of year, day of week and hour as sine/cosine pairs (so
    December sits next to January); a missing value is all zeros with the flag set."""
    times = [parse_datetime(value, feature.get("format")) for value in raw]
    block = np.zeros((len(times), 10), dtype=np.float64)
    for row, moment in enumerate(times):
        if moment is None:
            block[row, 9] = 1.0
            continue
        block[row, 0] = (moment.year - feature["year_mean"]) / feature["year_std"]
        for pair, (period, value) in enumerate(CYCLES):
            angle = 2 * math.pi * value(moment) / period
            block[row, 1 + 2 * pair : 3 + 2 * pair] = math.sin(angle), math.cos(angle)
    return block


def tokenize(text: Any) -> list[str]:
    """Lower-cased word pieces of a text; a missing value has none."""
    return [] if is_missing(text) else TOKEN_PATTERN.findall(str(text).lower())


def token_ids(feature: Mapping[str, Any], tokens: list[str], ids: Mapping[str, int]) -> list[int]:
    """The first `max_tokens` ids of `tokens`, padded: an id is a row of the model's embedding."""
    width = feature["max_tokens"]
    found = [ids.get(token, UNKNOWN_ID) for token in tokens[:width]]
    return found + [PADDING_ID] * (width - len(found))


def vocabulary_ids(feature: Mapping[str, Any]) -> dict[str, int]:
    """Token -> id: the vocabulary follows the padding and unknown ids."""
    return {token: index + FIRST_TOKEN_ID for index, token in enumerate(feature["vocabulary"])}


def encode_text(feature: Mapping[str, Any], raw: Any) -> np.ndarray:
    """Token ids as float32 columns, which hold every integer exactly below 2**24 (16.7 million):
    a vocabulary stays far below that, and the exported model turns them back into indices."""
    ids = vocabulary_ids(feature)
    rows = [token_ids(feature, tokenize(value), ids) for value in raw]
    return np.array(rows, dtype=np.float32).reshape(len(rows), feature["max_tokens"])


def encode_numeric(feature: Mapping[str, Any], raw: Any) -> np.ndarray:
    return standardise(feature, numeric_column(raw))[:, None]


def encode_categorical(feature: Mapping[str, Any], raw: Any) -> np.ndarray:
    """One-hot; a value never seen in training is all zeros (the unknown bucket), never an error."""
    categories = np.asarray(feature["categories"], dtype=str)
    index = lookup(categories, category_column(raw))
    one_hot = np.zeros((len(index), len(categories)), dtype=np.float32)
    known = index >= 0
    one_hot[np.flatnonzero(known), index[known]] = 1.0
    return one_hot


def image_bytes(value: Any) -> bytes:
    """An image's encoded bytes: bytes as they are, text as base64 (how JSON carries them)."""
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    if isinstance(value, str):
        try:
            return base64.b64decode(value, validate=True)
        except binascii.Error as error:
            raise ValueError(f"not base64 text: {error}") from None
    raise ValueError(f"expected an image (bytes, or base64 text), got {type(value).__name__}")


def decode_image(value: Any) -> Any:
    """The decoded PIL image of a PNG or JPEG (bytes or base64 text); ValueError when it is
    none; an image decoded already (a request the handler checked) as it is. Pillow is imported
    here, not at the top: the module serves tables without it."""
    from PIL import Image

    if isinstance(value, Image.Image):
        return value
    try:
        image = Image.open(io.BytesIO(image_bytes(value)))
        image.load()
    except (OSError, SyntaxError, Image.DecompressionBombError) as error:
        raise ValueError(f"not a decodable image ({error})") from None
    return image


def image_pixels(feature: Mapping[str, Any], image: Any) -> np.ndarray:
    """`image` in the feature's channels (1: grey, 3: RGB) and size, as float (C, H, W) in [0, 1]."""
    from PIL import Image

    height, width = feature["size"]
    mode = "L" if feature["channels"] == 1 else "RGB"
    resized = image.convert(mode).resize((width, height), Image.Resampling.BILINEAR)
    pixels = np.asarray(resized, dtype=np.float32) / 255.0
    return pixels.reshape(height, width, feature["channels"]).transpose(2, 0, 1)


def image_signals(value: Any) -> dict[str, float]:
    """What the inference log keeps of an image instead of its bytes, and what drift is tested
    on: mean brightness and contrast (standard deviation) of its grey levels in [0, 1], and its
    width and height as received."""
    image = decode_image(value)
    grey = np.asarray(image.convert("L"), dtype=np.float64) / 255.0
    return {
        "brightness": float(grey.mean()),
        "contrast": float(grey.std()),
        "width": float(image.width),
        "height": float(image.height),
    }


def encode_image(feature: Mapping[str, Any], raw: Any) -> np.ndarray:
    """Decoded, resized pixels normalised by the train split's per-channel mean and std,
    flattened (C, H, W); a missing image (None) is the mean image, all zeros."""
    channels = feature["channels"]
    mean = np.asarray(feature["mean"], dtype=np.float32).reshape(channels, 1, 1)
    std = np.asarray(feature["std"], dtype=np.float32).reshape(channels, 1, 1)
    block = np.zeros((len(raw), feature_width(feature)), dtype=np.float32)
    for row, value in enumerate(raw):
        if value is not None:
            block[row] = ((image_pixels(feature, decode_image(value)) - mean) / std).ravel()
    return block


# feature type -> its encoder: (feature spec, raw column) -> (rows, feature_width) block
ENCODERS = {
    "numeric": encode_numeric,
    "categorical": encode_categorical,
    "datetime": encode_datetime,
    "text": encode_text,
    "image": encode_image,
}


def encode_features(spec: Mapping[str, Any], columns: Mapping[str, Any]) -> np.ndarray:
    """Each feature encoded by its type's encoder, side by side: one row per input row,
    `spec['input_dim']` columns. Missing numerics take the training median.

    Each run of adjacent numeric features is standardised in one vectorised pass, with the
    arithmetic of `standardise`: numpy calls per feature would cost a one-record prediction
    at the endpoint more than the model's forward pass."""
    blocks = []
    for numeric, run in groupby(spec["features"], key=lambda feature: feature["type"] == "numeric"):
        run = list(run)
        if numeric:
            blocks.append(standardise_run(run, columns))
        else:
            blocks += [ENCODERS[f["type"]](f, columns[f["name"]]) for f in run]
    matrix = blocks[0] if len(blocks) == 1 else np.concatenate(blocks, axis=1)
    with np.errstate(over="ignore"):  # beyond float32 is inf, which overflowing_features finds
        return matrix.astype(np.float32)


def standardise_run(features: Sequence[Mapping[str, Any]], columns: Mapping[str, Any]) -> np.ndarray:
    """Numeric features side by side, each imputed and standardised as `standardise` does it
    (the same operations, in place on the stacked matrix, which is this function's own)."""
    matrix = np.stack([numeric_column(columns[f["name"]]) for f in features], axis=1)
    fill, mean, std = (
        np.array([f[key] for f in features], dtype=np.float64) for key in ("fill", "mean", "std")
    )
    missing = np.isnan(matrix)
    if missing.any():
        np.copyto(matrix, np.broadcast_to(fill, matrix.shape), where=missing)
    matrix -= mean
    matrix /= std
    return matrix


def encode_labels(spec: Mapping[str, Any], values: Sequence[Any] | np.ndarray) -> np.ndarray:
    """Class indices for classification targets (-1 for labels unseen in training).

    `spec['labels']` is sorted by its string form, which makes it searchable here.
    """
    return lookup(np.asarray(spec["labels"]).astype(str), np.asarray(values).astype(str))


def label_names(spec: Mapping[str, Any], indices: np.ndarray) -> list[Any]:
    """Back from class indices to the original label values."""
    labels = spec["labels"]
    return [labels[i] for i in indices.tolist()]


def predicted_classes(probabilities: np.ndarray, decision: Mapping[str, Any] | None) -> np.ndarray:
    """Each row's class index: the most probable class, or, with a decision threshold (a binary
    model's `decision_threshold.json`), its positive class wherever that one's probability
    reaches the threshold. Evaluation, batch prediction and the serving handler all decide here."""
    if not decision or decision.get("threshold") is None:
        return probabilities.argmax(axis=1)
    positive = decision["positive_index"]
    return np.where(probabilities[:, positive] >= decision["threshold"], positive, 1 - positive)
