"""Structured-config schemas for every group in conf/.

Hydra merges each group file onto its schema, so a typo (`model.hiden=3`) or a wrong type
(`trainer.max_epochs=abc`) is refused while composing, before any work starts. The schemas are
registered in Hydra's ConfigStore by the `hydra_plugins.forgeml_schemas` package, which Hydra
imports on start-up whoever composes conf/: the forgeml CLI, the tests, or DVC's `exp run -S`.

This module imports only the standard library and OmegaConf: it runs on every Hydra start.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from omegaconf import MISSING, DictConfig, OmegaConf


class Task(str, Enum):
    auto = "auto"
    classification = "classification"
    regression = "regression"


class FeatureType(str, Enum):
    numeric = "numeric"
    categorical = "categorical"


class Activation(str, Enum):
    relu = "relu"
    gelu = "gelu"
    silu = "silu"
    tanh = "tanh"


def open_mapping(value_type: type) -> Any:
    """A typed mapping field that accepts new keys from the command line.

    Hydra's struct mode refuses new keys and asks for `++`; for mappings whose keys are the
    user's own (column names, metric names) that is the wrong default, so these nodes are
    created non-struct while keeping their value type checked.
    """
    return field(
        default_factory=lambda: DictConfig(
            {}, key_type=str, element_type=value_type, flags={"struct": False}
        )
    )


@dataclass
class PathsConfig:
    root_dir: str = "."
    data_dir: str = "data"
    raw_dir: str = "data/raw"
    processed_dir: str = "data/processed"
    models_dir: str = "models"
    reports_dir: str = "reports"
    log_dir: str = "logs"


@dataclass
class DataConfig:
    """A tabular source: `source` is a `_target_` call returning a DataFrame."""

    name: str = MISSING
    source: Any = MISSING
    target: str = MISSING
    task: Task = Task.auto
    features: dict[str, FeatureType] = open_mapping(FeatureType)
    drop: list[str] = field(default_factory=list)
    val_size: float = 0.15
    test_size: float = 0.15
    batch_size: int = 64
    num_workers: int = 0


@dataclass
class FileDataConfig(DataConfig):
    """The user's own CSV or Parquet file."""

    path: str = MISSING


@dataclass
class MLPConfig:
    _target_: str = "forgeml.models.nets.MLP"
    # an int is one width repeated `depth` times (sweepable); a list gives each layer's width
    hidden: Any = field(default_factory=lambda: [128, 128])
    depth: int = 2
    dropout: float = 0.1
    activation: Activation = Activation.relu


@dataclass
class CNNConfig:
    _target_: str = "forgeml.models.nets.CNN"
    image_shape: list[int] = field(default_factory=lambda: [1, 8, 8])
    channels: list[int] = field(default_factory=lambda: [16, 32])
    hidden: int = 64
    dropout: float = 0.1
    activation: Activation = Activation.relu


@dataclass
class OptimizerConfig:
    _target_: str = "torch.optim.AdamW"
    _partial_: bool = True
    lr: float = 1e-3
    weight_decay: float = 0.0


@dataclass
class TrainerConfig:
    _target_: str = "pytorch_lightning.Trainer"
    accelerator: str = "auto"
    devices: Any = "auto"
    strategy: Any = "auto"
    num_nodes: int = 1
    precision: Any = "32-true"
    max_epochs: int = 20
    min_epochs: int = 1
    deterministic: Any = True
    gradient_clip_val: float | None = None
    accumulate_grad_batches: int = 1
    check_val_every_n_epoch: int = 1
    log_every_n_steps: int = 10
    limit_train_batches: Any = None
    limit_val_batches: Any = None
    enable_progress_bar: bool = True
    enable_model_summary: bool = False
    benchmark: bool = False
    sync_batchnorm: bool = False


@dataclass
class CSVLoggerConfig:
    _target_: str = "pytorch_lightning.loggers.CSVLogger"
    name: str = "csv"


@dataclass
class TensorBoardLoggerConfig:
    _target_: str = "pytorch_lightning.loggers.TensorBoardLogger"
    name: str = "tensorboard"
    default_hp_metric: bool = False


@dataclass
class WandbLoggerConfig:
    _target_: str = "pytorch_lightning.loggers.WandbLogger"
    project: str = "forgeml"
    name: str | None = None
    group: str | None = None
    job_type: str = "train"
    tags: list[str] = field(default_factory=list)
    log_model: bool = False


@dataclass
class CheckpointConfig:
    _target_: str = "pytorch_lightning.callbacks.ModelCheckpoint"
    dirpath: str = MISSING
    filename: str = "best"
    monitor: str = "val/loss"
    mode: str = "min"
    save_top_k: int = 1
    save_last: bool = True
    auto_insert_metric_name: bool = False
    enable_version_counter: bool = False


@dataclass
class EarlyStoppingConfig:
    _target_: str = "pytorch_lightning.callbacks.EarlyStopping"
    monitor: str = "val/loss"
    mode: str = "min"
    patience: int = 5
    min_delta: float = 0.0


@dataclass
class CallbacksConfig:
    model_checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    early_stopping: EarlyStoppingConfig | None = field(default_factory=EarlyStoppingConfig)


@dataclass
class ForgeConfig:
    """The root: what `params.yaml` holds once composed and resolved."""

    seed: int | None = 42
    ckpt_path: str | None = None
    # the metric a Hydra sweeper (Optuna) optimises; `forgeml train` returns it
    optimized_metric: str | None = None
    paths: PathsConfig = field(default_factory=PathsConfig)
    data: Any = MISSING
    model: Any = MISSING
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    scheduler: Any = None
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    logger: Any = None
    callbacks: CallbacksConfig = field(default_factory=CallbacksConfig)


# (group, name, schema) for ConfigStore; group files extend them with `/schema/<group>/<name>@_here_`
SCHEMAS: list[tuple[str | None, str, type]] = [
    (None, "forgeml_schema", ForgeConfig),
    ("schema/paths", "default", PathsConfig),
    ("schema/data", "table", DataConfig),
    ("schema/data", "file", FileDataConfig),
    ("schema/model", "mlp", MLPConfig),
    ("schema/model", "cnn", CNNConfig),
    ("schema/trainer", "default", TrainerConfig),
    ("schema/logger", "csv", CSVLoggerConfig),
    ("schema/logger", "tensorboard", TensorBoardLoggerConfig),
    ("schema/logger", "wandb", WandbLoggerConfig),
    ("schema/callbacks", "default", CallbacksConfig),
]


def register_schemas() -> None:
    """Put every schema into Hydra's ConfigStore (idempotent)."""
    from hydra.core.config_store import ConfigStore

    store = ConfigStore.instance()
    for group, name, node in SCHEMAS:
        store.store(group=group, name=name, node=node)


def resolved_config(cfg: DictConfig) -> dict[str, Any]:
    """The config as plain data, interpolations resolved: what travels inside artifacts."""
    return OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)


def plain(value: Any) -> Any:
    """An enum field's value as the string it stands for."""
    return getattr(value, "value", value)
