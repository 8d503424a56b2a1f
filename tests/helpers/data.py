"""Small inputs built in memory: a toy preprocessing spec, random PNG files, a Chile-like table, the
example scripts."""

from __future__ import annotations

import importlib.util
import io
from types import ModuleType

import numpy as np
import pandas as pd
from PIL import Image

from tests.helpers.config import PROJECT_ROOT

# a two-feature preprocessing spec for unit tests that need no trained model
TOY_SPEC = {
    "format": "forgeml.preprocessor/1",
    "task": "classification",
    "target": "bought",
    "features": [
        {"name": "age", "type": "numeric", "fill": 30.0, "mean": 40.0, "std": 10.0, "min": 18.0, "max": 90.0},
        {"name": "city", "type": "categorical", "categories": ["berlin", "paris"]},
    ],
    "input_dim": 3,
    "labels": ["no", "yes"],
}


def random_images(count: int, shape: tuple[int, ...], seed: int = 0) -> list[bytes]:
    """`count` PNG files of random pixels, `shape` (height, width[, 3]) each."""
    rng = np.random.default_rng(seed)
    images = []
    for _ in range(count):
        out = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, shape).astype(np.uint8)).save(out, format="PNG")
        images.append(out.getvalue())
    return images


def load_example(name: str = "production_loop") -> ModuleType:
    """A script of examples/, imported by path (examples/ is not a package)."""
    spec = importlib.util.spec_from_file_location(name, PROJECT_ROOT / "examples" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def chile_like_table(rng: np.random.Generator, rows: int, wide: bool = False) -> pd.DataFrame:
    """Rows like carData::Chile's 7 features (a region, a town size of 7 values, sex, age,
    education, a log-normal income, a status-quo score); `wide` adds a 60-valued categorical (Zipf shares),
    a heavy-tailed amount and a 0/1 flag."""
    table = pd.DataFrame(
        {
            "region": rng.choice(["C", "M", "N", "S", "SA"], rows, p=[0.22, 0.04, 0.19, 0.27, 0.28]),
            "population": rng.choice(
                [3750.0, 15000.0, 25000.0, 50000.0, 125000.0, 175000.0, 250000.0],
                rows,
                p=[0.05, 0.15, 0.1, 0.1, 0.1, 0.2, 0.3],
            ),
            "sex": rng.choice(["F", "M"], rows),
            "age": np.clip(rng.normal(38.0, 14.7, rows).round(), 18.0, 95.0),
            "education": rng.choice(["P", "PS", "S"], rows, p=[0.28, 0.17, 0.55]),
            "income": rng.lognormal(np.log(25000.0), 0.9, rows).round(-2),
            "statusquo": rng.normal(0.0, 1.0, rows),
        }
    )
    if wide:
        zipf = 1.0 / np.arange(1, 61)
        table["city"] = rng.choice([f"city{i}" for i in range(60)], rows, p=zipf / zipf.sum())
        table["amount"] = rng.lognormal(0.0, 1.5, rows)
        table["flag"] = (rng.random(rows) < 0.1).astype(float)
    return table
