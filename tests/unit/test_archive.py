"""Building a model archive, with torch-model-archiver stood in for by a recorder: what each
build hands it (its staging directory and TMPDIR), without starting a process."""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from forgeml import contract
from forgeml.config import ServeConfig
from forgeml.errors import ForgeError
from forgeml.serving import archive
from forgeml.stages import package
from tests.helpers.data import TOY_SPEC


@pytest.fixture
def archiver_calls(monkeypatch) -> list[dict[str, Any]]:
    """Each archiver run's working directory and TMPDIR, as they were at the call; it writes
    the archive where `--export-path` says."""
    calls = []

    def archiver(command: list[str], cwd: Path, env: dict[str, str], **_: Any) -> SimpleNamespace:
        tmpdir = env["TMPDIR"]
        calls.append({"cwd": str(cwd), "tmpdir": tmpdir, "tmpdir_exists": os.path.isdir(tmpdir)})
        name = command[command.index("--model-name") + 1]
        export = Path(cwd) / command[command.index("--export-path") + 1]
        (export / f"{name}.mar").write_bytes(b"archive")
        return SimpleNamespace(args=command, returncode=0, stdout="", stderr="")

    monkeypatch.setattr(archive.subprocess, "run", archiver)
    return calls


def test_each_build_gives_the_archiver_an_absolute_private_tmpdir(tmp_path, monkeypatch, archiver_calls):
    """A relative TMPDIR is ignored by tempfile, which then falls back to one shared
    <system temp>/<model> directory where concurrent builds of a model collide."""
    models = tmp_path / "models"
    models.mkdir()
    (models / contract.PREPROCESSOR_FILE).write_text(json.dumps(TOY_SPEC))
    monkeypatch.chdir(tmp_path)
    for build in ("one", "two"):  # relative work directories, as `forgeml package` may give
        built = archive.build_archive("models", f"builds/{build}", "tiny", "1", ServeConfig())
        assert built.read_bytes() == b"archive"
    tmpdirs = [call["tmpdir"] for call in archiver_calls]
    assert all(os.path.isabs(tmpdir) for tmpdir in tmpdirs)
    assert all(call["tmpdir_exists"] for call in archiver_calls)
    assert len(set(tmpdirs)) == 2
    assert all(Path(tmpdir).is_relative_to(tmp_path / "builds") for tmpdir in tmpdirs)


def test_image_pixel_budget_is_the_trained_config_s_or_derived_from_the_input_size():
    image = {"name": "image", "type": "image", "size": [256, 256], "channels": 1}
    spec = {**TOY_SPEC, "features": [image]}
    [derived] = archive.input_schema(spec, 5)["features"]
    assert derived["max_pixels"] == archive.PIXEL_BUDGET_FACTOR * 256 * 256
    [configured] = archive.input_schema(spec, 5, max_pixels=1000)["features"]
    assert configured["max_pixels"] == 1000
    with pytest.raises(ForgeError, match=r"data.image.max_pixels=0 must be at least 1"):
        archive.input_schema(spec, 5, max_pixels=0)
    trained = {"config": {"data": {"image": {"size": None, "max_pixels": 4096}}}}
    assert package.image_max_pixels(trained) == 4096
    assert package.image_max_pixels({"config_hash": "abc"}) is None


def test_the_archive_carries_the_models_data_contract_and_reads_it_back(tmp_path):
    """The registry keeps a copy of each version's archive: the contract inside it is what new
    training data is held to while that version serves (stages/prepare.py)."""
    models, staging = tmp_path / "models", tmp_path / "staging"
    models.mkdir()
    staging.mkdir()
    (models / contract.PREPROCESSOR_FILE).write_text(json.dumps(TOY_SPEC))
    schema = archive.input_schema(TOY_SPEC, 5)
    assert contract.DATA_CONTRACT_FILE not in archive.stage_files(
        staging, models, schema, ServeConfig(), None
    )
    terms = {"format": "forgeml.data_contract/1", "columns": {"x": {"type": "numeric"}}}
    (models / contract.DATA_CONTRACT_FILE).write_text(json.dumps(terms))
    assert contract.DATA_CONTRACT_FILE in archive.stage_files(staging, models, schema, ServeConfig(), None)
    with zipfile.ZipFile(tmp_path / "model.mar", "w") as built:
        built.write(staging / contract.DATA_CONTRACT_FILE, contract.DATA_CONTRACT_FILE)
    assert archive.archived_data_contract(tmp_path / "model.mar") == terms
    with zipfile.ZipFile(tmp_path / "older.mar", "w") as built:  # packaged before contracts
        built.write(staging / contract.SCHEMA_FILE, contract.SCHEMA_FILE)
    assert archive.archived_data_contract(tmp_path / "older.mar") is None
