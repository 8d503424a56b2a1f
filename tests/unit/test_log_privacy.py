"""The key of the inference log's hashes, and the reference profile hashed alike for drift."""

from __future__ import annotations

import stat

import pytest

from forgeml.data.transform import MISSING_CATEGORY, keyed_hashes
from forgeml.errors import ForgeError
from forgeml.monitoring.privacy import KEY_BYTES, log_key_file, private_profile


def test_key_file_is_created_private_once_and_then_kept(tmp_path):
    path = log_key_file(tmp_path / "runtime")
    key = path.read_bytes()
    assert len(key) == KEY_BYTES
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert log_key_file(tmp_path / "runtime") == path and path.read_bytes() == key
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]  # no temporary file left
    assert log_key_file(tmp_path / "other").read_bytes() != key


def test_profile_categories_are_hashed_as_the_log_writes_them(tmp_path):
    key = log_key_file(tmp_path).read_bytes()
    profile = {
        "features": {
            "city": {"type": "categorical", "frequencies": {"paris": 3, MISSING_CATEGORY: 1}},
            "age": {"type": "numeric", "bin_edges": [1.0, 2.0]},
        }
    }
    hashed = private_profile(profile, [], ["city"], tmp_path)
    [paris] = keyed_hashes(key, ["paris"])
    assert hashed["features"]["city"]["frequencies"] == {paris: 3, MISSING_CATEGORY: 1}
    assert hashed["features"]["age"] == profile["features"]["age"]
    assert profile["features"]["city"]["frequencies"] == {"paris": 3, MISSING_CATEGORY: 1}


def test_redacted_features_leave_the_profile(tmp_path):
    profile = {"features": {"city": {"type": "categorical", "frequencies": {"paris": 3}}, "age": {}}}
    assert private_profile(profile, ["city"], [], tmp_path)["features"] == {"age": {}}
    assert not list(tmp_path.iterdir())  # no key needed, none created


def test_hashed_profile_without_the_key_names_the_key_file(tmp_path):
    profile = {"features": {"city": {"type": "categorical", "frequencies": {"paris": 3}}}}
    with pytest.raises(ForgeError, match=r"inference-log.key"):
        private_profile(profile, [], ["city"], tmp_path)
