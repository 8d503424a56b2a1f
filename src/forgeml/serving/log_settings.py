"""The inference log's runtime settings: what an archive bakes in at `forgeml package`, and what
`forgeml serve configure` puts in force on a running server without repackaging.

    sample_rate      a share of the requests (0: no log), or "auto" (contract.AUTO_SAMPLE_RATE):
                     every request until the worker logged `auto_min_samples` records in the
                     current window of `auto_window_s` seconds (windows aligned to the Unix
                     epoch, as `forgeml watch` aligns its own), then `auto_base_rate`
    log_max_bytes    a worker's file is rotated at this size ...
    log_backups      ... keeping this many rotated files

The settings file (contract.LOG_SETTINGS_FILE in `monitor.log_dir`, where the workers already
write) holds them all; each worker checks its mtime at most once a second and takes its values
in place of its archive's, for every model the server runs, until the file is deleted. What
the log holds (`redact`, `hash`, `log_extra_fields`) stays the archive's: a running server's log
is never widened by a command.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from forgeml.config import check_monitor
from forgeml.contract import AUTO_SAMPLE_RATE, LOG_SETTINGS_FILE
from forgeml.io import write_json
from forgeml.monitoring.decay import parse_duration

# the window of sample_rate=auto when monitor.window_duration is null
AUTO_DEFAULT_WINDOW = "1h"
SETTINGS_FORMAT = "forgeml.log_settings/1"


def sampling_settings(monitor: Any) -> dict[str, Any]:
    """The sample rate and rotation of `monitor` (a checked monitor config), as a worker reads them."""
    rate = monitor.sample_rate
    return {
        "sample_rate": AUTO_SAMPLE_RATE if rate == AUTO_SAMPLE_RATE else float(rate),
        "log_max_bytes": int(monitor.log_max_bytes),
        "log_backups": int(monitor.log_backups),
        "auto_min_samples": int(monitor.min_samples),
        "auto_window_s": parse_duration(monitor.window_duration or AUTO_DEFAULT_WINDOW).total_seconds(),
        "auto_base_rate": float(monitor.auto_base_rate),
    }


def settings_file(monitor: Any) -> Path:
    return Path(monitor.log_dir) / LOG_SETTINGS_FILE


def write_log_settings(monitor: Any) -> dict[str, Any]:
    """Put `monitor`'s sample rate and rotation in force on the server writing to
    `monitor.log_dir` (atomically: a worker reads the old file or the new one, never half)."""
    check_monitor(monitor)
    settings = sampling_settings(monitor)
    path = settings_file(monitor)
    write_json(path, {"format": SETTINGS_FORMAT, **settings})
    return {"settings_file": str(path), **settings}
