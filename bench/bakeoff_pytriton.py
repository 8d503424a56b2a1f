"""PyTriton serving an unpacked forgeml archive: the bake-off's prototype (engine_bakeoff.py).

    python bakeoff_pytriton.py <model_dir> <port> <metrics_port>

Triton's HTTP API is KServe v2 only: `POST /v2/models/<model>[/versions/<v>]/infer` with
tensors. forgeml's body travels as the one BYTES element of input `body`; the answer comes back
as outputs `status` (the HTTP status forgeml answers with) and `answer` (its JSON text), per
request, so that a bad request in a dynamic batch (Triton's batcher, as the archive's
model-config.yaml says) fails alone, inside a 200. Turning forgeml's request into that tensor
and the outputs back into a status and body is a translating layer's job (the gateway's):
PyTriton has no route of its own. Readiness: /v2/models/<model>/ready (Triton's
/v2/health/ready answers 200 before the model is loaded). The forgeml metrics are served by the
callable's process on <metrics_port> (Triton's own metrics port shows Triton's nv_* metrics).
"""

from __future__ import annotations

import sys

import numpy as np
import prometheus_client
from archive_model import ArchiveModel, batching
from pytriton.decorators import batch
from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
from pytriton.triton import Triton, TritonConfig


def main() -> None:
    model_dir, port, metrics_port = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    model = ArchiveModel(model_dir)
    size, delay = batching(model_dir)
    prometheus_client.start_http_server(metrics_port, addr="127.0.0.1")

    @batch
    def infer(body: np.ndarray) -> dict[str, np.ndarray]:
        answers = model.answer([row[0] for row in body])
        return {
            "status": np.array([[status] for status, _ in answers], dtype=np.int32),
            "answer": np.array([[text.encode()] for _, text in answers], dtype=np.bytes_),
        }

    config = TritonConfig(http_address="127.0.0.1", http_port=port, allow_grpc=False, allow_metrics=False)
    with Triton(config=config) as triton:
        triton.bind(
            model_name=model.name,
            model_version=int(model.version),
            infer_func=infer,
            inputs=[Tensor(name="body", dtype=bytes, shape=(1,))],
            outputs=[
                Tensor(name="status", dtype=np.int32, shape=(1,)),
                Tensor(name="answer", dtype=bytes, shape=(1,)),
            ],
            config=ModelConfig(
                max_batch_size=size, batcher=DynamicBatcher(max_queue_delay_microseconds=int(delay * 1e6))
            ),
        )
        triton.serve()


if __name__ == "__main__":
    main()
