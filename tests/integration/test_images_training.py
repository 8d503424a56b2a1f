"""A short training run of the ResNet on image files, decoded in a data-loader worker process."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from forgeml.data.sources import write_digits_images
from forgeml.stages import prepare, train


def test_resnet_trains_an_epoch_on_tiny_images_decoded_in_a_worker(make_config, tmp_path):
    folder = write_digits_images(tmp_path / "digits")
    for digit in folder.iterdir():
        for extra in sorted(digit.glob("*.png"))[8:]:
            extra.unlink()  # a few images per class are enough to train and export
    cfg = make_config(
        "data=images",
        f"data.path={folder}",
        "data.num_workers=1",
        "model=resnet",
        "model.width=8",
        "trainer.max_epochs=1",
    )
    prepare.run(cfg)
    metrics = train.run(cfg)
    assert np.isfinite(metrics["val/loss"])
    # exported with a dynamic batch: any number of rows
    program = torch.export.load(Path(cfg.paths.models_dir) / "model.pt2").module()
    assert program(torch.zeros(3, 64)).shape == (3, 10)
