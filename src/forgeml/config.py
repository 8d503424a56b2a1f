"""Structured-config schemas for every config group forgeml ships (src/forgeml/conf/).

Hydra merges each group file onto its schema, so a typo (`model.hiden=3`) or a wrong type
(`trainer.max_epochs=abc`) is refused while composing, before any work starts. The schemas are
registered in Hydra's ConfigStore by the `hydra_plugins.forgeml_schemas` package, which Hydra
imports on start-up whoever composes conf/: the forgeml CLI, the tests, or DVC's `exp run -S`.

The shipped YAML is the one source of defaults; the schema defaults equal it (a test checks).
This module imports only the standard library and OmegaConf: it runs on every Hydra start.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from omegaconf import MISSING, DictConfig, OmegaConf

from forgeml import __version__
from forgeml.contract import AUTO_SAMPLE_RATE
from forgeml.errors import ForgeError

# forgeml's own config groups, inside the package; its primary config is not named `config`,
# so that a project's conf/config.yaml can include it (`/forgeml_base@_here_`) without recursion
PACKAGE_CONFIG = "pkg://forgeml.conf"
BASE_CONFIG = "forgeml_base"
VERSION_RESOLVER = "forgeml.version"


class Task(str, Enum):
    auto = "auto"
    classification = "classification"
    regression = "regression"


class FeatureType(str, Enum):
    numeric = "numeric"
    categorical = "categorical"
    datetime = "datetime"
    text = "text"
    image = "image"


class MissingTarget(str, Enum):
    """What `prepare` does with a row whose target is empty: refuse the data, naming the row, or
    leave such rows out (their count is in prepare's summary)."""

    error = "error"
    drop = "drop"


class TextEncoder(str, Enum):
    mean = "mean"
    transformer = "transformer"


class Activation(str, Enum):
    relu = "relu"
    gelu = "gelu"
    silu = "silu"
    tanh = "tanh"


class DriftMethod(str, Enum):
    """auto: KS / chi-squared for a small reference, Wasserstein / Jensen-Shannon for a large one."""

    auto = "auto"
    ks = "ks"
    wasserstein = "wasserstein"
    chi2 = "chi2"
    jensenshannon = "jensenshannon"
    psi = "psi"


def open_mapping(value_type: type) -> Any:
    """A typed mapping field that accepts new keys from the command line.

    Hydra's struct mode refuses new keys and asks for `++`; for mappings whose keys are the
    user's own (column names, metric names) that is the wrong default, so these nodes are
    created non-struct while keeping their value type checked.
    """
    return field(
        default_factory=lambda: DictConfig({}, key_type=str, element_type=value_type, flags={"struct": False})
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
class TextConfig:
    """Text features: inferred for string columns where at least `multi_word_share` of the
    values hold several words and at least `unique_share` are distinct; encoded as the ids of
    the first `max_tokens` tokens in a vocabulary of the `vocab_size` most frequent ones."""

    vocab_size: int = 5000
    max_tokens: int = 64
    multi_word_share: float = 0.5
    unique_share: float = 0.5


@dataclass
class ImageConfig:
    # [height, width] every image is resized to; null: the most common size in the train split
    size: list[int] | None = None
    # the most pixels an image sent to the served model may hold, checked from its header before
    # it is decoded; null: 64x the model's input, at least a megapixel (serving/archive.py)
    max_pixels: int | None = None


@dataclass
class ContractConfig:
    """How far new training data may stray from the data contract of the version that serves (or
    of the model in models/) before `prepare` refuses it, naming each column (data/contract.py)."""

    # the share of rows a column's categories unseen in the reference may hold
    new_category_share: float = 0.01
    # how far a range (numbers, dates, text lengths, image sizes) may reach beyond the reference's,
    # as a fraction of the reference range's width on either side
    range_widening: float = 0.5
    # how much a column's missing rate may rise (0.05: from 2 % to 7 % passes, to 8 % does not)
    missing_rate_rise: float = 0.05
    # true: a deliberate change, accepted with a warning naming each break; the new contract then
    # travels with the model trained on it
    accept: bool = False


@dataclass
class DataConfig:
    """A tabular source: `source` is a `_target_` call returning a DataFrame."""

    name: str = MISSING
    source: Any = MISSING
    target: str = MISSING
    task: Task = Task.auto
    features: dict[str, FeatureType] | None = open_mapping(FeatureType)
    drop: list[str] = field(default_factory=list)
    on_missing_target: MissingTarget = MissingTarget.error
    val_size: float = 0.15
    test_size: float = 0.15
    batch_size: int = 64
    num_workers: int = 0
    # larger than memory: prepare, train and evaluate read the data in Parquet/CSV batches.
    # null: on for a file source larger than `streaming_above_mb` (see data/streaming.py)
    streaming: bool | None = None
    streaming_above_mb: float = 1024.0
    # datetime features: a strptime format all values follow (null: ISO 8601 and common ones),
    # and the share of a string column's values that must parse for it to be taken as dates
    date_format: str | None = None
    datetime_share: float = 0.9
    text: TextConfig = field(default_factory=TextConfig)
    image: ImageConfig = field(default_factory=ImageConfig)
    contract: ContractConfig = field(default_factory=ContractConfig)


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
    # text features: `mean` of token embeddings (a bag of words), or a small `transformer`
    text_encoder: TextEncoder = TextEncoder.mean
    text_embedding_dim: int = 32


def custom_model_schema() -> DictConfig:
    """A project's own net (`_target_: mynets.ResMLP`): its keys are its constructor's, so the
    node is open (new keys from the command line need no `+`); only `_target_` is required."""
    return DictConfig({"_target_": MISSING}, flags={"struct": False})


@dataclass
class CNNConfig:
    _target_: str = "forgeml.models.nets.CNN"
    image_shape: list[int] = field(default_factory=lambda: [1, 8, 8])
    channels: list[int] = field(default_factory=lambda: [16, 32])
    hidden: int = 64
    dropout: float = 0.1
    activation: Activation = Activation.relu


@dataclass
class ResNetConfig:
    _target_: str = "forgeml.models.nets.ResNet"
    # taken from the data's image feature when it has one (see stages/train.py)
    image_shape: list[int] = field(default_factory=lambda: [3, 32, 32])
    depth: int = 18
    width: int = 64


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
    devices: Any = 1
    strategy: Any = "auto"
    num_nodes: int = 1
    precision: Any = "32-true"
    max_epochs: int = 20
    # optimizer steps (-1: no limit); a step takes `accumulate_grad_batches` batches
    max_steps: int = -1
    min_epochs: int = 1
    deterministic: Any = True
    gradient_clip_val: float | None = None
    gradient_clip_algorithm: str = "norm"
    accumulate_grad_batches: int = 1
    # data batches per `training_step` call, each with its own optimizer step (ForgeModule)
    batches_per_training_step: int = 8
    check_val_every_n_epoch: int = 1
    # Lightning's sanity check runs validation batches before training; forgeml's validation_step
    # is its own and the net's eval-mode forward is traced before training (check_exportable),
    # so by default it is skipped: on small data it costs as much as several training steps
    num_sanity_val_steps: int = 0
    log_every_n_steps: int = 10
    limit_train_batches: Any = None
    limit_val_batches: Any = None
    # null: a progress bar only when the output is a terminal (not in logs, CI or DVC's output)
    enable_progress_bar: bool | None = None
    # torch's intra-op threads while training (torch.set_num_threads); 0: torch's default, one per
    # core. One: the small nets forgeml trains by default run faster on one thread (benchmarks page)
    threads: int = 1
    enable_model_summary: bool = False
    benchmark: bool = False
    sync_batchnorm: bool = False
    # the data module shards its own batches across processes (whole index tensors per batch)
    use_distributed_sampler: bool = False


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


class AlertOn(str, Enum):
    """What an alert rule watches in the monitor's verdict on a window (monitoring/alerts.py)."""

    drift = "drift"
    decay = "decay"
    estimated_drop = "estimated_drop"
    measured_drop = "measured_drop"
    rejection_rate = "rejection_rate"
    p99_latency = "p99_latency"


class AlertAction(str, Enum):
    """What a fired rule does: notify, return to the last gated version, or retrain and deploy."""

    webhook = "webhook"
    rollback = "rollback"
    retrain = "retrain"


@dataclass
class AlertRule:
    """One entry of `monitor.alerts`, checked at setup by `monitoring.alerts.alert_rules`."""

    on: AlertOn = MISSING
    actions: list[AlertAction] = field(default_factory=lambda: [AlertAction.webhook])


@dataclass
class WebhookConfig:
    """Where the `webhook` action POSTs; the signing secret is read from the variable named."""

    url: str | None = None
    secret_env: str = "FORGEML_WEBHOOK_SECRET"
    timeout_s: float = 5.0
    retries: int = 3


@dataclass
class AlertThresholds:
    """The limits of the rules the verdict has no limit for (rejections, latency)."""

    rejection_rate: float = 0.05
    p99_latency_ms: float = 1000.0


@dataclass
class WatchConfig:
    """`forgeml watch`: how many windows to judge before it exits (null: until stopped)."""

    max_runs: int | None = None


@dataclass
class SevereConfig:
    """When one feature's shift is dataset drift on its own: a drifted feature whose effect size
    reaches one of these (None switches that effect size off)."""

    # PSI on the feature's bins (numeric: reference deciles; categorical: categories), bins
    # expected to hold fewer than 10 current values pooled into one
    psi: float | None = 1.0
    # numeric features: Wasserstein distance / reference std (a shift by this many stds)
    wasserstein: float | None = 1.0


@dataclass
class MonitorConfig:
    """The inference log the serving handler writes, and `forgeml monitor`'s drift checks."""

    # inference log: share of requests recorded (0 to 1, 0: no log; or "auto": every request
    # until the window holds min_samples records, then auto_base_rate), where, per-file size cap
    # and rotated files kept. Typed Any for "auto" (check_sample_rate checks it)
    sample_rate: Any = 0.1
    auto_base_rate: float = 0.1
    log_dir: str = "serve/inference-log"
    log_max_bytes: int = 10_000_000
    log_backups: int = 5
    # inference-log privacy: columns never written, and columns written as a keyed hash
    # (HMAC-SHA256, key in serve.runtime_dir), which drift still compares as categories
    redact: list[str] = field(default_factory=list)
    hash: list[str] = field(default_factory=list)
    # request fields other than the features (e.g. a client's comment) written to the log; no
    # other is, and redact/hash cover these too
    log_extra_fields: list[str] = field(default_factory=list)
    # what to compare: the log (default) or a CSV/Parquet file or JSONL directory, narrowed to
    # one model's records and the last rows; cut into `windows` windows of window_duration
    # (e.g. 24h, 1d), the last ending now; the last window gives the verdict
    current: str | None = None
    model_name: str | None = None
    window_rows: int | None = None
    window_duration: str | None = None
    windows: int = 1
    # the end of the last window (ISO 8601, e.g. 2025-06-02T00:00Z); null: now
    window_end: str | None = None
    # delayed labels: a CSV/Parquet file with columns id,label, joined to the log by request id
    labels: str | None = None
    # retrain when a measured score (accuracy, f1_macro, r2) fell more than this below the
    # evaluation's, or the estimated (CBPE) accuracy fell below min_estimated_accuracy
    max_metric_drop: float | None = 0.05
    min_estimated_accuracy: float | None = None
    # tests: `auto` picks by column type and reference size (at most small_reference_rows: tests
    # with p-values, drift when p < p_value; larger: distances, drift when >= distance_threshold)
    numeric_method: DriftMethod = DriftMethod.auto
    categorical_method: DriftMethod = DriftMethod.auto
    small_reference_rows: int = 1000
    # a numeric column with at most this many distinct values is tested as categorical
    categorical_max_distinct: int = 5
    p_value: float = 0.05
    distance_threshold: float = 0.1
    psi_threshold: float = 0.1
    # missing values: drift when their share moved by at least this (and p < p_value)
    missing_share_threshold: float = 0.05
    # per column: {name: {method: <a DriftMethod>, threshold: <number>}}, checked by `monitor`
    columns: dict[str, Any] = open_mapping(Any)
    # dataset drift: this share of the tested features drifted, or one drifted feature's effect
    # size reached a `severe` threshold (severe: null switches that rule off)
    share_threshold: float = 0.5
    severe: SevereConfig | None = field(default_factory=SevereConfig)
    min_samples: int = 100
    wandb: bool = True
    # alerts (`forgeml watch`): a list of {on: <AlertOn>, actions: [<AlertAction>, ...]}. Typed
    # Any: YAML 1.1 reads an unquoted `on` key as true, so each rule is checked at setup
    alerts: list[Any] = field(default_factory=list)
    webhook: WebhookConfig = field(default_factory=WebhookConfig)
    alert_thresholds: AlertThresholds = field(default_factory=AlertThresholds)


# what OmegaConf cannot check: the range a number must lie in, per group and key (checked, once,
# by `check_ranges` when a stage uses the group; the message names the key)
SHARE = (lambda value: 0 <= value <= 1, "must lie between 0 and 1")
POSITIVE = (lambda value: value > 0, "must be positive")
NON_NEGATIVE = (lambda value: value >= 0, "must be at least 0")
RANGES: dict[str, dict[str, tuple[Callable[[float], bool], str]]] = {
    "monitor": {
        "auto_base_rate": SHARE,
        "p_value": SHARE,
        "share_threshold": SHARE,
        "missing_share_threshold": SHARE,
        "distance_threshold": POSITIVE,
        "psi_threshold": POSITIVE,
        "min_samples": POSITIVE,
        "log_max_bytes": POSITIVE,
        "log_backups": NON_NEGATIVE,
        "windows": POSITIVE,
        "categorical_max_distinct": NON_NEGATIVE,
        "max_metric_drop": NON_NEGATIVE,
        "min_estimated_accuracy": SHARE,
    },
    "serve": {
        "workers": POSITIVE,
        "batch_size": POSITIVE,
        # TorchServe 0.12 reads an archive's maxBatchDelay 0 as unset: its default, 100 ms
        "max_batch_delay": (
            lambda value: value >= 1,
            "must be at least 1 (TorchServe takes 0 for its default, 100 ms); "
            "serve.batch_size=1 is what never waits",
        ),
        "torch_threads": NON_NEGATIVE,
        "log_max_bytes": POSITIVE,
        "log_backups": (lambda value: value >= 1, "must be at least 1"),
    },
    "serve.rollout": {
        "min_requests": NON_NEGATIVE,
        "min_minutes": NON_NEGATIVE,
        "shadow_fraction": SHARE,
        "min_agreement": SHARE,
        "max_estimated_drop": NON_NEGATIVE,
    },
    "trainer": {"threads": NON_NEGATIVE},
    "data.contract": {
        "new_category_share": SHARE,
        "range_widening": NON_NEGATIVE,
        "missing_rate_rise": SHARE,
    },
}
# the drift tests that apply to each kind of feature (monitoring/drift.py runs them)
DRIFT_TESTS = {
    "numeric": frozenset({"ks", "wasserstein", "chi2", "jensenshannon", "psi"}),
    "categorical": frozenset({"chi2", "jensenshannon", "psi"}),
}
COLUMN_TEST_KEYS = frozenset({"method", "threshold"})
CLASS_WEIGHT_CHOICES = ("none", "balanced", "{class: weight}")
SCHEDULER_INTERVALS = ("step", "epoch")


def check_ranges(group: str, node: Any) -> None:
    """Refuse a value outside its range, naming the key: `monitor.sample_rate=1.5 must lie ...`
    (null, where the schema allows it, turns a setting off and has no range)."""
    for key, (within, rule) in RANGES[group].items():
        value = getattr(node, key)  # a config node or a schema instance
        if value is not None and not within(value):
            raise ForgeError(f"{group}.{key}={value} {rule}")


# --- each group's checks beyond types and ranges; a stage runs those of the groups it uses, once


def check_sample_rate(value: Any) -> None:
    """`monitor.sample_rate`: a share of the requests, or AUTO_SAMPLE_RATE."""
    if value == AUTO_SAMPLE_RATE:
        return
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        shown = float(value) if isinstance(value, int | float) and not isinstance(value, bool) else value
        raise ForgeError(
            f"monitor.sample_rate={shown} must lie between 0 and 1 (0: no inference log), "
            f"or be {AUTO_SAMPLE_RATE}"
        )


def check_monitor(monitor: Any) -> None:
    """The monitor group, before any work; every message names the key to change."""
    check_ranges("monitor", monitor)
    check_sample_rate(monitor.sample_rate)
    for kind in ("numeric", "categorical"):
        method = plain(monitor[f"{kind}_method"])
        if method != "auto" and method not in DRIFT_TESTS[kind]:
            choices = ", ".join(["auto", *sorted(DRIFT_TESTS[kind])])
            raise ForgeError(
                f"monitor.{kind}_method={method} does not apply to {kind} features; choose {choices}"
            )
    for name, column in monitor.columns.items():
        check_column_test(name, column)
    for effect, threshold in (monitor.severe or {}).items():
        if threshold is not None and threshold <= 0:
            raise ForgeError(f"monitor.severe.{effect}={threshold} must be positive (or null: off)")


ROLLOUT_ACTIONS = ("start", "status", "promote", "abort")
GATE_EVIDENCE = ("offline", "replay", "shadow")


def check_gate(gate: Any) -> None:
    unknown = [kind for kind in gate.require if kind not in GATE_EVIDENCE]
    if unknown:
        raise ForgeError(
            f"gate.require={list(gate.require)}: {', '.join(unknown)} unknown; "
            f"choose from {', '.join(GATE_EVIDENCE)}"
        )


def check_rollout(rollout: Any) -> None:
    """`serve.rollout`: steps "shadow" or rising percentages ending at 100, sensible limits."""
    if rollout.action not in ROLLOUT_ACTIONS:
        raise ForgeError(f"serve.rollout.action={rollout.action}: choose one of {', '.join(ROLLOUT_ACTIONS)}")
    shares = [step for step in rollout.steps if str(step) != "shadow"]
    if not rollout.steps or any(not isinstance(s, int) or not 0 < s <= 100 for s in shares):
        raise ForgeError(
            f"serve.rollout.steps={list(rollout.steps)}: each step is shadow or a percentage in 1..100"
        )
    if shares != sorted(shares) or (shares and shares[-1] != 100):
        raise ForgeError(f"serve.rollout.steps={list(rollout.steps)}: the percentages rise and end at 100")
    if rollout.min_requests < 1 or rollout.min_minutes < 0:
        raise ForgeError("serve.rollout.min_requests must be at least 1 and min_minutes at least 0")
    if not 0 < rollout.shadow_fraction <= 1:
        raise ForgeError("serve.rollout.shadow_fraction must lie in (0, 1]")


def check_column_test(name: str, column: Any) -> None:
    """`monitor.columns.<name>`: a method among DriftMethod's and a positive threshold."""
    if not isinstance(column, Mapping) or not set(column) <= COLUMN_TEST_KEYS:
        found = ", ".join(sorted(column)) if isinstance(column, Mapping) else repr(column)
        raise ForgeError(f"monitor.columns.{name}: expected the keys method, threshold; got {found}")
    methods = [method.value for method in DriftMethod]
    if column.get("method") is not None and column["method"] not in methods:
        raise ForgeError(
            f"monitor.columns.{name}.method={column['method']} is not a test; choose {', '.join(methods)}"
        )
    threshold = column.get("threshold")
    if threshold is not None and (
        isinstance(threshold, bool) or not isinstance(threshold, int | float) or threshold <= 0
    ):
        raise ForgeError(f"monitor.columns.{name}.threshold={threshold} must be a positive number")


def check_logged_columns(monitor: Any, feature_types: Mapping[str, str]) -> dict[str, list[str]]:
    """`monitor.redact` and `monitor.hash` against what the log holds: a model's features
    ({name: type}) and `monitor.log_extra_fields`. A typo would otherwise log the very column it
    was meant to hide. Returns both lists."""
    named = ", ".join(feature_types)
    # an extra field has no type: what a client sends, hashed as its text
    types = {**{name: "categorical" for name in monitor.log_extra_fields}, **feature_types}
    redact, hashed = list(monitor.redact), list(monitor.hash)
    for key, names in (("redact", redact), ("hash", hashed)):
        for name in names:
            if name not in types:
                raise ForgeError(
                    f"monitor.{key}: {name!r} is not a feature of the model; its features: {named} "
                    "(a request's other fields are logged only if listed in monitor.log_extra_fields)"
                )
    for name in hashed:
        if name in redact:
            raise ForgeError(f"monitor.hash and monitor.redact both name {name!r}: choose one")
        if types[name] != "categorical":
            raise ForgeError(
                f"monitor.hash: {name!r} is {types[name]}, and hashed values are no categories to "
                "compare; leave it out of the log with monitor.redact"
            )
    return {"redact": redact, "hash": hashed}


def check_class_weights(setting: Any) -> None:
    """`train.class_weights`: none, balanced or {class: positive weight} (which classes exist,
    the trained model's labels say)."""
    if setting is None or setting in ("none", "balanced"):
        return
    if not isinstance(setting, Mapping):
        raise ForgeError(f"train.class_weights={setting!r}: choose one of {', '.join(CLASS_WEIGHT_CHOICES)}")
    for name, weight in setting.items():
        if isinstance(weight, bool) or not isinstance(weight, int | float) or weight <= 0:
            raise ForgeError(f"train.class_weights.{name}={weight!r} must be a positive number")


def check_scheduler(scheduler: Any) -> None:
    """`scheduler.interval`: the scheduler steps once per optimizer step or once per epoch."""
    interval = scheduler.get("interval", "epoch") if scheduler else "epoch"
    if interval not in SCHEDULER_INTERVALS:
        raise ForgeError(f"scheduler.interval must be 'step' or 'epoch', got {interval!r}")


@dataclass
class RolloutConfig:
    """How a candidate version earns live traffic: replay on logged traffic, a shadow step, then
    canary steps (`forgeml replay VERSION`, `forgeml rollout VERSION`)."""

    # "shadow" (the candidate answers a copy, never the client) or a percentage of live traffic
    steps: list[Any] = field(default_factory=lambda: ["shadow", 5, 25, 50, 100])
    min_requests: int = 500  # per step, answered by the candidate (shadow: mirrored)
    min_minutes: float = 10.0  # per step
    shadow_fraction: float = 1.0  # share of requests mirrored during the shadow step
    sticky_field: str = "id"  # routing key: one caller sees one version
    # a rollout step fails when the candidate: errs (5xx) on more than this share of its requests,
    max_error_rate: float = 0.001
    # rejects (400) a larger share than production by more than this,
    max_rejection_increase: float = 0.001
    # answers with a p99 latency above this multiple of production's
    max_latency_ratio: float = 2.0
    # replay and the shadow step refuse a candidate that answers like production on fewer than
    # this share of the requests (classification); replay also one whose estimated (CBPE)
    # accuracy is more than max_estimated_drop below production's; null: that check off
    min_agreement: float | None = 0.9
    max_estimated_drop: float | None = 0.02
    # the command `forgeml rollout [VERSION]` (the version: the root key `candidate`)
    action: str = "start"  # start | status | promote | abort
    wait: bool = True
    shadow_only: bool = False  # `--shadow`: stop after the shadow step


@dataclass
class ServeConfig:
    """TorchServe: archive contents (batching, workers) and the local server (ports, security)."""

    # a TorchServe model name: letters, digits, '_', '-', '.'
    model_name: str = "${data.name}"
    # null: the model's hash (weights + preprocessing), so a retrained model is a new version
    version: str | None = None
    host: str = "127.0.0.1"
    inference_port: int = 8080
    management_port: int = 8081
    metrics_port: int = 8082
    grpc_inference_port: int = 7070
    grpc_management_port: int = 7071
    token_auth: bool = True
    # register/unregister at runtime; off except while deploying (`serve.model_api=true`)
    model_api: bool = False
    workers: int = 1
    # dynamic batching: 1 answers a lone request at once (see conf/serve/default.yaml)
    batch_size: int = 1
    max_batch_delay: int = 1  # ms a batch waits to fill up (at least 1)
    # torch threads per worker (torch.set_num_threads); 0: torch's default, one per core
    torch_threads: int = 1
    response_timeout: int = 30  # s
    startup_timeout: int = 120  # s for every worker to be READY
    max_request_size: int = 1048576  # bytes
    max_instances: int = 1000  # per request
    model_store: str = "serve/model-store"
    runtime_dir: str = "serve/runtime"
    # HTTPS on every endpoint; no cert/key: a self-signed pair for 127.0.0.1 in runtime_dir/tls
    tls: bool = False
    tls_cert: str | None = None
    tls_key: str | None = None
    # TorchServe's logs (runtime_dir/logs) rotate at this size, keeping log_backups old files
    log_max_bytes: int = 10485760
    log_backups: int = 5
    rollout: RolloutConfig = field(default_factory=RolloutConfig)


@dataclass
class GateConfig:
    """What a candidate must meet before `forgeml deploy` makes it the default."""

    # test metric -> minimum (a maximum for error metrics: loss, mae, mse, rmse)
    thresholds: dict[str, float] = open_mapping(float)
    # the largest allowed relative drop against the deployed version (0.02 = 2 % worse)
    max_regression: float = 0.02
    # deploy even when the gate refuses (`forgeml deploy --force`); logged loudly and recorded
    force: bool = False
    # the least recall of each class on the test split: one number for every class, or
    # {class: minimum}; null: none
    min_class_recall: Any = None
    # what a version must have passed before it takes all traffic: offline (the checks above),
    # replay (`forgeml replay VERSION`), shadow (the shadow step of `forgeml rollout VERSION`)
    require: list[str] = field(default_factory=lambda: ["offline"])


@dataclass
class TrainConfig:
    """What the training loss is made of (the trainer's mechanics live in `trainer`)."""

    # none | balanced (n_samples / (n_classes * count), from the train split) | {class: weight}
    class_weights: Any = "none"


@dataclass
class EvaluateConfig:
    """What `evaluate` decides beside measuring: a binary model's decision threshold."""

    # null (the most probable class) | f1 | recall@precision=0.9 | precision@recall=0.8,
    # picked on the validation split for the rarer class; stored with the model
    threshold_for: str | None = None


@dataclass
class ForgeConfig:
    """The root: what `params.yaml` holds once composed and resolved."""

    # the forgeml that composed params.yaml: a DVC param of every stage, so an upgrade re-runs them
    forgeml_version: str = "${" + VERSION_RESOLVER + ":}"
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
    train: TrainConfig = field(default_factory=TrainConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    monitor: MonitorConfig = field(default_factory=MonitorConfig)
    serve: ServeConfig = field(default_factory=ServeConfig)
    gate: GateConfig = field(default_factory=GateConfig)
    watch: WatchConfig = field(default_factory=WatchConfig)
    # `forgeml predict input=... output=...`: the table to score and where to write it
    input: str | None = None
    output: str | None = None
    # `forgeml replay VERSION`: the registered version tried against production's answers
    candidate: str | None = None


# (group, name, schema) for ConfigStore; group files extend them with `/schema/<group>/<name>@_here_`
SCHEMAS: list[tuple[str | None, str, Any]] = [
    (None, "forgeml_schema", ForgeConfig),
    ("schema/paths", "default", PathsConfig),
    ("schema/data", "table", DataConfig),
    ("schema/data", "file", FileDataConfig),
    ("schema/model", "mlp", MLPConfig),
    ("schema/model", "cnn", CNNConfig),
    ("schema/model", "resnet", ResNetConfig),
    ("schema/model", "custom", custom_model_schema()),
    ("schema/trainer", "default", TrainerConfig),
    ("schema/logger", "csv", CSVLoggerConfig),
    ("schema/logger", "tensorboard", TensorBoardLoggerConfig),
    ("schema/logger", "wandb", WandbLoggerConfig),
    ("schema/callbacks", "default", CallbacksConfig),
    ("schema/monitor", "default", MonitorConfig),
    ("schema/serve", "default", ServeConfig),
    ("schema/gate", "default", GateConfig),
]


def register_schemas() -> None:
    """Put every schema into Hydra's ConfigStore and the version resolver into OmegaConf
    (idempotent)."""
    from hydra.core.config_store import ConfigStore

    OmegaConf.register_new_resolver(VERSION_RESOLVER, lambda: __version__, replace=True)

    store = ConfigStore.instance()
    for group, name, node in SCHEMAS:
        store.store(group=group, name=name, node=node)


def resolved_config(cfg: DictConfig) -> dict[str, Any]:
    """The config as plain data, interpolations resolved: what travels inside artifacts."""
    return OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)


def plain(value: Any) -> Any:
    """An enum field's value as the string it stands for."""
    return getattr(value, "value", value)
