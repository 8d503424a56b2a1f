"""Small inputs built in memory: a toy preprocessing spec, random PNG files, the example scripts."""

from __future__ import annotations

import importlib.util
import io
from types import ModuleType

import numpy as np
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
