"""The TorchServe handler driven in-process, as TorchServe's worker drives it: a context per batch
and one dynamic batch of request bodies through the request contract, inference and the answer."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ts.context import Context, RequestProcessor


def make_context(model_dir: Path, requests: int, metrics: Any = None) -> Context:
    manifest = {"model": {"modelName": "tiny", "modelVersion": "3", "serializedFile": "model.pt2"}}
    context = Context("tiny", str(model_dir), manifest, 8, None, "0.12.0", metrics=metrics)
    context.request_processor = [RequestProcessor({}) for _ in range(requests)]
    if metrics is not None:
        metrics.request_ids = {i: f"request-{i}" for i in range(requests)}
    return context


def serve(handler, model_dir: Path, *bodies: Any) -> list[tuple[int, dict[str, Any]]]:
    """Run one dynamic batch through the handler, without monitoring: (status, body) per request."""
    context = make_context(model_dir, len(bodies))
    answers = handler.respond(handler.inference.infer(handler.requests.batch(list(bodies))), context)
    return [(context.get_response_status(i)[0], json.loads(a)) for i, a in enumerate(answers)]
