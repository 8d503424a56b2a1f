"""train: fit a model with Lightning and export the best checkpoint as the model artifact.

Features and the flags that control them:
- seed: `seed` (seed_everything with workers; deterministic CPU training, `trainer.deterministic`)
- hardware: `trainer=cpu|gpu|ddp`, `trainer.devices`, `trainer.precision`, `trainer.num_nodes`
- best checkpoint and early stopping on `callbacks.model_checkpoint.monitor` (default val/loss)
- steps: `trainer.batches_per_training_step` batches per training_step call, one optimizer step per
  `trainer.accumulate_grad_batches` of them (ForgeModule); `gradient_clip_val`, `max_steps`,
  `limit_train_batches` (in batches), `log_every_n_steps` and `scheduler.interval` keep their meaning
- resume: `ckpt_path=models/checkpoints/last.ckpt` reproduces the uninterrupted run (same config)
- several machines: `trainer=ddp trainer.num_nodes=N` with MASTER_ADDR/MASTER_PORT/NODE_RANK set;
  sweeps on SLURM with `hydra/launcher=slurm`
- rare classes: `train.class_weights=balanced` or `{class: weight}` weights the loss
- logging: `logger=csv|tensorboard|wandb|none`, into the run's output directory
- sweeps: `-m` and `hparams_search=optuna`; the return value carries `optimized_metric`, and
  each job writes its model under its own output directory instead of models/

Writes models/model.pt2 (torch.export, dynamic batch), models/model.json (resolved config, its
hash, validation metrics) and models/preprocessor.json.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from forgeml.config import MLPConfig, check_ranges, check_scheduler, resolved_config
from forgeml.data.factory import build_datamodule
from forgeml.data.preprocessing import output_dim
from forgeml.data.transform import FIRST_TOKEN_ID, feature_width
from forgeml.layout import split_file
from forgeml.models.artifact import check_exportable, export_model
from forgeml.models.module import ForgeModule, InferenceModel, StepSettings
from forgeml.models.nets import MixedInputNet
from forgeml.models.quiet import progress_bars, quiet_lightning
from forgeml.models.rare_classes import class_weights, threshold_target

log = logging.getLogger(__name__)
# trainer keys the module or the data module apply (Lightning's Trainer refuses the first three under
# manual optimisation, and would count the last in blocks rather than in batches)
MODULE_KEYS = (
    "accumulate_grad_batches",
    "gradient_clip_val",
    "gradient_clip_algorithm",
    "batches_per_training_step",
    "limit_train_batches",
)
# trainer keys forgeml applies itself: torch's intra-op threads, and the progress bar (on a terminal)
OWN_KEYS = ("threads", "enable_progress_bar")
# model keys for MixedInputNet, not the net's constructor
TEXT_KEYS = ("text_encoder", "text_embedding_dim")


def run(cfg: DictConfig) -> dict[str, Any]:
    if in_sweep():
        # each job of a sweep keeps its own model; none overwrites models/
        cfg.paths.models_dir = str(run_output_dir(cfg) / "models")
    datamodule, model, trainer = build(cfg)
    datamodule.setup("fit")  # load before the clock starts: throughput measures training alone
    started = time.perf_counter()
    trainer.fit(model=model, datamodule=datamodule, ckpt_path=cfg.ckpt_path)
    fit_seconds = time.perf_counter() - started
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
    metrics["fit/seconds"] = fit_seconds
    metrics["fit/samples_per_second"] = datamodule.tables["train"].rows_served / fit_seconds
    if trainer.is_global_zero:
        export_best(cfg, trainer, model, datamodule.spec, metrics)
    _close_wandb(trainer)
    return metrics


def build(cfg: DictConfig) -> tuple[pl.LightningDataModule, ForgeModule, pl.Trainer]:
    """The data, the module and the trainer that `run` fits, wired from the config (seeded first)."""
    if cfg.seed is not None:
        pl.seed_everything(cfg.seed, workers=True)
    quiet_lightning()
    check_ranges("trainer", cfg.trainer)
    if cfg.trainer.threads:
        torch.set_num_threads(cfg.trainer.threads)
    threshold_target(cfg.evaluate.threshold_for)  # a typo there is refused before training
    datamodule = build_datamodule(
        cfg.paths.processed_dir,
        cfg.data,
        cfg.seed,
        batches_per_training_step=cfg.trainer.batches_per_training_step,
        limit_train_batches=cfg.trainer.limit_train_batches,
    )
    spec = datamodule.spec
    net = build_net(cfg.model, spec)
    check_exportable(net, spec["input_dim"])
    scale = {k: spec[k] for k in ("target_mean", "target_std") if k in spec}
    scheduler, interval = scheduler_and_interval(cfg.scheduler)
    model = ForgeModule(
        net,
        task=spec["task"],
        num_classes=output_dim(spec),
        optimizer=instantiate(cfg.optimizer),
        scheduler=scheduler,
        steps=StepSettings(
            accumulate_grad_batches=cfg.trainer.accumulate_grad_batches,
            gradient_clip_val=cfg.trainer.gradient_clip_val,
            gradient_clip_algorithm=cfg.trainer.gradient_clip_algorithm,
            log_every_n_steps=cfg.trainer.log_every_n_steps,
            scheduler_interval=interval,
        ),
        seed=cfg.seed,
        class_weights=loss_weights(cfg, spec),
        **scale,
    )
    output_dir = run_output_dir(cfg)
    bars = progress_bars(cfg.trainer.enable_progress_bar)
    callbacks = [instantiate(c) for c in cfg.callbacks.values() if c] + bars
    trainer: pl.Trainer = instantiate(
        without(cfg.trainer, (*MODULE_KEYS, *OWN_KEYS)),
        callbacks=callbacks,
        enable_progress_bar=bool(bars),
        logger=make_logger(cfg, output_dir),
        default_root_dir=output_dir,
    )
    return datamodule, model, trainer


def build_net(model: DictConfig, spec: dict[str, Any]) -> torch.nn.Module:
    """The configured net for the preprocessor's input matrix. With text features, the net is
    built for the tabular columns plus one `model.text_embedding_dim` vector per text feature,
    and wrapped in MixedInputNet, which makes those vectors from the token-id columns."""
    starts = np.cumsum([0] + [feature_width(f) for f in spec["features"]])
    texts = [
        (int(start), f["max_tokens"], len(f["vocabulary"]) + FIRST_TOKEN_ID)
        for f, start in zip(spec["features"], starts, strict=False)
        if f["type"] == "text"
    ]
    if not texts:
        return instantiate(
            without(model, TEXT_KEYS),
            input_dim=spec["input_dim"],
            output_dim=output_dim(spec),
            **image_shape(model, spec),
        )
    dense = [
        column
        for f, start in zip(spec["features"], starts, strict=False)
        if f["type"] != "text"
        for column in range(int(start), int(start) + feature_width(f))
    ]
    # a net of the project's own (open schema) may leave the keys out: MLPConfig's defaults
    dim = model.get("text_embedding_dim", MLPConfig.text_embedding_dim)
    body = instantiate(
        without(model, TEXT_KEYS), input_dim=len(dense) + dim * len(texts), output_dim=output_dim(spec)
    )
    return MixedInputNet(body, dense, texts, dim, model.get("text_encoder", MLPConfig.text_encoder))


def image_shape(model: DictConfig, spec: dict[str, Any]) -> dict[str, list[int]]:
    """A net taking `image_shape` (cnn, resnet) gets the data's: (channels, height, width) of its
    one image feature; without one (pixel columns, as data=digits) the config's stays."""
    images = [f for f in spec["features"] if f["type"] == "image"]
    if "image_shape" not in model or len(images) != 1:
        return {}
    return {"image_shape": [images[0]["channels"], *images[0]["size"]]}


def loss_weights(cfg: DictConfig, spec: dict[str, Any]) -> torch.Tensor | None:
    """`train.class_weights` as the loss's per-class weights (None: unweighted)."""
    weights = class_weights(cfg.train.class_weights, spec, split_file(cfg.paths.processed_dir, "train"))
    return None if weights is None else torch.from_numpy(weights)


def export_best(
    cfg: DictConfig, trainer: pl.Trainer, model: ForgeModule, spec: dict[str, Any], metrics: dict[str, float]
) -> None:
    """The best checkpoint's weights (or the last epoch's) as the model artifact."""
    scale = {k: spec[k] for k in ("target_mean", "target_std") if k in spec}
    best = trainer.checkpoint_callback.best_model_path
    if best:
        state = torch.load(best, map_location="cpu", weights_only=True)["state_dict"]
        model.load_state_dict(state)
        metrics[f"best/{trainer.checkpoint_callback.monitor}"] = float(
            trainer.checkpoint_callback.best_model_score
        )
    export_model(
        InferenceModel(model.net.cpu(), spec["task"], **scale),
        spec,
        resolved_config(cfg),
        cfg.paths.models_dir,
        metrics,
    )
    log.info("exported %s/model.pt2 (best: %s)", cfg.paths.models_dir, best or "last epoch")


def scheduler_and_interval(scheduler: DictConfig | None) -> tuple[Any, str]:
    """The scheduler's factory and whether it steps once per optimizer step or per epoch."""
    check_scheduler(scheduler)
    if not scheduler:
        return None, "epoch"
    interval = scheduler.get("interval", "epoch")
    return instantiate(without(scheduler, ("interval",))), interval


def without(node: DictConfig, keys: tuple[str, ...]) -> dict[str, Any]:
    """A config group, resolved, less the keys that are not its target's arguments."""
    return {k: v for k, v in OmegaConf.to_container(node, resolve=True).items() if k not in keys}


def in_sweep() -> bool:
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def run_output_dir(cfg: DictConfig) -> Path:
    """Hydra's run directory when run from the CLI; logs/train otherwise (tests, notebooks, and
    a process where Hydra's Compose API ran before: it leaves a Hydra config without a run
    directory behind)."""
    if HydraConfig.initialized():
        output = OmegaConf.select(HydraConfig.get(), "runtime.output_dir", throw_on_missing=False)
        if output:
            return Path(output)
    return Path(cfg.paths.log_dir) / "train"


def make_logger(cfg: DictConfig, output_dir: Path) -> Any:
    if not cfg.logger:
        return False
    if "WandbLogger" in cfg.logger._target_:
        # offline unless the user chose otherwise: tracking must never need the network
        os.environ.setdefault("WANDB_MODE", "offline")
    return instantiate(cfg.logger, save_dir=str(output_dir))


def _close_wandb(trainer: pl.Trainer) -> None:
    """Finish a wandb run so that sweeps and tests start the next one cleanly."""
    for logger in trainer.loggers:
        if type(logger).__name__ == "WandbLogger":
            logger.experiment.finish()
