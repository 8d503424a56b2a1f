"""Where rows come from. Each source is a `_target_` in conf/data/ returning a DataFrame."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from forgeml import tables
from forgeml.errors import ForgeError

BUNDLED = ("breast_cancer", "wine", "diabetes", "digits")
# what an image file's name ends with: a text column of such names is an image column
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def bundled(dataset: str) -> pd.DataFrame:
    """A dataset shipped inside scikit-learn (no download); class labels keep their names."""
    import sklearn.datasets

    if dataset not in BUNDLED:
        raise ForgeError(f"unknown bundled dataset '{dataset}'; choose one of {', '.join(BUNDLED)}")
    bunch = getattr(sklearn.datasets, f"load_{dataset}")(as_frame=True)
    frame = bunch.frame.copy()
    names = getattr(bunch, "target_names", None)
    if names is not None and dataset != "digits":
        frame["target"] = [str(names[i]) for i in frame["target"]]
    return frame


def checked_data_file(path: str | Path) -> Path:
    """`path`, refused with a message when it is missing or empty (read whole or streamed)."""
    file = Path(path)
    if not file.is_file():
        raise ForgeError(f"data file not found: {file} (set data.path=...)")
    if file.stat().st_size == 0:
        raise ForgeError(f"data file {file} is empty")
    return file


def streaming_enabled(data: Mapping[str, Any], path: str | Path | None) -> bool:
    """Whether to stream: `data.streaming` if set, else whether `path` is above the size threshold.
    Here, not in data/streaming.py, so that deciding imports no torch."""
    choice = data.get("streaming")
    if choice is not None:
        return bool(choice)
    if path is None or not Path(path).is_file():
        return False
    return Path(path).stat().st_size > data["streaming_above_mb"] * 2**20


def read_table(path: str) -> pd.DataFrame:
    """A CSV or Parquet file, chosen by extension; image paths in it become the images' bytes."""
    file = checked_data_file(path)
    return with_image_files(tables.read_table(file, key="data.path"), file.parent)


def is_image_path_column(column: pd.Series) -> bool:
    """Whether every present value of `column` is text naming a PNG or JPEG file."""
    present = column.dropna()
    return bool(len(present)) and all(
        isinstance(value, str) and value.lower().endswith(IMAGE_SUFFIXES) for value in present
    )


def with_image_files(frame: pd.DataFrame, base: Path) -> pd.DataFrame:
    """`frame` with each image-path column (paths relative to `base`, the table's folder)
    holding the files' bytes instead, so that the splits carry the images themselves."""
    for name in frame.columns:
        if is_image_path_column(frame[name]):
            frame[name] = [
                None if value is None or value != value else read_image_file(base / value)
                for value in frame[name]
            ]
    return frame


def read_image_file(path: Path) -> bytes:
    """The bytes of an image file, refused with its name when missing or not decodable."""
    from forgeml.data.transform import decode_image

    try:
        content = path.read_bytes()
        decode_image(content)
    except (OSError, ValueError) as error:
        raise ForgeError(f"image file {path}: {error}") from None
    return content


def image_folder(path: str, target: str = "label", column: str = "image") -> pd.DataFrame:
    """A folder per class, each holding PNG or JPEG files: one row per file, the image's bytes
    in `column` and its folder's name in `target`."""
    root = Path(path)
    if not root.is_dir():
        raise ForgeError(f"image folder not found: {root} (set data.path=<a folder per class>)")
    files = sorted(f for f in root.glob("*/*") if f.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ForgeError(f"{root} holds no class folder with {', '.join(IMAGE_SUFFIXES)} files")
    return pd.DataFrame(
        {column: [read_image_file(file) for file in files], target: [file.parent.name for file in files]}
    )


def write_digits_images(directory: str | Path) -> Path:
    """scikit-learn's bundled digits (1797 8x8 grey images) written as PNG files in a folder per
    class, `<directory>/<digit>/<index>.png`: image data for examples and tests, no download."""
    import sklearn.datasets
    from PIL import Image

    root = Path(directory)
    digits = sklearn.datasets.load_digits()
    # the data's grey levels run from 0 to 16
    pixels = (digits.images * (255 / 16)).round().astype("uint8")
    for index, (image, label) in enumerate(zip(pixels, digits.target, strict=True)):
        folder = root / str(label)
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(folder / f"{index:04d}.png")
    return root


def synthetic(n_samples: int, n_features: int, n_classes: int, seed: int | None) -> pd.DataFrame:
    """Separable-but-noisy classification data of any size, for tests and benchmarks."""
    from sklearn.datasets import make_classification

    features, target = make_classification(
        n_samples=n_samples,
        n_features=n_features,
        n_informative=max(2, n_features // 2),
        n_classes=n_classes,
        random_state=seed,
    )
    frame = pd.DataFrame(features, columns=[f"x{i}" for i in range(n_features)])
    frame["target"] = target
    return frame


# generated text: each class draws from words of its own, mixed with filler words every class uses
CLASS_WORDS = (
    ("refund", "broken", "late", "damaged", "missing", "complaint", "cancel", "faulty"),
    ("great", "fast", "perfect", "love", "excellent", "smooth", "helpful", "recommend"),
)
FILLER_WORDS = ("the", "order", "was", "and", "item", "delivery", "i", "it", "my", "with", "this", "package")


def mixed(n_samples: int, seed: int | None) -> pd.DataFrame:
    """A table of every feature type for tests and examples: `amount` (numeric), `channel`
    (categorical), `opened` (a date, ISO 8601, some with a time) and `note` (generated text),
    and a binary `target` that depends on each of them."""
    rng = np.random.default_rng(seed)
    target = rng.integers(0, 2, n_samples)
    opened = _dates(rng, n_samples)
    summer = np.isin(opened.month, (6, 7, 8))
    amount = rng.normal(50 + 20 * target, 15)
    channel = np.where(
        rng.random(n_samples) < 0.3 + 0.4 * target, "web", rng.choice(["store", "phone"], n_samples)
    )
    # the label is noisy: text, season and amount each carry part of it
    notes = [_note(rng, label if rng.random() < 0.8 else 1 - label) for label in target]
    return pd.DataFrame(
        {
            "amount": amount.round(2),
            "channel": channel,
            "opened": [_date_text(t, rng) for t in opened],
            "note": notes,
            "target": np.where(summer & (rng.random(n_samples) < 0.3), 1, target),
        }
    )


def seasonal(n_samples: int, seed: int | None) -> pd.DataFrame:
    """A regression whose target follows the season and the weekday of `date` (plus a numeric
    `price`): with the date a model can explain most of it, without it little."""
    rng = np.random.default_rng(seed)
    dates = _dates(rng, n_samples)
    price = rng.normal(10, 2, n_samples)
    season = 10 * np.sin(2 * np.pi * dates.dayofyear / 365.25) + 4 * (dates.dayofweek >= 5)
    sales = 50 + season - 0.5 * price + rng.normal(0, 1, n_samples)
    return pd.DataFrame({"date": dates.strftime("%Y-%m-%d"), "price": price.round(2), "sales": sales})


def _dates(rng: np.random.Generator, n_samples: int) -> pd.DatetimeIndex:
    start = pd.Timestamp("2020-01-01").value // 10**9
    seconds = rng.integers(start, start + 4 * 365 * 86400, n_samples)
    return pd.to_datetime(seconds, unit="s")


def _date_text(moment: pd.Timestamp, rng: np.random.Generator) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S") if rng.random() < 0.5 else moment.strftime("%Y-%m-%d")


def _note(rng: np.random.Generator, label: int) -> str:
    words = rng.choice(CLASS_WORDS[label], rng.integers(1, 4)).tolist()
    words += rng.choice(FILLER_WORDS, rng.integers(3, 9)).tolist()
    return " ".join(rng.permutation(words).tolist())


def rare_events(
    n_samples: int, n_features: int, positive_share: float, class_sep: float, seed: int | None
) -> pd.DataFrame:
    """A binary task where `positive_share` of the rows (e.g. 1 %) are `fraud`, the rest `legit`:
    the rare-class case (class weights, per-class recall, a decision threshold), generated;
    `class_sep` sets how far apart the classes lie (make_classification's)."""
    from sklearn.datasets import make_classification

    if not 0 < positive_share < 0.5:
        raise ForgeError(f"positive_share={positive_share} must lie between 0 and 0.5 (the rarer class)")
    features, target = make_classification(
        n_samples=n_samples,
        n_features=n_features,
        n_informative=max(2, n_features // 2),
        weights=[1 - positive_share],
        flip_y=0.0,
        class_sep=class_sep,
        random_state=seed,
    )
    frame = pd.DataFrame(features, columns=[f"x{i}" for i in range(n_features)])
    frame["target"] = pd.Series(target).map({0: "legit", 1: "fraud"})
    return frame


# short business names (word lists, space-separated): each kind has its own keywords (the first
# common, the last rare); every name draws from the same place, family and style words
NAME_KEYWORDS = {
    "food": "bakery cafe kitchen bistro diner pizzeria grill deli eatery tavern",
    "motor": "garage motors autos tyres carwash bodyshop mechanics towing dealership autoparts",
    "health": "clinic pharmacy dental physio optician chemist medical surgery wellness hospital",
}
NAME_WORDS = (
    "riverside northgate oakwood hillcrest westside harbour meadow station market bridge church park "
    "valley kings queens green lake mill high street smith patel garcia murphy jones okafor nguyen "
    "kowalski rossi haddad golden royal city family united premier quality express central village "
    "sons brothers ltd co group and the new old best"
)


def short_names(n_samples: int, seed: int | None, ambiguous_share: float = 0.08) -> pd.DataFrame:
    """Short business names (2-5 words) and their `kind` (food, motor, health): one keyword
    mostly decides the kind, the other words are shared by every kind. Keywords are drawn with
    Zipf shares, so the rare ones are seen a handful of times in a few hundred rows;
    `ambiguous_share` of the names carry no keyword, or a random kind's, so no model reaches
    accuracy 1."""
    rng = np.random.default_rng(seed)
    keywords = {kind: words.split() for kind, words in NAME_KEYWORDS.items()}
    zipf = 1.0 / np.arange(1, len(keywords["food"]) + 1)
    labels = rng.choice(list(keywords), n_samples)
    names = []
    for label in labels:
        words = rng.choice(NAME_WORDS.split(), rng.integers(2, 6), replace=False)
        if rng.random() >= ambiguous_share:
            words[0] = rng.choice(keywords[label], p=zipf / zipf.sum())
        elif rng.random() < 0.5:
            words[0] = rng.choice(keywords[rng.choice(list(keywords))])
        names.append(" ".join(rng.permutation(words)))
    return pd.DataFrame({"name": names, "kind": labels})
