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


def _dropout(p: float) -> nn.Module:
    """An Identity where nothing is dropped (the layers keep their indices, so checkpoints load
    either way): a Dropout(0) still costs a few percent of a small net's step."""
    return nn.Dropout(p) if p else nn.Identity()


def layer_widths(hidden: int | Sequence[int], depth: int) -> list[int]:
    """`hidden` as a list of widths: one int means `depth` layers of that width."""
    widths = [hidden] * depth if isinstance(hidden, int) else list(hidden)
    if not widths or any(not isinstance(w, int) or w < 1 for w in widths):
        raise ForgeError(f"model.hidden must be a positive int or a list of them, got {hidden!r}")
    return widths


def checked_image_shape(model: str, image_shape: Sequence[int], input_dim: int, fix: str) -> tuple[int, ...]:
    """`image_shape` as a tuple, refused unless its pixels are the data's input columns; `fix`
    starts the advice before "model.image_shape"."""
    if math.prod(image_shape) != input_dim:
        raise ForgeError(
            f"model={model} expects images of shape {list(image_shape)} ({math.prod(image_shape)} "
            f"pixel columns) but the data has {input_dim} input columns; {fix} model.image_shape"
        )
    return tuple(image_shape)


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
            layers += [nn.Linear(width, next_width), _activation(activation), _dropout(dropout)]
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
        self.image_shape = checked_image_shape("cnn", image_shape, input_dim, "use data=digits or set")
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
            _dropout(dropout),
            nn.Linear(hidden, output_dim),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x.reshape(-1, *self.image_shape)))


# the mean encoder's table: its output is the table times EMBEDDING_STEP_SCALE, so that each of
# Adam's steps (about lr per weight, whatever the gradient's size) moves a word's vector that many
# times further than the rest of the net moves; it starts near zero (EMBEDDING_START_STD in output
# units), so that words the data says little about add little noise to the mean
EMBEDDING_STEP_SCALE = 10.0
EMBEDDING_START_STD = 0.01


class MeanEmbedding(nn.Module):
    """One text feature's token ids (float columns, 0 = padding) -> the mean of its non-padding
    tokens' vectors, `dim` wide (nn.EmbeddingBag; an empty text gives zeros).

    A bag of words that learns about as fast as a linear model learns its word weights. With
    torch's default N(0, 1) vectors, a few hundred short texts (about a hundred steps of the
    default AdamW at lr 1e-3) barely moved a vector from its random start: the net learnt from
    random features of the words and stayed well below tf-idf + logistic regression (benchmarks
    page, "Short text against a linear baseline")."""

    def __init__(self, vocabulary: int, max_tokens: int, dim: int) -> None:
        super().__init__()
        self.embedding = nn.EmbeddingBag(vocabulary, dim, mode="mean", padding_idx=0)
        nn.init.normal_(self.embedding.weight, std=EMBEDDING_START_STD / EMBEDDING_STEP_SCALE)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.embedding(ids.long()) * EMBEDDING_STEP_SCALE


class TokenTransformer(nn.Module):
    """One text feature's token ids (float columns, 0 = padding) -> a vector of `dim`: a small
    encoder (2 layers, 4 heads) over the tokens plus a learned start token, which is never
    padding (so an empty text still attends to something), read off that start token."""

    def __init__(self, vocabulary: int, max_tokens: int, dim: int) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocabulary, dim, padding_idx=0)
        self.start = nn.Parameter(torch.zeros(1, 1, dim))
        self.position = nn.Parameter(torch.zeros(1, max_tokens + 1, dim))
        layer = nn.TransformerEncoderLayer(dim, nhead=4, dim_feedforward=2 * dim, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, num_layers=2, enable_nested_tensor=False)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        tokens = ids.long()
        start = self.start.expand(tokens.shape[0], -1, -1)
        sequence = torch.cat([start, self.embedding(tokens)], dim=1) + self.position
        padding = torch.cat([torch.zeros_like(tokens[:, :1], dtype=torch.bool), tokens == 0], dim=1)
        return self.encoder(sequence, src_key_padding_mask=padding)[:, 0]


# model.text_encoder -> the module that encodes one text feature
TEXT_ENCODERS = {"mean": MeanEmbedding, "transformer": TokenTransformer}


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
        kind = TEXT_ENCODERS[getattr(encoder, "value", encoder)]
        self.encoders = nn.ModuleList([kind(vocabulary, width, dim) for _, width, vocabulary in texts])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        parts = [x.index_select(1, self.dense_columns)]
        for (start, width), encoder in zip(self.spans, self.encoders, strict=True):
            parts.append(encoder(x[:, start : start + width]))
        return self.body(torch.cat(parts, dim=1))


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a shortcut (a 1x1 projection where the shape changes)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, bias=False), nn.BatchNorm2d(out_channels)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.relu(out + shortcut)


# blocks per stage of the BasicBlock ResNets
RESNET_STAGES = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3)}
# images smaller than this (either side) keep their resolution through the stem
SMALL_IMAGE = 64


class ResNet(nn.Module):
    """ResNet-18/34 (He et al. 2015) trained from scratch, on images given as flat pixel rows
    reshaped to `image_shape` (C, H, W); `width` is the first stage's channels (64 as published).

    Written here in torchvision's layout (conv1/bn1, layer1-4 of BasicBlocks, fc) rather than
    imported from torchvision: torchvision's wheels are built against one torch release each and
    fail to load beside another (its compiled operators do not register), while this net needs
    nothing but torch. For small images (below SMALL_IMAGE pixels a side) the 7x7 stride-2 stem
    and its max-pool would shrink a 32x32 image to 8x8 before the first block, so the stem is a
    3x3 stride-1 convolution without pooling instead, as for CIFAR."""

    def __init__(
        self,
        input_dim: int,
        output_dim: int,
        image_shape: Sequence[int] = (3, 32, 32),
        depth: int = 18,
        width: int = 64,
    ) -> None:
        super().__init__()
        self.image_shape = checked_image_shape("resnet", image_shape, input_dim, "set")
        if depth not in RESNET_STAGES:
            raise ForgeError(f"model.depth={depth}: choose one of {', '.join(map(str, RESNET_STAGES))}")
        channels, height, image_width = self.image_shape
        if min(height, image_width) < SMALL_IMAGE:
            self.conv1 = nn.Conv2d(channels, width, 3, 1, 1, bias=False)
            self.maxpool: nn.Module = nn.Identity()
        else:
            self.conv1 = nn.Conv2d(channels, width, 7, 2, 3, bias=False)
            self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        stages, in_channels = [], width
        for index, blocks in enumerate(RESNET_STAGES[depth]):
            out_channels = width * 2**index
            stride = 1 if index == 0 else 2
            stage = [BasicBlock(in_channels, out_channels, stride)]
            stage += [BasicBlock(out_channels, out_channels, 1) for _ in range(blocks - 1)]
            stages.append(nn.Sequential(*stage))
            in_channels = out_channels
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_channels, output_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x.reshape(-1, *self.image_shape)))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))
