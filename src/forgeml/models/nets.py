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


class TextEncoder(nn.Module):
    """One text feature's token ids (float columns, 0 = padding) -> a vector of `dim`.

    `mean`: the mean of the non-padding tokens' embeddings (what nn.EmbeddingBag(mode="mean")
    computes, written out so that torch.export traces it with a dynamic batch). `transformer`: a
    small encoder (2 layers, 4 heads) over the tokens plus a learned start token, which is never
    padding (so an empty text still attends to something), read off that start token."""

    def __init__(self, vocabulary: int, max_tokens: int, dim: int, kind: str = "mean") -> None:
        super().__init__()
        self.kind = getattr(kind, "value", kind)
        self.embedding = nn.Embedding(vocabulary, dim, padding_idx=0)
        if self.kind == "transformer":
            self.start = nn.Parameter(torch.zeros(1, 1, dim))
            self.position = nn.Parameter(torch.zeros(1, max_tokens + 1, dim))
            layer = nn.TransformerEncoderLayer(dim, nhead=4, dim_feedforward=2 * dim, batch_first=True)
            self.encoder = nn.TransformerEncoder(layer, num_layers=2, enable_nested_tensor=False)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        tokens = ids.long()
        embedded = self.embedding(tokens)
        present = tokens != 0
        if self.kind == "mean":
            counts = present.sum(dim=1, keepdim=True).clamp(min=1)
            return embedded.sum(dim=1) / counts
        start = self.start.expand(tokens.shape[0], -1, -1)
        sequence = torch.cat([start, embedded], dim=1) + self.position
        padding = torch.cat([torch.zeros_like(present[:, :1]), ~present], dim=1)
        return self.encoder(sequence, src_key_padding_mask=padding)[:, 0]


class MixedInputNet(nn.Module):
    """A net over a table with text features: the input matrix is split by the preprocessor's
    layout, each text feature's id columns are encoded to a vector, and `body` (any net built
    for `input_dim` = tabular columns + one vector per text) sees them side by side. The
    embeddings live inside the exported model; the ids come from the archive's transform."""

    def __init__(
        self,
        body: nn.Module,
        dense_columns: Sequence[int],
        texts: Sequence[tuple[int, int, int]],
        dim: int,
        encoder: str = "mean",
    ) -> None:
        super().__init__()
        self.body = body
        self.register_buffer("dense_columns", torch.tensor(list(dense_columns), dtype=torch.long))
        self.spans = [(start, width) for start, width, _ in texts]
        self.encoders = nn.ModuleList(
            [TextEncoder(vocabulary, width, dim, encoder) for _, width, vocabulary in texts]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        parts = [x.index_select(1, self.dense_columns)]
        for (start, width), encoder in zip(self.spans, self.encoders, strict=True):
            parts.append(encoder(x[:, start : start + width]))
        return self.body(torch.cat(parts, dim=1))
