"""Image features without a server: the fitted encoding, reading a folder per class and an
image-path column, the refusal of undecodable files, the ResNet's shapes and export, and the drift
signals (a short training run: tests/integration/test_images_training.py)."""

from __future__ import annotations

import base64

import numpy as np
import pandas as pd
import pytest
import torch

from forgeml.data.checks import TypeRules, check_table
from forgeml.data.preprocessing import fit_preprocessor
from forgeml.data.sources import image_folder, read_table
from forgeml.data.transform import encode_features, feature_width, image_signals
from forgeml.errors import ForgeError
from forgeml.models.nets import ResNet
from forgeml.monitoring.signals import with_signals
from forgeml.stages.train import image_shape
from tests.helpers.data import random_images


def fitted(images: list[bytes], size: list[int] | None = None) -> dict:
    frame, schema = check_table(
        pd.DataFrame({"image": images, "label": ["a", "b"] * (len(images) // 2)}), "label"
    )
    return fit_preprocessor(frame, schema, TypeRules(image_size=size and tuple(size)))


def test_image_column_is_inferred_and_encoded_as_normalised_pixels_of_the_train_split():
    images = random_images(6, (6, 4, 3)) + random_images(2, (5, 5, 3), seed=1)
    spec = fitted(images)
    feature = spec["features"][0]
    # the most common size, RGB kept: 3 x 6 x 4 columns
    assert (feature["type"], feature["size"], feature["channels"]) == ("image", [6, 4], 3)
    assert spec["input_dim"] == feature_width(feature) == 72
    block = encode_features(spec, {"image": images})
    channels = block.reshape(len(images), 3, -1).transpose(1, 0, 2).reshape(3, -1)
    np.testing.assert_allclose(channels.mean(axis=1), 0.0, atol=1e-5)
    np.testing.assert_allclose(channels.std(axis=1), 1.0, atol=1e-4)
    as_text = [base64.b64encode(image).decode() for image in images]
    np.testing.assert_array_equal(encode_features(spec, {"image": as_text}), block)


def test_grey_images_are_one_channel_and_resized_to_data_image_size():
    feature = fitted(random_images(4, (8, 8)), size=[4, 6])["features"][0]
    assert (feature["size"], feature["channels"]) == ([4, 6], 1)
    assert feature_width(feature) == 24


def test_undecodable_image_in_a_class_folder_is_refused_naming_the_file(tmp_path):
    (tmp_path / "cat").mkdir()
    (tmp_path / "cat" / "ok.png").write_bytes(random_images(1, (4, 4))[0])
    (tmp_path / "cat" / "broken.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(ForgeError, match=r"cat/broken\.png.*not a decodable image"):
        image_folder(str(tmp_path))


def test_image_path_column_is_read_relative_to_the_csv(tmp_path):
    (tmp_path / "pictures").mkdir()
    images = random_images(4, (5, 5))
    for index, image in enumerate(images):
        (tmp_path / "pictures" / f"{index}.png").write_bytes(image)
    table = pd.DataFrame({"photo": [f"pictures/{i}.png" for i in range(4)], "label": [0, 1, 0, 1]})
    table.to_csv(tmp_path / "data.csv", index=False)
    frame, schema = check_table(read_table(str(tmp_path / "data.csv")), "label")
    assert schema.features == {"photo": "image"}
    assert frame["photo"].tolist() == images
    table.assign(photo=["pictures/0.png", "pictures/missing.png", None, None]).to_csv(tmp_path / "bad.csv")
    with pytest.raises(ForgeError, match=r"pictures/missing\.png"):
        read_table(str(tmp_path / "bad.csv"))


def test_resnet_adapts_its_stem_to_the_image_size_and_refuses_other_depths():
    small = ResNet(64, 10, [1, 8, 8], depth=18, width=8)
    large = ResNet(3 * 64 * 64, 2, [3, 64, 64], depth=34, width=8)
    assert small.conv1.kernel_size == (3, 3) and isinstance(small.maxpool, torch.nn.Identity)
    assert large.conv1.kernel_size == (7, 7) and isinstance(large.maxpool, torch.nn.MaxPool2d)
    stages = (large.layer1, large.layer2, large.layer3, large.layer4)
    assert [len(stage) for stage in stages] == [3, 4, 6, 3]
    assert small(torch.zeros(2, 64)).shape == (2, 10)
    with pytest.raises(ForgeError, match=r"model\.depth=50"):
        ResNet(64, 10, [1, 8, 8], depth=50)


def test_cnn_on_pixel_columns_keeps_the_configured_image_shape(make_config):
    cfg = make_config("model=cnn", "data=digits")
    spec = {"features": [{"name": f"pixel_{i}", "type": "numeric"} for i in range(64)]}
    assert image_shape(cfg.model, spec) == {}
    image = {"name": "image", "type": "image", "size": [5, 7], "channels": 3}
    assert image_shape(cfg.model, {"features": [image]}) == {"image_shape": [3, 5, 7]}


def test_drift_signals_of_logged_images_equal_those_of_their_bytes():
    images = random_images(3, (6, 9))
    logged = [image_signals(image) for image in images]
    assert logged[0]["width"] == 9 and logged[0]["height"] == 6
    spec = {"features": [{"name": "image", "type": "image"}]}
    from_bytes, kinds = with_signals(pd.DataFrame({"image": images}), spec)
    from_log, _ = with_signals(pd.DataFrame({"image": logged}), spec)
    signals = ["image:brightness", "image:contrast", "image:width", "image:height"]
    pd.testing.assert_frame_equal(from_bytes[signals], from_log[signals])
    assert kinds == dict.fromkeys(signals, "numeric")
