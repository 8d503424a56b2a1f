"""`forgeml serve example`: a request built from a model's own features that its preprocessing
takes as it is, and a curl line a shell splits into the intended arguments."""

from __future__ import annotations

import base64
import io
import json
import shlex

import numpy as np
import pandas as pd
from PIL import Image

from forgeml.data.checks import TypeRules, check_table
from forgeml.data.preprocessing import fit_preprocessor
from forgeml.data.transform import decode_image, encode_features
from forgeml.serving.examples import curl_line, example_record


def png(value: int) -> bytes:
    out = io.BytesIO()
    Image.new("L", (6, 4), color=value).save(out, format="PNG")
    return out.getvalue()


def fitted_spec() -> dict:
    rng = np.random.default_rng(0)
    rows = 40
    frame = pd.DataFrame(
        {
            "age": rng.normal(40, 10, rows),
            "city": rng.choice(["paris", "rome"], rows),
            "joined": pd.date_range("2019-01-01", periods=rows, freq="30D").astype(str),
            "review": [f"good product number {i}" for i in range(rows)],
            "photo": [png(int(v)) for v in rng.integers(0, 255, rows)],
            "label": rng.choice(["a", "b"], rows),
        }
    )
    declared = {"review": "text", "photo": "image", "joined": "datetime"}
    frame, schema = check_table(frame, "label", declared=declared, rules=TypeRules())
    return fit_preprocessor(frame, schema, TypeRules())


def test_example_has_every_feature_with_a_value_the_preprocessing_takes():
    spec = fitted_spec()
    record = example_record(spec)
    assert list(record) == [feature["name"] for feature in spec["features"]]
    assert record["city"] in ("paris", "rome")
    assert 2019 <= int(record["joined"][:4]) <= 2022
    assert set(record["review"].split()) <= set(spec["features"][3]["vocabulary"])
    assert decode_image(base64.b64decode(record["photo"])).size == (6, 4)
    encoded = encode_features(spec, {name: [value] for name, value in record.items()})
    assert encoded.shape == (1, spec["input_dim"]) and np.isfinite(encoded).all()


def test_curl_line_splits_into_the_intended_arguments_whatever_the_values():
    body = {"instances": [{"name": "O'Brien; rm -rf ~", "n": 1}]}
    line = curl_line("https://127.0.0.1:8443/predictions/m", body, "/run dir/key_file.json", "/c/cert.pem")
    arguments = shlex.split(line)
    header = arguments[arguments.index("-H") + 1]
    assert header.startswith("Authorization: Bearer $(python3 -c ")
    assert arguments[arguments.index("-d") + 1] == json.dumps(body)
    assert arguments[arguments.index("--cacert") + 1] == "/c/cert.pem"
    assert arguments[-1] == "https://127.0.0.1:8443/predictions/m"
    assert "'/run dir/key_file.json'" in line
