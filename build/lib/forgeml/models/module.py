"""The LightningModule that trains any net from models/nets.py for classification or regression."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytorch_lightning as pl
import torch
import torchmetrics
from torch import nn
from torch.nn import functional as F


def validation_metrics(task: str, num_classes: int) -> torchmetrics.MetricCollection:
    if task == "classification":
        return torchmetrics.MetricCollection(
            {
                "accuracy": torchmetrics.Accuracy(task="multiclass", num_classes=num_classes),
                "f1_macro": torchmetrics.F1Score(task="multiclass", num_classes=num_classes, average="macro"),
            },
            prefix="val/",
        )
    return torchmetrics.MetricCollection(
        {
            "mae": torchmetrics.MeanAbsoluteError(),
            "rmse": torchmetrics.MeanSquaredError(squared=False),
        },
        prefix="val/",
    )


class ForgeModule(pl.LightningModule):
    """Cross-entropy for classes, MSE on the standardised target for regression."""

    def __init__(
        self,
        net: nn.Module,
        task: str,
        num_classes: int,
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable[..., Any] | None = None,
        target_mean: float = 0.0,
        target_std: float = 1.0,
    ) -> None:
        super().__init__()
        self.net = net
        # regression trains on the standardised target; metrics are reported in its own units
        self.target_mean, self.target_std = target_mean, target_std
        self.task = task
        self.make_optimizer = optimizer
        self.make_scheduler = scheduler
        self.val_metrics = validation_metrics(task, num_classes)
        self.val_loss = torchmetrics.MeanMetric()
        # a buffer, so it follows the module to the GPU; summed on device, read once an epoch
        self.register_buffer("epoch_loss_sum", torch.zeros(()), persistent=False)
        self.epoch_batches = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def _loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if self.task == "classification":
            return F.cross_entropy(outputs, targets)
        return F.mse_loss(outputs.squeeze(-1), targets)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], _: int) -> torch.Tensor:
        inputs, targets = batch
        loss = self._loss(self(inputs), targets)
        self.epoch_loss_sum += loss.detach()
        self.epoch_batches += 1
        # self.log costs about a millisecond: per step it would slow small models down by half
        if self.global_step % self.trainer.log_every_n_steps == 0:
            self.log("train/loss_step", loss, prog_bar=True)
        return loss

    def on_train_epoch_end(self) -> None:
        self.log("train/loss", self.epoch_loss_sum / max(self.epoch_batches, 1), sync_dist=True)
        self.epoch_loss_sum.zero_()
        self.epoch_batches = 0

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], _: int) -> None:
        inputs, targets = batch
        outputs = self(inputs)
        self.val_loss.update(self._loss(outputs, targets), weight=len(inputs))
        if self.task == "classification":
            self.val_metrics.update(outputs.argmax(-1), targets)
        else:
            self.val_metrics.update(
                self._in_target_units(outputs.squeeze(-1)), self._in_target_units(targets)
            )

    def on_validation_epoch_end(self) -> None:
        """Logged once per validation, synced across processes by torchmetrics."""
        self.log("val/loss", self.val_loss.compute(), prog_bar=True)
        self.log_dict(self.val_metrics.compute())
        self.val_loss.reset()
        self.val_metrics.reset()

    def _in_target_units(self, values: torch.Tensor) -> torch.Tensor:
        return values * self.target_std + self.target_mean

    def configure_optimizers(self) -> Any:
        optimizer = self.make_optimizer(self.parameters())
        if self.make_scheduler is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": self.make_scheduler(optimizer)}


class InferenceModel(nn.Module):
    """What gets exported: raw inputs in, class probabilities or the target value out."""

    def __init__(self, net: nn.Module, task: str, target_mean: float = 0.0, target_std: float = 1.0):
        super().__init__()
        self.net = net
        self.classify = task == "classification"
        self.target_mean, self.target_std = target_mean, target_std

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outputs = self.net(x)
        if self.classify:
            return torch.softmax(outputs, dim=-1)
        return outputs.squeeze(-1) * self.target_std + self.target_mean
