"""The fitted preprocessing: fitted on train only, applied identically everywhere."""

from __future__ import annotations

import numpy as np
import pandas as pd

from forgeml.data import transform
from forgeml.data.checks import check_table
from forgeml.data.preprocessing import feature_columns, fit_preprocessor
from forgeml.data.transform import MISSING_CATEGORY, encode_features, encode_labels, label_names


def fitted(frame: pd.DataFrame, target: str = "y") -> tuple[pd.DataFrame, dict]:
    checked, schema = check_table(frame, target)
    return checked, fit_preprocessor(checked, schema)


def test_numeric_is_imputed_with_the_median_and_standardised():
    _, spec = fitted(pd.DataFrame({"x": [1.0, 2.0, None, 10.0], "y": ["a", "b", "a", "b"]}))
    x = spec["features"][0]
    assert x["fill"] == 2.0
    encoded = encode_features(spec, {"x": np.array([np.nan, 2.0])})
    expected = (2.0 - x["mean"]) / x["std"]
    assert np.allclose(encoded[:, 0], [expected, expected])


def test_missing_category_is_its_own_category_and_unknown_is_all_zeros():
    _, spec = fitted(pd.DataFrame({"city": ["Oslo", "Rome", None, "Oslo"], "y": [0, 1, 0, 1]}))
    assert spec["features"][0]["categories"] == sorted(["Oslo", "Rome", MISSING_CATEGORY])
    encoded = encode_features(spec, {"city": np.array(["Rome", None, "Paris"], dtype=object)})
    assert encoded.shape == (3, 3)
    assert encoded.sum(axis=1).tolist() == [1.0, 1.0, 0.0]


def test_constant_column_keeps_a_unit_scale_instead_of_dividing_by_zero():
    _, spec = fitted(pd.DataFrame({"x": [5.0] * 4, "y": [0, 1, 0, 1]}))
    assert spec["features"][0]["std"] == 1.0
    encoded = encode_features(spec, {"x": np.array([5.0, 7.0, np.nan])})
    # centred on the constant, unscaled; a missing value is the constant itself
    assert encoded[:, 0].tolist() == [0.0, 2.0, 0.0]


def test_labels_round_trip():
    _, spec = fitted(pd.DataFrame({"x": [1.0, 2.0, 3.0, 4.0], "y": ["cat", "dog", "ant", "dog"]}))
    indices = encode_labels(spec, np.array(["dog", "ant", "cat", "emu"]))
    assert indices.tolist()[:3] == [2, 0, 1] and indices[3] == -1
    assert label_names(spec, indices[:3]) == ["dog", "ant", "cat"]


def test_integer_labels_stay_integers():
    _, spec = fitted(pd.DataFrame({"x": [1.0, 2.0, 3.0, 4.0], "y": [3, 1, 2, 1]}))
    assert spec["labels"] == [1, 2, 3]


def test_regression_spec_keeps_target_scale():
    frame = pd.DataFrame({"x": np.arange(40.0), "y": np.arange(40.0) * 2.5 + 0.1})
    _, spec = fitted(frame)
    assert spec["task"] == "regression"
    assert np.isclose(spec["target_mean"], frame["y"].mean())


def test_feature_columns_match_the_spec_order():
    checked, spec = fitted(
        pd.DataFrame({"b": ["u", "v", "u", "v"], "a": [1.0, 2.0, 3.0, 4.0], "y": [0, 1, 0, 1]})
    )
    encoded = encode_features(spec, feature_columns(checked, spec))
    assert encoded.shape == (4, spec["input_dim"]) == (4, 3)
    assert encoded.dtype == np.float32


def test_overflowing_features_names_the_first_feature_beyond_float32_per_row():
    frame = pd.DataFrame({"city": ["Oslo", "Rome"] * 2, "x": [1.0, 2.0, 3.0, 4.0], "z": [0.0, 1.0] * 2})
    _, spec = fitted(frame.assign(y=[0, 1, 0, 1]))
    assert [f["name"] for f in spec["features"]] == ["city", "x", "z"]
    columns = {
        "city": np.array(["Oslo", "Rome", "Oslo", None], dtype=object),
        "x": np.array([1.0, 1e300, 3e38, -1e300]),
        "z": np.array([1e300, 1e300, 0.0, np.nan]),
    }
    inputs = encode_features(spec, columns)
    assert transform.overflowing_features(spec, inputs).tolist() == [2, 1, -1, 1]
    assert np.isfinite(inputs[2]).all()  # 3e38, standardised, still fits


def test_numeric_runs_encode_as_each_feature_alone_in_the_order_of_the_spec():
    frame = pd.DataFrame(
        {
            "a": [1.0, 4.0, None, 9.0],
            "b": [0.5, 0.25, 3.0, None],
            "city": ["Oslo", "Rome", None, "Oslo"],
            "c": [100.0, -3.0, 7.0, 2.0],
            "y": [0, 1, 0, 1],
        }
    )
    _, spec = fitted(frame)
    columns = {name: frame[name].to_numpy() for name in ("a", "b", "c")} | {"city": frame["city"].to_numpy()}
    encoded = encode_features(spec, columns)
    alone = {
        f["name"]: transform.standardise(f, transform.numeric_column(columns[f["name"]])).astype(np.float32)
        for f in spec["features"]
        if f["type"] == "numeric"
    }
    names = [f["name"] for f in spec["features"]]
    city_width = transform.feature_width(spec["features"][names.index("city")])
    position = 0
    for name in names:
        width = city_width if name == "city" else 1
        if name != "city":  # bit for bit: the same arithmetic, vectorised
            assert encoded[:, position].tobytes() == alone[name].tobytes()
        position += width
    assert encoded.shape == (4, 3 + city_width)
