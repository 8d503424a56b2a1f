"""serve.rollout.steps on KServe: the project's InferenceService once per percentage step.

KServe (v1beta1) sends `spec.predictor.canaryTrafficPercent` of a service's traffic to its latest
revision and the rest to the last revision promoted to 100 %; without the field the latest revision
takes everything, which promotes it. KServe splits traffic only in Serverless mode (Knative
revisions; a RawDeployment service ignores the field) and fixes a service's mode when it is created,
so the step manifests run the predictor Serverless; and KServe mirrors nothing, so a shadow step
stays forgeml's own (`forgeml rollout VERSION --shadow`).
"""

from __future__ import annotations

import copy
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from forgeml.errors import ForgeError
from forgeml.layout import INFERENCE_SERVICE, KUBERNETES_DIR, rollout_manifest

SHADOW = "shadow"
DEPLOYMENT_MODE = "serving.kserve.io/deploymentMode"
# RawDeployment's scaler choice (the project's hpa.yaml); in Serverless mode Knative scales
AUTOSCALER_CLASS = "serving.kserve.io/autoscalerClass"
PROMOTED = 100
COMMENT_WIDTH = 98


def percentage_steps(steps: Sequence[Any]) -> list[tuple[int, int]]:
    """(position, percent) of each percentage step, positions counted from 1 over every step."""
    found = []
    for position, step in enumerate(steps, start=1):
        if step == SHADOW:
            continue
        if isinstance(step, bool) or not isinstance(step, int) or not 1 <= step <= PROMOTED:
            raise ForgeError(
                f"serve.rollout.steps[{position - 1}] is {step!r}: a step is '{SHADOW}' or a whole "
                f"percentage of live traffic from 1 to {PROMOTED}"
            )
        found.append((position, step))
    return found


def rollout_manifests(
    inference_service: str, steps: Sequence[Any], kubernetes_dir: str | Path = KUBERNETES_DIR
) -> dict[Path, str]:
    """Each percentage step's manifest (path -> text): the InferenceService `inference_service`
    (the text of the project's manifest) with that share of traffic on its latest revision."""
    service = yaml.safe_load(inference_service)
    walk = percentage_steps(steps)
    if not walk:
        return {}
    files = [rollout_manifest(kubernetes_dir, position, percent) for position, percent in walk]
    guide = walkthrough(list(steps), files, kubernetes_dir)
    return {
        path: step_heading(position, percent, steps) + guide + dump(canary(service, percent))
        for path, (position, percent) in zip(files, walk, strict=True)
    }


def canary(service: dict[str, Any], percent: int) -> dict[str, Any]:
    """The service, Serverless, sending `percent` of its traffic to the latest revision (the
    field left out at 100: the promotion)."""
    service = copy.deepcopy(service)
    annotations = service["metadata"].setdefault("annotations", {})
    annotations[DEPLOYMENT_MODE] = "Serverless"
    annotations.pop(AUTOSCALER_CLASS, None)
    predictor = service["spec"]["predictor"]
    predictor.pop("canaryTrafficPercent", None)
    if percent < PROMOTED:
        service["spec"]["predictor"] = {"canaryTrafficPercent": percent, **predictor}
    return service


def step_heading(position: int, percent: int, steps: Sequence[Any]) -> str:
    share = (
        "the promotion: the candidate answers every request (no canaryTrafficPercent)"
        if percent == PROMOTED
        else f"the candidate answers {percent}% of live traffic"
    )
    return f"# Step {position} of serve.rollout.steps [{', '.join(map(str, steps))}]: {share}.\n"


def walkthrough(steps: list[Any], files: list[Path], kubernetes_dir: str | Path) -> str:
    """How to walk the steps, the same in every step's file."""
    main = Path(kubernetes_dir) / INFERENCE_SERVICE
    paragraphs = [
        f"Written by forgeml from {main}: the same service, model and image, run Serverless: KServe "
        "splits traffic only in that mode, and a service keeps the mode it was created with, so "
        f"create it from {files[-1].name} (Knative scales it between minReplicas and maxReplicas), not from "
        f"{main.name} (RawDeployment, scaled by hpa.yaml).",
        "To roll a candidate out, set storageUri (or image) to the candidate's in every step's file "
        "(a changed spec makes a new revision), then apply the files in order, each once the "
        "candidate's error rate, rejections and p99 latency have held for "
        "serve.rollout.min_requests requests and serve.rollout.min_minutes minutes:",
    ]
    commands = [f"  kubectl apply -f {path}" for path in files]
    closing = [
        "Step back: re-apply the previous step's file. Abort: set canaryTrafficPercent: 0 and "
        "apply it (every request goes to the last promoted revision)."
    ]
    shadows = [str(position) for position, step in enumerate(steps, start=1) if step == SHADOW]
    if shadows:
        closing.append(
            f"The shadow step ({', '.join(shadows)}) has no KServe equivalent (KServe mirrors no "
            "traffic): run it with forgeml, `forgeml rollout VERSION --shadow`, before the first file."
        )
    lines = [*wrapped(paragraphs), *commands, *wrapped(closing)]
    return "".join(f"# {line}\n" for line in lines)


def wrapped(paragraphs: list[str]) -> list[str]:
    return [line for paragraph in paragraphs for line in textwrap.wrap(paragraph, COMMENT_WIDTH)]


def dump(service: dict[str, Any]) -> str:
    return yaml.safe_dump(service, sort_keys=False, default_flow_style=False)
