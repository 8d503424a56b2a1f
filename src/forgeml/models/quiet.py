"""Training output a person can read: Lightning's known-harmless notices left out, a progress
bar only on a terminal and without Lightning's logger version (`v_num`).

Only the notices named in HARMLESS are filtered, each by its message, with the reason it says
nothing to a forgeml user; every other warning still shows.
"""

from __future__ import annotations

import logging
import sys
import warnings
from typing import Any

from pytorch_lightning.callbacks import RichProgressBar

# (start of the message, why it is harmless here)
HARMLESS = (
    (r"`isinstance\(treespec, LeafSpec\)` is deprecated", "Lightning's own call into torch's pytree API"),
    (
        r"The number of training batches \(\d+\) is smaller than the logging interval",
        "epoch metrics are logged",
    ),
    (r"You have overridden `transfer_batch_to_device`", "ForgeModule moves its index batches itself"),
    (r"Checkpoint directory .* exists and is not empty", "a re-run replaces models/checkpoints by design"),
)
# Lightning's advertisement for its cloud products, logged at every Trainer construction
TIP_PREFIX = "💡 Tip:"
LIGHTNING_INFO_LOGGER = "pytorch_lightning.utilities.rank_zero"


class NoTips(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(TIP_PREFIX)


def quiet_lightning() -> None:
    """Filter HARMLESS and the tips, once per process."""
    for message, _ in HARMLESS:
        warnings.filterwarnings("ignore", message=message)
    info = logging.getLogger(LIGHTNING_INFO_LOGGER)
    if not any(isinstance(f, NoTips) for f in info.filters):
        info.addFilter(NoTips())


class ProgressBar(RichProgressBar):
    """Lightning's Rich bar without `v_num`, the logger's version, which means nothing here."""

    def get_metrics(self, trainer: Any, pl_module: Any) -> dict[str, Any]:
        metrics = super().get_metrics(trainer, pl_module)
        metrics.pop("v_num", None)
        return metrics


def progress_bars(enabled: bool | None) -> list[ProgressBar]:
    """The bar for `trainer.enable_progress_bar` (None: only when stderr is a terminal)."""
    show = sys.stderr.isatty() if enabled is None else enabled
    return [ProgressBar()] if show else []
