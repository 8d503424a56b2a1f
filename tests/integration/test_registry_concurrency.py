"""The registry written by two processes at once."""

from __future__ import annotations

import json
import multiprocessing

from forgeml.serving.registry import Registry
from tests.helpers.registry import entry


def _record_many(store: str, prefix: str) -> None:
    for i in range(15):
        Registry(store).record("m", entry(f"{prefix}{i}"))


def test_concurrent_writers_lose_no_entry(tmp_path):
    workers = [multiprocessing.Process(target=_record_many, args=(str(tmp_path), p)) for p in "ab"]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
    assert len(Registry(tmp_path).versions("m")) == 30
    json.loads(Registry(tmp_path).path.read_text())
