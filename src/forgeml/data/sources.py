"""Where rows come from. Each source is a `_target_` in conf/data/ returning a DataFrame."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from forgeml.errors import ForgeError

BUNDLED = ("breast_cancer", "wine", "diabetes", "digits")


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
    """A CSV or Parquet file, chosen by extension."""
    file = checked_data_file(path)
    if file.suffix.lower() in (".parquet", ".pq"):
        return pd.read_parquet(file)
    try:
        return pd.read_csv(file)
    except pd.errors.EmptyDataError as error:
        raise ForgeError(f"data file {file} is empty") from error
    except pd.errors.ParserError as error:
        raise ForgeError(f"cannot parse {file} as CSV: {error}") from error


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
