"""The LightningModule that trains any net from models/nets.py for classification or regression."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytorch_lightning as pl
import torch
import torchmetrics
from pytorch_lightning.core.optimizer import LightningOptimizer
from pytorch_lightning.utilities.model_helpers import is_overridden
from torch import nn
from torch.nn import functional as F

from forgeml.data.datamodule import epoch_seed

STEP_HOOKS = ("on_before_backward", "on_after_backward", "on_before_optimizer_step")


def plain_steps(trainer: pl.Trainer) -> bool:
    """Whether `loss.backward()` and the torch optimizer's own `step()` do all that Lightning's
    `manual_backward` and `LightningOptimizer.step` would: one process, full precision, and no
    callback or module listening to the backward or optimizer-step hooks. Lightning calls every
    callback's hooks on each backward and step, listening or not, which costs more than a small
    net's step; a trainer that needs them (DDP, mixed precision, a listener) keeps them."""
    listeners = [*trainer.callbacks, trainer.lightning_module]
    return (
        type(trainer.strategy) is pl.strategies.SingleDeviceStrategy
        and type(trainer.precision_plugin) is pl.plugins.precision.Precision
        and not any(is_overridden(hook, listener) for hook in STEP_HOOKS for listener in listeners)
    )


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


@dataclass(frozen=True)
class StepSettings:
    """How `training_step` turns data batches into optimizer steps (the trainer's keys of these names).

    A step is one optimizer step, as `trainer.global_step` and `trainer.max_steps` count them: it
    takes `accumulate_grad_batches` data batches of `data.batch_size` rows; `log_every_n_steps`
    counts steps too.
    """

    accumulate_grad_batches: int = 1
    gradient_clip_val: float | None = None
    gradient_clip_algorithm: str = "norm"
    log_every_n_steps: int = 10
    scheduler_interval: str = "epoch"


class ForgeModule(pl.LightningModule):
    """Cross-entropy for classes (weighted by `class_weights`, if given), MSE on the standardised
    target for regression.

    Optimisation is manual: each `training_step` receives a block of data batches (see
    `TableDataModule`) and takes the optimizer steps for all of them, so Lightning's per-call
    overhead (hooks, progress, result collection) is paid once a block rather than once a batch.
    Everything the automatic loop would do per step happens here per step: gradient accumulation
    and clipping, the LR scheduler (per step or per epoch), `max_steps`, and the logging cadence.
    """

    def __init__(
        self,
        net: nn.Module,
        task: str,
        num_classes: int,
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable[..., Any] | None = None,
        target_mean: float = 0.0,
        target_std: float = 1.0,
        steps: StepSettings | None = None,
        seed: int | None = None,
        class_weights: torch.Tensor | None = None,
    ) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.net = net
        # regression trains on the standardised target; metrics are reported in its own units
        self.target_mean, self.target_std = target_mean, target_std
        self.task = task
        self.make_optimizer = optimizer
        self.make_scheduler = scheduler
        self.steps = steps or StepSettings()
        self.seed = seed
        self.val_metrics = validation_metrics(task, num_classes)
        self.val_loss = torchmetrics.MeanMetric()
        # a buffer, so it follows the module to the GPU; summed on device, read once an epoch
        self.register_buffer("epoch_loss_sum", torch.zeros(()), persistent=False)
        self.epoch_batches = 0
        # train.class_weights (rare_classes.class_weights): a buffer, so it follows the module
        self.register_buffer("class_weights", class_weights, persistent=False)
        self.plain_steps = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def _loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if self.task == "classification":
            return F.cross_entropy(outputs, targets, weight=self.class_weights)
        return F.mse_loss(outputs.squeeze(-1), targets)

    def on_train_start(self) -> None:
        self.plain_steps = plain_steps(self.trainer)

    def on_train_batch_start(self, _: Any, batch_idx: int) -> None:
        """Reseed from (seed, epoch) as an epoch's training begins: dropout then draws the same
        numbers in a run resumed from a checkpoint as in one that never stopped, whatever used the
        global generators in between (a new DataLoader iterator draws a seed from torch's)."""
        if batch_idx == 0 and self.seed is not None:
            pl.seed_everything(epoch_seed(self.seed, self.current_epoch), workers=True, verbose=False)

    def training_step(self, block: list[tuple[torch.Tensor, torch.Tensor]], _: int) -> None:
        optimizer = self.optimizers()
        accumulate = self.steps.accumulate_grad_batches
        last_block = self.trainer.fit_loop.epoch_loop.batch_progress.is_last_batch
        for position, (inputs, targets) in enumerate(block):
            if self._max_steps_reached():
                break
            loss = self._loss(self(inputs), targets)
            self._backward(loss / accumulate if accumulate > 1 else loss)
            self.epoch_loss_sum.add_(loss.detach())  # in place: no nn.Module.__setattr__ per batch
            self.epoch_batches += 1
            # the epoch's last batch steps with what it has, as Lightning's automatic loop does
            if self.epoch_batches % accumulate and not (last_block and position == len(block) - 1):
                continue
            self._optimizer_step(optimizer)
            if self.global_step % self.steps.log_every_n_steps == 0:
                self._log_step_loss(loss)
        if last_block and self.steps.scheduler_interval == "epoch":
            # before validation and the checkpoint, where Lightning's automatic loop steps it too
            self._scheduler_step()

    def _backward(self, loss: torch.Tensor) -> None:
        if self.plain_steps:
            loss.backward()
        else:
            self.manual_backward(loss)

    def _step(self, optimizer: LightningOptimizer) -> None:
        """The torch optimizer's step between the two callbacks that Lightning's manual loop hangs
        on every `LightningOptimizer` to count it (`trainer.global_step`) and profile it."""
        if self.plain_steps:
            optimizer._on_before_step()
            optimizer.optimizer.step()
            optimizer._on_after_step()
        else:
            optimizer.step()

    def _log_step_loss(self, loss: torch.Tensor) -> None:
        """Straight to the loggers, at this step: Lightning flushes `self.log` once a block."""
        value = loss.item()
        for logger in self.loggers:
            logger.log_metrics({"train/loss_step": value, "epoch": self.current_epoch}, step=self.global_step)
        if self.trainer.progress_bar_callback is not None:
            # for the bar alone: each `self.log` walks Lightning's whole result state (~0.5 ms)
            self.log("train/loss_step", value, prog_bar=True, logger=False)

    def _optimizer_step(self, optimizer: LightningOptimizer) -> None:
        if self.steps.gradient_clip_val:
            self.clip_gradients(
                optimizer,
                gradient_clip_val=self.steps.gradient_clip_val,
                gradient_clip_algorithm=self.steps.gradient_clip_algorithm,
            )
        self._step(optimizer)
        optimizer.zero_grad()
        if self.steps.scheduler_interval == "step":
            self._scheduler_step()

    def _max_steps_reached(self) -> bool:
        return 0 <= self.trainer.max_steps <= self.global_step

    def _scheduler_step(self) -> None:
        scheduler = self.lr_schedulers()
        if scheduler is not None:
            scheduler.step()

    def on_train_epoch_end(self) -> None:
        self.log("train/loss", self.epoch_loss_sum / max(self.epoch_batches, 1), sync_dist=True)
        self._log_at_global_step()
        self.epoch_loss_sum.zero_()
        self.epoch_batches = 0

    def transfer_batch_to_device(self, batch: Any, device: torch.device, dataloader_idx: int) -> Any:
        """A batch is (inputs, targets), a training block a list of them: moved pair by pair, where
        Lightning's generic walk over any nesting costs a tenth of a small net's step."""
        if isinstance(batch[0], torch.Tensor):
            return tuple(tensor.to(device, non_blocking=True) for tensor in batch)
        return [self.transfer_batch_to_device(pair, device, dataloader_idx) for pair in batch]

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
        self._log_at_global_step()
        self.log_dict(self.val_metrics.compute())
        self.val_loss.reset()
        self.val_metrics.reset()

    def _log_at_global_step(self) -> None:
        """Epoch metrics share the step axis of `train/loss_step`: optimizer steps."""
        self.log("step", float(self.global_step))
        self.log("epoch", float(self.current_epoch))

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
