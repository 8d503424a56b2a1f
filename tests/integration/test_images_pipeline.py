"""Images end to end: scikit-learn's digits as a PNG folder per class, through `dvc repro` in a
`forgeml init` project (data=images, model=cnn), one real TorchServe (base64 and raw-bytes
requests, undecodable images), `forgeml predict` on a CSV of image paths, and `forgeml monitor`
on the inference log: unshifted traffic is not flagged, brightened traffic is."""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
import urllib.error
import urllib.request
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from forgeml.data.sources import write_digits_images
from tests.helpers.cli import commit_all, run
from tests.helpers.ports import free_serve_ports

pytestmark = pytest.mark.slow

# the project's own choices, so that every command (dvc's stages, serve, deploy, predict,
# monitor) composes the same config
CONFIG = """defaults:
  - /forgeml_base@_here_
  - override data: images
  - override model: cnn
  - override logger: none
  - _self_
data:
  path: data/raw/digits
optimizer:
  lr: 0.005
trainer:
  max_epochs: 10
  enable_progress_bar: false
monitor:
  sample_rate: 1.0
  wandb: false
"""


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`forgeml init`, the digits written as PNG files under data/raw/digits, `dvc repro`."""
    root = tmp_path_factory.mktemp("images")
    run(["forgeml", "init", "digits"], root)
    project = root / "digits"
    write_digits_images(project / "data/raw/digits")
    (project / "conf/config.yaml").write_text(CONFIG + free_serve_ports())
    run(["forgeml", "compose"], project)
    commit_all(project)
    run(["dvc", "repro"], project)
    return project


def test_digits_as_png_with_cnn_reach_90_percent_test_accuracy_through_dvc(project):
    assert json.loads((project / "reports/metrics.json").read_text())["test/accuracy"] >= 0.9
    spec = json.loads((project / "models/preprocessor.json").read_text())
    assert [(f["name"], f["type"], f["size"], f["channels"]) for f in spec["features"]] == [
        ("image", "image", [8, 8], 1)
    ]
    manifest = json.loads((project / "models/model.json").read_text())
    assert manifest["config"]["model"]["image_shape"] == [1, 8, 8]


def test_image_archive_imports_nothing_of_forgeml_and_unpickles_nothing(project):
    archive = zipfile.ZipFile(project / "serve/model-store/images.mar")
    code = b"".join(archive.read(name) for name in archive.namelist() if name.endswith(".py"))
    assert b"import forgeml" not in code and b"from forgeml" not in code
    assert not re.search(rb"^\s*(import|from) (pickle|dill|joblib)\b", code, re.MULTILINE)
    assert b"torch.load(" not in code
    assert not [name for name in archive.namelist() if name.endswith((".pkl", ".pt", ".pth", ".ckpt"))]


def test_served_answers_equal_predict_bad_images_get_400_and_monitor_flags_brightened_images(project):
    files = sorted((project / "data/raw/digits").glob("*/*.png"))
    rows = pd.DataFrame({"image": [str(f.relative_to(project)) for f in files[::15]]})
    rows.to_csv(project / "rows.csv", index=False)
    run(["forgeml", "predict", "input=rows.csv", "output=scored.csv"], project)
    scored = pd.read_csv(project / "scored.csv")
    images = [(project / path).read_bytes() for path in rows["image"]]
    unshifted = [f.read_bytes() for f in files[1::3]]
    try:
        run(["forgeml", "serve", "start"], project)
        run(["forgeml", "deploy"], project)
        status, answer = post(project, {"instances": [{"image": encoded(image)} for image in images]})
        assert status == 200
        raw = [post(project, image, "image/png")[1]["predictions"][0] for image in images[:5]]
        bad = post(project, {"instances": [{"image": encoded(images[0])}, {"image": encoded(b"no image")}]})
        bad_raw = post(project, b"\x89PNG\r\n\x1a\n truncated", "image/png")
        shutil.rmtree(project / "serve/inference-log")
        post(project, {"instances": [{"image": encoded(image)} for image in unshifted]})
        logged = log_text(project)
        steady = monitor(project)
        shutil.rmtree(project / "serve/inference-log")
        post(project, {"instances": [{"image": encoded(brightened(image))} for image in unshifted]})
        shifted = monitor(project)
    finally:
        run(["forgeml", "serve", "stop"], project, check=False)
    predictions = answer["predictions"]
    assert [p["label"] for p in predictions] == [str(label) for label in scored["prediction"]]
    served = np.array([[p["probabilities"][str(k)] for k in range(10)] for p in predictions])
    expected = scored[[f"probability_{k}" for k in range(10)]].to_numpy()
    np.testing.assert_allclose(served, expected, rtol=1e-5, atol=1e-6)
    served_raw = [[p["probabilities"][str(k)] for k in range(10)] for p in raw]
    np.testing.assert_allclose(served_raw, served[:5], rtol=1e-5, atol=1e-6)
    assert bad[0] == 400 and bad[1]["field"] == "image" and bad[1]["instance"] == 1
    assert "not a decodable image" in bad[1]["error"]
    assert bad_raw[0] == 400 and bad_raw[1]["field"] == "image"
    entry = json.loads(logged.splitlines()[0])
    assert set(entry["input"]["image"]) == {"brightness", "contrast", "width", "height"}
    assert encoded(unshifted[0])[:40] not in logged
    assert steady["drifted_features"] == []
    assert "image:brightness" in shifted["drifted_features"] and shifted["exit_code"] == 3


def encoded(image: bytes) -> str:
    return base64.b64encode(image).decode()


def brightened(image: bytes) -> bytes:
    """The image with every grey level raised by 80 (clipped at white)."""
    pixels = np.asarray(Image.open(io.BytesIO(image)), dtype=np.int16)
    out = io.BytesIO()
    Image.fromarray(np.clip(pixels + 80, 0, 255).astype(np.uint8)).save(out, format="PNG")
    return out.getvalue()


def log_text(project: Path) -> str:
    return "".join(path.read_text() for path in sorted((project / "serve/inference-log").glob("*.jsonl")))


def monitor(project: Path) -> dict[str, Any]:
    result = run(["forgeml", "monitor", "--json"], project, check=False)
    assert result.returncode in (0, 3), result.stderr[-3000:]
    return json.loads(result.stdout[result.stdout.index("{") :])["monitor"]


def post(project: Path, body: Any, content_type: str = "application/json") -> tuple[int, Any]:
    """POST to the served model: a dict as JSON, bytes as they are; (status, decoded answer)."""
    params = yaml.safe_load((project / "params.yaml").read_text())
    key = json.loads((project / "serve/runtime/key_file.json").read_text())["inference"]["key"]
    url = f"http://127.0.0.1:{params['serve']['inference_port']}/predictions/images"
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = {"Authorization": f"Bearer {key}", "Content-Type": content_type}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data, headers), timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())
