"""What a step is under forgeml's manual optimisation (blocks of batches per `training_step`):
each trainer feature still behaves as Lightning documents it. Small breast_cancer runs on CPU
(398 train rows: 7 batches of 64 an epoch)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import pytorch_lightning as pl
import torch

from forgeml.errors import ForgeError
from forgeml.stages import prepare, train
from tests.helpers.config import compose_config

BATCHES_PER_EPOCH = 7  # ceil(398 / 64)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """breast_cancer prepared once; each test trains into its own models/ and logs/."""
    root = tmp_path_factory.mktemp("steps")
    prepare.run(compose_config(root))
    return root


def config(workspace: Path, name: str, *overrides: str):
    cfg = compose_config(workspace, "callbacks.early_stopping=null", *overrides)
    cfg.paths.models_dir = str(workspace / name / "models")
    cfg.paths.log_dir = str(workspace / name / "logs")
    return cfg


def fit(cfg, *callbacks: pl.Callback) -> tuple[pl.Trainer, train.ForgeModule]:
    datamodule, model, trainer = train.build(cfg)
    trainer.callbacks.extend(callbacks)
    trainer.fit(model=model, datamodule=datamodule)
    return trainer, model


def weights(model: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in model.parameters()])


class GradientNorms(pl.Callback):
    """The total gradient norm each optimizer step applies (after any clipping)."""

    def __init__(self) -> None:
        self.norms: list[float] = []

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        grads = [p.grad.flatten() for p in pl_module.parameters() if p.grad is not None]
        self.norms.append(float(torch.cat(grads).norm()))


def test_global_step_counts_one_optimizer_step_per_batch(workspace):
    trainer, _ = fit(config(workspace, "count", "trainer.max_epochs=2"))
    assert trainer.global_step == 2 * BATCHES_PER_EPOCH
    # Lightning's own batch count is of training_step calls: one block of up to 8 batches each
    assert trainer.fit_loop.epoch_loop.batch_progress.total.completed == 2


def test_blocks_of_batches_train_exactly_as_one_batch_per_call(workspace):
    runs = [
        fit(
            config(
                workspace, f"block{size}", "trainer.max_epochs=2", f"trainer.batches_per_training_step={size}"
            )
        )
        for size in (1, 3, 8)
    ]
    assert [trainer.global_step for trainer, _ in runs] == [2 * BATCHES_PER_EPOCH] * 3
    for _, model in runs[1:]:
        assert torch.equal(weights(model), weights(runs[0][1]))


def test_max_steps_stops_at_that_optimizer_step_inside_a_block(workspace):
    trainer, _ = fit(config(workspace, "max_steps", "trainer.max_steps=5", "trainer.max_epochs=3"))
    assert trainer.global_step == 5


def test_limit_train_batches_counts_data_batches(workspace):
    trainer, _ = fit(config(workspace, "limit", "trainer.max_epochs=2", "trainer.limit_train_batches=3"))
    assert trainer.global_step == 6
    share, _ = fit(config(workspace, "share", "trainer.max_epochs=1", "trainer.limit_train_batches=0.5"))
    assert share.global_step == BATCHES_PER_EPOCH // 2


def test_gradient_clip_val_bounds_every_step(workspace):
    free, clipped = GradientNorms(), GradientNorms()
    fit(config(workspace, "free", "trainer.max_epochs=1"), free)
    fit(config(workspace, "clipped", "trainer.max_epochs=1", "trainer.gradient_clip_val=0.05"), clipped)
    assert len(clipped.norms) == BATCHES_PER_EPOCH
    assert max(free.norms) > 0.05
    assert max(clipped.norms) <= 0.05 * (1 + 1e-5)


def test_accumulating_two_batches_of_32_equals_one_batch_of_64(workspace):
    common = ("trainer.max_epochs=2", "model.dropout=0.0")
    accumulated, model_a = fit(
        config(
            workspace,
            "accumulated",
            *common,
            "data.batch_size=32",
            "trainer.accumulate_grad_batches=2",
            "trainer.limit_train_batches=12",
        )
    )
    whole, model_w = fit(
        config(workspace, "whole", *common, "data.batch_size=64", "trainer.limit_train_batches=6")
    )
    assert accumulated.global_step == whole.global_step == 12
    assert torch.allclose(weights(model_a), weights(model_w), atol=1e-5)


@pytest.mark.parametrize(("interval", "halvings"), [("step", 2 * BATCHES_PER_EPOCH), ("epoch", 2)])
def test_scheduler_steps_per_optimizer_step_or_per_epoch(workspace, interval, halvings):
    scheduler = [
        "scheduler._target_=torch.optim.lr_scheduler.ExponentialLR",
        "~scheduler.T_max",
        "+scheduler.gamma=0.5",
        f"scheduler.interval={interval}",
    ]
    trainer, _ = fit(
        config(workspace, f"lr_{interval}", "trainer.max_epochs=2", "optimizer.lr=0.01", *scheduler)
    )
    assert trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(0.01 * 0.5**halvings)


def test_unknown_scheduler_interval_is_refused(workspace):
    cfg = config(workspace, "bad_interval", "scheduler.interval=batch")
    with pytest.raises(ForgeError, match=r"scheduler\.interval must be 'step' or 'epoch', got 'batch'"):
        train.build(cfg)


def test_log_every_n_steps_counts_optimizer_steps(workspace):
    cfg = config(workspace, "logged", "trainer.max_epochs=2", "logger=csv", "trainer.log_every_n_steps=3")
    fit(cfg)
    rows = pd.read_csv(next(Path(cfg.paths.log_dir).glob("train/csv/version_*/metrics.csv")))
    assert rows.dropna(subset=["train/loss_step"])["step"].tolist() == [3, 6, 9, 12]
    # epoch metrics share the axis: the optimizer step they were measured at
    assert rows.dropna(subset=["val/loss"])["step"].tolist() == [7, 14]
    assert rows.dropna(subset=["val/loss"])["epoch"].tolist() == [0, 1]


def test_early_stopping_and_best_checkpoint_follow_val_loss(workspace):
    cfg = config(workspace, "early", "trainer.max_epochs=10", "optimizer.lr=0.0")
    cfg.callbacks.early_stopping = compose_config(workspace).callbacks.early_stopping
    cfg.callbacks.early_stopping.patience = 2
    trainer, _ = fit(cfg)
    # nothing learns at lr 0: val/loss never improves after the first epoch
    assert trainer.current_epoch == 3
    assert torch.load(trainer.checkpoint_callback.best_model_path, weights_only=True)["epoch"] == 0


def test_bf16_mixed_precision_runs_the_net_in_bfloat16_on_cpu(workspace):
    dtypes: set[torch.dtype] = set()
    datamodule, model, trainer = train.build(
        config(workspace, "bf16", "trainer.max_epochs=3", "trainer.precision=bf16-mixed")
    )
    model.net.register_forward_hook(lambda _, __, output: dtypes.add(output.dtype))
    trainer.fit(model=model, datamodule=datamodule)
    assert dtypes == {torch.bfloat16}
    assert trainer.global_step == 3 * BATCHES_PER_EPOCH
    assert float(trainer.callback_metrics["val/accuracy"]) > 0.85


class Killed(Exception):
    """Stands for the process dying (OOM, preemption) once an epoch's checkpoint is written."""


class KillAfterEpoch(pl.Callback):
    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if trainer.current_epoch == self.epoch + 1:
            raise Killed


def test_resume_from_last_checkpoint_after_a_kill_reproduces_the_uninterrupted_run(workspace):
    """Same weights and metrics: data order, dropout and the LR schedule continue where they were."""
    whole = config(workspace, "whole_run", "trainer.max_epochs=4")
    expected = train.run(whole)
    interrupted = config(workspace, "killed_run", "trainer.max_epochs=4")
    with pytest.raises(Killed):
        fit(interrupted, KillAfterEpoch(epoch=1))
    last = Path(interrupted.paths.models_dir) / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=True)["epoch"] == 1
    interrupted.ckpt_path = str(last)
    resumed = train.run(interrupted)
    timing = ("fit/seconds", "fit/samples_per_second")
    assert {k: v for k, v in resumed.items() if k not in timing} == {
        k: v for k, v in expected.items() if k not in timing
    }
    states = [
        torch.load(Path(cfg.paths.models_dir) / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
        for cfg in (whole, interrupted)
    ]
    assert all(torch.equal(states[0][name], states[1][name]) for name in states[0])


class BackwardCounter(pl.Callback):
    """Listens to Lightning's backward hooks, so the module must call them."""

    def __init__(self) -> None:
        self.before = self.after = 0

    def on_before_backward(self, trainer, pl_module, loss) -> None:
        self.before += 1

    def on_after_backward(self, trainer, pl_module) -> None:
        self.after += 1


def test_backward_hooks_reach_a_listening_callback_once_per_batch(workspace):
    counter = BackwardCounter()
    _, model = fit(config(workspace, "hooks", "trainer.max_epochs=1"), counter)
    assert not model.plain_steps
    assert counter.before == counter.after == BATCHES_PER_EPOCH


@pytest.mark.parametrize("listener", [BackwardCounter, GradientNorms])
def test_plain_steps_train_exactly_as_lightnings_hooked_steps(workspace, listener):
    """Without listeners the module calls backward and the torch optimizer itself; with one
    (backward or optimizer-step hooks) it goes through Lightning: same weights, same step count."""
    clip = ("trainer.max_epochs=1", "trainer.gradient_clip_val=0.05")
    plain_trainer, plain = fit(config(workspace, "plain", *clip))
    hooked_trainer, hooked = fit(config(workspace, f"hooked_{listener.__name__}", *clip), listener())
    assert plain.plain_steps and not hooked.plain_steps
    assert plain_trainer.global_step == hooked_trainer.global_step == BATCHES_PER_EPOCH
    assert torch.equal(weights(plain), weights(hooked))


class SanityBatches(pl.Callback):
    """Validation batches Lightning runs as its sanity check, before training."""

    def __init__(self) -> None:
        self.batches = 0

    def on_validation_batch_end(self, trainer, *_) -> None:
        self.batches += trainer.sanity_checking


def test_sanity_check_is_off_by_default_and_trainer_key_turns_it_on(workspace):
    default, asked = SanityBatches(), SanityBatches()
    fit(config(workspace, "no_sanity", "trainer.max_epochs=1"), default)
    fit(config(workspace, "sanity", "trainer.max_epochs=1", "trainer.num_sanity_val_steps=1"), asked)
    assert (default.batches, asked.batches) == (0, 1)
