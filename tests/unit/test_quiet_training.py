"""Training output: Lightning's known-harmless notices are filtered by message, nothing else is."""

from __future__ import annotations

import logging
import warnings

import pytest
import torch

from forgeml.errors import ForgeError
from forgeml.models.artifact import check_exportable
from forgeml.models.quiet import HARMLESS, LIGHTNING_INFO_LOGGER, ProgressBar, progress_bars, quiet_lightning

SAMPLES = [
    "`isinstance(treespec, LeafSpec)` is deprecated, use `isinstance(treespec, TreeSpec)` instead.",
    "The number of training batches (1) is smaller than the logging interval Trainer(log_every_n_steps=10).",
    "You have overridden `transfer_batch_to_device` in `LightningModule` but have passed in a DataModule.",
    "Checkpoint directory /p/models/checkpoints exists and is not empty.",
]


def test_each_harmless_notice_is_filtered_and_other_warnings_still_show():
    assert len(SAMPLES) == len(HARMLESS)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        quiet_lightning()
        for message in SAMPLES:
            warnings.warn(message, UserWarning, stacklevel=1)
        warnings.warn("The dataloader does not have many workers", UserWarning, stacklevel=1)
    assert [str(w.message) for w in caught] == ["The dataloader does not have many workers"]


def test_lightning_tips_are_dropped_and_its_other_notices_kept(caplog):
    quiet_lightning()
    logger = logging.getLogger(LIGHTNING_INFO_LOGGER)
    with caplog.at_level(logging.INFO, logger=LIGHTNING_INFO_LOGGER):
        logger.info("💡 Tip: For seamless cloud logging, try installing litlogger")
        logger.info("GPU available: False, used: False")
    assert [record.getMessage() for record in caplog.records] == ["GPU available: False, used: False"]


def test_progress_bar_follows_the_terminal_unless_set(monkeypatch):
    monkeypatch.setattr("sys.stderr.isatty", lambda: False, raising=False)
    assert progress_bars(None) == []
    assert progress_bars(False) == []
    [bar] = progress_bars(True)
    assert isinstance(bar, ProgressBar)


class DataDependent(torch.nn.Module):
    """A net torch.export cannot trace: its branch depends on the values."""

    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(3, 2)

    def forward(self, x):
        return self.layer(x) if x.sum() > 0 else -self.layer(x)


def test_an_untraceable_net_is_refused_in_one_message_without_torch_graph_dumps(capfd):
    with pytest.raises(ForgeError, match=r"cannot be exported with torch\.export"):
        check_exportable(DataDependent(), 3)
    printed = capfd.readouterr()
    assert "def forward" not in printed.err + printed.out
    assert "Unable to find user code" not in printed.err
