"""`forgeml package`: what the archive holds, and that it needs nothing of forgeml to run."""

from __future__ import annotations

import ast
import copy
import hashlib
import json
import shutil
import subprocess
import sys
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml

from forgeml import contract
from forgeml.data import transform
from forgeml.errors import ForgeError
from forgeml.io import read_json
from forgeml.serving import archive as archive_module
from forgeml.serving.archive import archive_identity
from forgeml.serving.registry import Registry, sha256_of
from forgeml.stages import package
from tests.helpers.config import package_config_env
from tests.helpers.serving import WORKER_MODULES

pytestmark = pytest.mark.slow

# what every archive holds (and a decision threshold when `evaluate` picked one)
ARCHIVE_FILES = {
    *archive_module.MODULES,
    contract.PROGRAM_FILE,
    contract.PREPROCESSOR_FILE,
    contract.SCHEMA_FILE,
    contract.MODEL_CONFIG_FILE,
}


@pytest.fixture(scope="module")
def packaged(trained_project, tmp_path_factory) -> tuple[dict, zipfile.ZipFile]:
    cfg = copy.deepcopy(trained_project)
    cfg.serve.model_store = str(tmp_path_factory.mktemp("store"))
    cfg.serve.merge_with(
        {
            "batch_size": 4,
            "max_batch_delay": 20,
            "workers": 2,
            "max_instances": 9,
            "response_timeout": 17,
            "startup_timeout": 45,
        }
    )
    result = package.run(cfg)
    return result, zipfile.ZipFile(result["archive"])


def test_archive_holds_handler_program_preprocessing_schema_and_model_config(packaged):
    result, archive = packaged
    assert Path(result["archive"]).name == "breast_cancer.mar"
    assert set(archive.namelist()) - {contract.DECISION_FILE} == {
        *ARCHIVE_FILES,
        archive_module.ARCHIVE_MANIFEST,
        contract.DATA_CONTRACT_FILE,
    }
    settings = yaml.safe_load(archive.read(contract.MODEL_CONFIG_FILE))
    assert settings == {
        "minWorkers": 2,
        "maxWorkers": 2,
        "batchSize": 4,
        "maxBatchDelay": 20,
        "responseTimeout": 17,
        "startupTimeout": 45,
        "handler": {"torch_threads": 1},
    }
    assert archive.read(contract.TRANSFORM_FILE) == Path(transform.__file__).read_bytes()


def test_input_schema_lists_every_feature_with_type_and_training_range(packaged, trained_project):
    _, archive = packaged
    schema = json.loads(archive.read("input_schema.json"))
    spec = read_json(Path(trained_project.paths.models_dir) / "preprocessor.json")
    assert [(f["name"], f["type"]) for f in schema["features"]] == [
        (f["name"], f["type"]) for f in spec["features"]
    ]
    first = schema["features"][0]
    assert (first["min"], first["max"]) == (spec["features"][0]["min"], spec["features"][0]["max"])
    assert schema["labels"] == spec["labels"]
    assert schema["max_instances"] == 9


def test_version_defaults_to_the_model_hash_and_is_registered(packaged, trained_project):
    result, archive = packaged
    manifest = json.loads(archive.read("MAR-INF/MANIFEST.json"))["model"]
    model = read_json(Path(trained_project.paths.models_dir) / "model.json")
    assert manifest["modelVersion"] == result["version"] == model["model_hash"]
    assert result["config_hash"] == model["config_hash"]
    assert result["metrics"] == read_json(Path(trained_project.paths.reports_dir) / "metrics.json")
    assert result["sha256"] == hashlib.sha256(Path(result["archive"]).read_bytes()).hexdigest()
    assert result["data_hash"].startswith(("dvc:", "sha256:"))
    assert manifest["modelName"] == "breast_cancer"
    assert manifest["handler"] == "handler.py"


@pytest.mark.parametrize("name", sorted(archive_module.MODULES))
def test_archived_code_imports_only_what_a_stock_torchserve_worker_has(packaged, name):
    _, archive = packaged
    tree = ast.parse(archive.read(name))
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {
        node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.level == 0
    }
    assert {module.split(".")[0] for module in imported} <= WORKER_MODULES


def test_invalid_model_name_is_refused_naming_the_key(trained_project, tmp_path):
    cfg = copy.deepcopy(trained_project)
    cfg.serve.model_store = str(tmp_path)
    cfg.serve.model_name = "my model/v1"
    with pytest.raises(ForgeError, match=r"serve\.model_name='my model/v1'"):
        package.run(cfg)
    assert not list(tmp_path.glob("*.mar"))


# a TorchServe worker's view of an unpacked archive, with forgeml made unimportable: the
# handler from the archive's directory alone, initialised and asked for one record
WORKER_WITHOUT_FORGEML = """
import json, sys
sys.modules["forgeml"] = None  # any `import forgeml...` now raises ImportError
model_dir = sys.argv[1]
sys.path.insert(0, model_dir)
import handler
from ts.context import Context, RequestProcessor
with open(f"{model_dir}/MAR-INF/MANIFEST.json") as file:
    manifest = json.load(file)
context = Context(manifest["model"]["modelName"], model_dir, manifest, 1, None, "0.12.0")
context.request_processor = [RequestProcessor({})]
handler.handle(None, context)
[answer] = handler.handle([{"body": json.loads(sys.argv[2])}], context)
loaded = [module.__file__ for module in vars(handler._service.modules).values()]
status = context.get_response_status(0)[0]
print(json.dumps({"answer": json.loads(answer), "status": status, "loaded": loaded}))
"""


def test_unpacked_archive_serves_a_record_with_forgeml_unimportable(packaged, tmp_path):
    _, archive = packaged
    archive.extractall(tmp_path)
    schema = json.loads(archive.read(contract.SCHEMA_FILE))
    record = {f["name"]: f["min"] if f["type"] == "numeric" else None for f in schema["features"]}
    command = [sys.executable, "-I", "-c", WORKER_WITHOUT_FORGEML, str(tmp_path), json.dumps(record)]
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    served = json.loads(result.stdout.splitlines()[-1])
    assert served["status"] == 200
    assert served["answer"]["predictions"][0]["label"] in schema["labels"]
    assert sorted(Path(file).name for file in served["loaded"]) == sorted(
        file for file in archive_module.MODULES if file != contract.HANDLER_FILE
    )
    assert all(Path(file).parent == tmp_path for file in served["loaded"])


def test_parallel_packages_each_record_their_own_archive(trained_project, tmp_path, monkeypatch):
    """Two `forgeml package` of one model at once (versions a and b): each registry entry's
    sha256 is that of its own `.versions/` copy, which holds its own version."""
    copy_file = shutil.copyfile

    def slow_copy_into_versions(source, target, *args, **kwargs):
        # widens the window in which the other package replaces the working archive
        if ".versions" in str(target):
            time.sleep(2)
        return copy_file(source, target, *args, **kwargs)

    monkeypatch.setattr(shutil, "copyfile", slow_copy_into_versions)
    configs = []
    for version in ("a", "b"):
        cfg = copy.deepcopy(trained_project)
        cfg.serve.merge_with({"model_store": str(tmp_path), "version": version})
        configs.append(cfg)
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(package.run, configs))
    registry = Registry(tmp_path)
    for version in ("a", "b"):
        kept = registry.archive_copy("breast_cancer", version)
        assert archive_identity(kept) == ("breast_cancer", version)
        assert registry.version("breast_cancer", version)["sha256"] == sha256_of(kept)


@pytest.fixture
def corrupt_registry(trained_project, tmp_path) -> tuple:
    """A packaged model store whose registry.json was then cut in half."""
    cfg = copy.deepcopy(trained_project)
    cfg.serve.model_store = str(tmp_path / "store")
    package.run(cfg)
    registry = Path(cfg.serve.model_store) / "registry.json"
    registry.write_text(registry.read_text()[:100])
    return cfg, registry


def test_package_with_a_corrupt_registry_names_it_and_leaves_the_archive(corrupt_registry):
    cfg, registry = corrupt_registry
    archive = Path(cfg.serve.model_store) / "breast_cancer.mar"
    before = archive.read_bytes(), archive.stat().st_mtime_ns
    cfg.serve.version = "next"
    with pytest.raises(ForgeError, match=r"registry\.json is not valid JSON") as failure:
        package.run(cfg)
    assert str(registry) in str(failure.value) and "\n" not in str(failure.value)
    assert (archive.read_bytes(), archive.stat().st_mtime_ns) == before
    assert not (Path(cfg.serve.model_store) / ".versions" / "breast_cancer" / "next.mar").exists()


@pytest.mark.parametrize("stage", ["models", "deploy", "rollback", "history", "serve start"])
def test_commands_on_a_corrupt_registry_exit_2_with_one_line(corrupt_registry, stage, tmp_path):
    cfg, registry = corrupt_registry
    env = package_config_env()
    runtime = tmp_path / "runtime"
    overrides = [f"serve.model_store={cfg.serve.model_store}", f"serve.runtime_dir={runtime}"]
    command = ["forgeml", *stage.split(), *overrides]
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0, result.stderr
    assert str(registry) in result.stderr and "not valid JSON" in result.stderr
    assert not runtime.exists(), "nothing was started or written"
