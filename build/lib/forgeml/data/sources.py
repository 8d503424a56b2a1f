"""Where rows come from. Each source is a `_target_` in conf/data/ returning a DataFrame."""

from __future__ import annotations

from pathlib import Path

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


def read_table(path: str) -> pd.DataFrame:
    """A CSV or Parquet file, chosen by extension."""
    file = Path(path)
    if not file.is_file():
        raise ForgeError(f"data file not found: {file} (set data.path=...)")
    if file.stat().st_size == 0:
        raise ForgeError(f"data file {file} is empty")
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
