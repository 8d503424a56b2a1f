"""Plain nn.Modules, built from conf/model/ with `input_dim` and `output_dim` known from the data."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from forgeml.errors import ForgeError

ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "silu": nn.SiLU, "tanh": nn.Tanh}


def _activation(name: object) -> nn.Module:
    # OmegaConf hands enum fields over as the enum; its value is the name
    return ACTIVATIONS[getattr(name, "value", name)]()


def layer_widths(hidden: int | Sequence[int], depth: int) -> list[int]:
    """`hidden` as a list of widths: one int means `depth` layers of that width."""
    widths = [hidden] * depth if isinstance(hidden, int) else list(hidden)
    if not widths or any(not isinstance(w, int) or w < 1 for w in widths):
        raise ForgeError(f"model.hidden must be a positive int or a list of them, got {hidden!r}")
    return widths


class MLP(nn.Module):
    def __init__(
        self,
        input_dim: int,
        output_dim: int,
        hidden: int | Sequence[int] = (128, 128),
        depth: int = 2,
        dropout: float = 0.1,
        activation: str = "relu",
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = input_dim
        for next_width in layer_widths(hidden, depth):
            layers += [nn.Linear(width, next_width), _activation(activation), nn.Dropout(dropout)]
            width = next_width
        layers.append(nn.Linear(width, output_dim))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class CNN(nn.Module):
    """Conv blocks over images given as flat pixel rows, reshaped to `image_shape` (C, H, W)."""

    def __init__(
        self,
        input_dim: int,
        output_dim: int,
        image_shape: Sequence[int] = (1, 8, 8),
        channels: Sequence[int] = (16, 32),
        hidden: int = 64,
        dropout: float = 0.1,
        activation: str = "relu",
    ) -> None:
        super().__init__()
        self.image_shape = tuple(image_shape)
        if math.prod(self.image_shape) != input_dim:
            raise ForgeError(
                f"model=cnn expects images of shape {list(image_shape)} ({math.prod(image_shape)} "
                f"pixel columns) but the data has {input_dim} input columns; use data=digits or set "
                "model.image_shape"
            )
        blocks: list[nn.Module] = []
        in_channels = self.image_shape[0]
        for out_channels in channels:
            blocks += [
                nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1),
                _activation(activation),
                nn.MaxPool2d(2, ceil_mode=True),
            ]
            in_channels = out_channels
        self.features = nn.Sequential(*blocks, nn.Flatten())
        with torch.no_grad():
            flat = self.features(torch.zeros(1, *self.image_shape)).shape[1]
        self.head = nn.Sequential(
            nn.Linear(flat, hidden),
            _activation(activation),
            nn.Dropout(dropout),
            nn.Linear(hidden, output_dim),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x.reshape(-1, *self.image_shape)))
