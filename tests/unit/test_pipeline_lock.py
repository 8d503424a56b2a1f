"""The committed dvc.lock is current: `make demo` (dvc repro) on a clean checkout finds the
repository's own code, raw data and params as the lock recorded them, re-runs nothing for them,
and leaves the checkout clean. After changing src/ or params.yaml, run `dvc repro` and commit
dvc.lock."""

from __future__ import annotations

from dvc.repo import Repo

from tests.helpers.config import PROJECT_ROOT


def test_dvc_lock_records_the_current_code_data_and_params():
    with Repo(str(PROJECT_ROOT)) as repo:
        produced = {str(out.def_path) for stage in repo.index.stages for out in stage.outs}
        stale = {}
        for stage, changes in repo.status().items():
            for change in changes:
                if not isinstance(change, dict):
                    continue
                deps = {
                    path: kind
                    for path, kind in change.get("changed deps", {}).items()
                    if path not in produced
                }
                params = change.get("changed params", {})
                if deps or params:
                    stale[stage] = {**deps, **params}
    assert stale == {}, f"dvc.lock is stale, run `dvc repro` and commit dvc.lock: {stale}"
