"""serve/Dockerfile and serve/k8s/ (shipped as templates; `forgeml init` writes them into a
project) agree with each other and with the `serve` config: the same
archive, the same ports, resources the autoscaler can work with, and one InferenceService per
percentage step of serve.rollout.steps. Parsed, not deployed."""

from __future__ import annotations

import json
import re
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from forgeml.project import TEMPLATES
from tests.helpers.config import compose_config

SERVE = TEMPLATES / "serve"


def properties() -> dict[str, str]:
    lines = (SERVE / "k8s" / "config.properties").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if "=" in line and not line.startswith("#"))


def port(address: str) -> int:
    return urlsplit(address).port


@pytest.fixture(scope="module")
def dockerfile() -> str:
    # continuation lines joined, so each instruction is one line
    return (SERVE / "Dockerfile").read_text().replace("\\\n", " ")


@pytest.fixture(scope="module")
def isvc() -> dict:
    return yaml.safe_load((SERVE / "k8s" / "inferenceservice.yaml").read_text())


@pytest.fixture(scope="module")
def hpa() -> dict:
    return yaml.safe_load((SERVE / "k8s" / "hpa.yaml").read_text())


def model_name(dockerfile: str) -> str:
    return re.search(r"^ARG MODEL_NAME=(\S+)$", dockerfile, re.MULTILINE).group(1)


def test_image_and_cluster_config_name_the_default_archive(dockerfile, isvc, tmp_path):
    name = model_name(dockerfile)
    assert name == compose_config(tmp_path).serve.model_name
    assert "serve/model-store/${MODEL_NAME}.mar /mnt/models/model-store/${MODEL_NAME}.mar" in (dockerfile)
    snapshot = json.loads(properties()["model_snapshot"])
    [(snapshot_name, versions)] = snapshot["models"].items()
    assert snapshot_name == name
    assert [v["marName"] for v in versions.values()] == [f"{name}.mar"]
    model = isvc["spec"]["predictor"]["model"]
    assert {"name": "MODEL_NAME", "value": name} in model["env"]
    assert model["storageUri"].rstrip("/").endswith(name)


def test_image_serves_the_config_it_copies(dockerfile):
    copied = re.search(
        r"^COPY serve/k8s/config.properties serve/k8s/metrics.yaml (\S+)/$", dockerfile, re.MULTILINE
    )
    command = json.loads(re.search(r"^CMD (\[.*\])$", dockerfile, re.MULTILINE).group(1))
    assert command[command.index("--ts-config") + 1] == f"{copied.group(1)}/config.properties"
    assert properties()["metrics_config"] == f"{copied.group(1)}/metrics.yaml"
    assert command[command.index("--model-store") + 1] == properties()["model_store"]


def test_ports_agree_between_image_cluster_config_and_inference_service(dockerfile, isvc):
    config = properties()
    exposed = {int(p) for p in re.search(r"^EXPOSE (.+)$", dockerfile, re.MULTILINE).group(1).split()}
    inference, metrics = port(config["inference_address"]), port(config["metrics_address"])
    assert exposed == {inference, metrics}
    model = isvc["spec"]["predictor"]["model"]
    assert [p["containerPort"] for p in model["ports"]] == [inference]
    assert isvc["metadata"]["annotations"]["prometheus.kserve.io/port"] == str(metrics)
    # the management API never leaves the pod, and nothing may register models at runtime
    assert urlsplit(config["management_address"]).hostname == "127.0.0.1"
    assert config["enable_model_api"] == "false"
    assert config["metrics_mode"] == "prometheus"


def test_autoscaler_targets_the_predictor_within_its_replica_bounds(isvc, hpa):
    annotations = isvc["metadata"]["annotations"]
    assert annotations["serving.kserve.io/deploymentMode"] == "RawDeployment"
    assert annotations["serving.kserve.io/autoscalerClass"] == "external"
    predictor = isvc["spec"]["predictor"]
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", f"{isvc['metadata']['name']}-predictor")
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (
        predictor["minReplicas"],
        predictor["maxReplicas"],
    )
    [metric] = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu"
    # CPU utilisation is measured against the request, so the request must exist
    resources = predictor["model"]["resources"]
    assert resources["requests"]["cpu"] and resources["limits"]["cpu"]


def test_image_declares_the_handler_metrics_and_sets_the_log_dir(dockerfile):
    """In prometheus mode TorchServe shows only declared metrics: the image's file must be the one
    `forgeml serve start` writes."""
    from forgeml.contract import LOG_DIR_VARIABLE
    from forgeml.serving.runtime_files import metrics_config

    shipped = yaml.safe_load((SERVE / "k8s" / "metrics.yaml").read_text())
    assert shipped == metrics_config()
    assert re.search(rf"^ENV {LOG_DIR_VARIABLE}=\S+$", dockerfile, re.MULTILINE)


def test_image_admits_only_plain_archive_names_like_the_local_server():
    from forgeml.serving.runtime_files import allowed_urls, read_properties

    shipped = read_properties((SERVE / "k8s" / "config.properties").read_text())
    assert shipped["allowed_urls"] == allowed_urls(Path(shipped["model_store"]))


def rollout(tmp_path: Path, *overrides: str) -> dict[Path, str]:
    """The rollout manifests `forgeml init` writes for the shipped InferenceService, with the
    steps of the config composed with `overrides`."""
    from forgeml.serving.kserve import rollout_manifests

    steps = compose_config(tmp_path, *overrides).serve.rollout.steps
    return rollout_manifests((SERVE / "k8s" / "inferenceservice.yaml").read_text(), steps)


def canary_percent(manifest: dict) -> int | None:
    return manifest["spec"]["predictor"].get("canaryTrafficPercent")


@pytest.mark.parametrize(
    ("overrides", "steps"),
    [
        (
            (),
            [("step-2-5.yaml", 5), ("step-3-25.yaml", 25), ("step-4-50.yaml", 50), ("step-5-100.yaml", 100)],
        ),
        (("serve.rollout.steps=[shadow,10,100]",), [("step-2-10.yaml", 10), ("step-3-100.yaml", 100)]),
        (("serve.rollout.steps=[20,shadow,60]",), [("step-1-20.yaml", 20), ("step-3-60.yaml", 60)]),
    ],
)
def test_each_percentage_step_is_the_service_with_that_canary_traffic_percent(
    tmp_path, isvc, overrides, steps
):
    from forgeml.layout import KUBERNETES_DIR, ROLLOUT_MANIFESTS

    manifests = rollout(tmp_path, *overrides)
    assert list(manifests) == [Path(KUBERNETES_DIR, ROLLOUT_MANIFESTS, name) for name, _ in steps]
    for text, (_, percent) in zip(manifests.values(), steps, strict=True):
        manifest = yaml.safe_load(text)
        assert (manifest["apiVersion"], manifest["kind"]) == (isvc["apiVersion"], "InferenceService")
        assert manifest["metadata"]["name"] == isvc["metadata"]["name"]
        assert manifest["metadata"].get("namespace") == isvc["metadata"].get("namespace")
        # the same model, image, ports and resources: only the traffic split differs
        assert manifest["spec"]["predictor"]["model"] == isvc["spec"]["predictor"]["model"]
        assert canary_percent(manifest) == (None if percent == 100 else percent)


def test_rollout_runs_serverless_where_kserve_splits_traffic(tmp_path, isvc):
    """A RawDeployment service ignores canaryTrafficPercent, and KServe refuses to change a
    service's mode: every step is Serverless, from its first apply."""
    for text in rollout(tmp_path).values():
        annotations = yaml.safe_load(text)["metadata"]["annotations"]
        assert annotations["serving.kserve.io/deploymentMode"] == "Serverless"
        assert "serving.kserve.io/autoscalerClass" not in annotations
        assert (
            annotations["prometheus.kserve.io/port"]
            == isvc["metadata"]["annotations"]["prometheus.kserve.io/port"]
        )


def test_every_step_says_how_to_walk_the_steps_and_that_shadow_is_forgemls(tmp_path):
    manifests = rollout(tmp_path)
    walk = "\n".join(f"#   kubectl apply -f {path}" for path in manifests)
    for text in manifests.values():
        comment = "\n".join(line for line in text.splitlines() if line.startswith("#"))
        assert walk in comment
        assert "canaryTrafficPercent: 0" in comment
        assert "The shadow step (1) has no KServe equivalent" in comment
    without_shadow = rollout(tmp_path, "serve.rollout.steps=[10,100]")
    assert all("shadow" not in text for text in without_shadow.values())


@pytest.mark.parametrize("step", ["12.5", "0", "101", "canary", "true"])
def test_a_step_kserve_cannot_split_is_refused_naming_it(tmp_path, step):
    from forgeml.errors import ForgeError

    with pytest.raises(ForgeError, match=r"serve.rollout.steps\[1\] is .*'shadow' or a whole percentage"):
        rollout(tmp_path, f"serve.rollout.steps=[shadow,{step},100]")


def test_a_shadow_only_rollout_has_no_kserve_manifest(tmp_path):
    assert rollout(tmp_path, "serve.rollout.steps=[shadow]") == {}
