"""MLServer serving an unpacked forgeml archive: the bake-off's prototype (engine_bakeoff.py).

    python bakeoff_mlserver.py <model_dir> <port> <metrics_port>

MLServer's data plane is the Open Inference Protocol (KServe v2); forgeml's route is a custom
handler of the model, `POST /predictions/<model>` and `/predictions/<model>/<version>`, which
wraps the raw body as one BYTES element and calls the model's predict, so that MLServer's
adaptive batcher (as the archive's model-config.yaml says) merges concurrent requests into one
call of the archive's modules. Each answer travels back as outputs `status` and `answer` and
becomes its own HTTP response: a bad request fails alone. Readiness: /v2/models/<model>/ready;
the forgeml metrics sit in prometheus_client's registry, which MLServer's metrics server
(<metrics_port>/metrics) serves beside its own.

The glue: the custom route (its path is the model's, so the handler is registered per model at
load, not with the decorator's fixed path); the BYTES round trip; `parallel_workers: 0`, so that
the route reaches the batcher (with worker processes MLServer sends a custom handler straight to
a worker, past the batcher), which leaves inference on the event loop's thread.
"""

from __future__ import annotations

import asyncio
import socket
import sys

from archive_model import ArchiveModel, batching, manifest
from fastapi import Request, Response
from mlserver import MLModel, MLServer
from mlserver.context import model_context
from mlserver.handlers.custom import CustomHandler, register_custom_handler
from mlserver.settings import ModelParameters, ModelSettings, Settings
from mlserver.types import InferenceRequest, InferenceResponse, RequestInput, ResponseOutput


class ForgemlModel(MLModel):
    async def load(self) -> bool:
        self.archive = ArchiveModel(self.settings.parameters.uri)
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        bodies = payload.inputs[0].data.root
        answers = self.archive.answer(bodies)
        return InferenceResponse(
            model_name=self.name,
            model_version=self.version,
            outputs=[
                ResponseOutput(
                    name="status", shape=[len(answers), 1], datatype="INT32", data=[s for s, _ in answers]
                ),
                ResponseOutput(
                    name="answer", shape=[len(answers), 1], datatype="BYTES", data=[t for _, t in answers]
                ),
            ],
        )

    async def predictions(self, request: Request) -> Response:
        """forgeml's route: the raw body through the (batched) predict."""
        body = await request.body()
        payload = InferenceRequest(
            inputs=[RequestInput(name="body", shape=[1, 1], datatype="BYTES", data=[body])]
        )
        with model_context(self.settings):  # MLServer's batcher counts per model
            response = await self.predict(payload)
        outputs = {output.name: output.data.root[0] for output in response.outputs}
        answer = outputs["answer"]
        return Response(
            answer.decode() if isinstance(answer, bytes) else answer,
            status_code=int(outputs["status"]),
            media_type="application/json",
        )

    async def version_predictions(self, request: Request) -> Response:
        """forgeml's route naming the version (MLServer takes one route per method)."""
        return await self.predictions(request)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def main() -> None:
    model_dir, port, metrics_port = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    about = manifest(model_dir)
    name, version = about["modelName"], about["modelVersion"]
    size, timeout = batching(model_dir)
    routes = {f"/predictions/{name}": ForgemlModel.predictions}
    routes[f"/predictions/{name}/{version}"] = ForgemlModel.version_predictions
    for path, method in routes.items():
        register_custom_handler(CustomHandler(rest_path=path, rest_method="POST"), method)
    settings = Settings(
        host="127.0.0.1",
        http_port=port,
        grpc_port=free_port(),
        metrics_port=metrics_port,
        parallel_workers=0,
    )
    model = ModelSettings(
        name=name,
        version=version,
        implementation=ForgemlModel,
        parameters=ModelParameters(uri=model_dir),
        max_batch_size=size,
        max_batch_time=timeout,
    )
    asyncio.run(MLServer(settings).start([model]))


if __name__ == "__main__":
    main()
