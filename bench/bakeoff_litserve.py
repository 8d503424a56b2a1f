"""LitServe serving an unpacked forgeml archive: the bake-off's prototype (engine_bakeoff.py).

    python bakeoff_litserve.py <model_dir> <port> <metrics_port>

`POST /predictions/<model>[/<version>]` takes forgeml's body as is and answers with the
archive's JSON and 400s; requests are batched (as the archive's model-config.yaml says) and a bad one
fails alone (the archive's modules answer per request; encode_response turns each answer into
its own HTTP response). Readiness is LitServe's /health (every worker set up); the forgeml
metrics are served by the worker on <metrics_port>.

The glue LitServe needs, all here:
- the raw body: LitServe's endpoint parses JSON in its HTTP process (a malformed body is a 500
  there), so the server registers its own handler whose payload is (model, version, body bytes);
  a private method (`_register_api_endpoints`) is overridden for that;
- versions: one LitAPI holds every version of its model, each request naming its version or
  taking the default; LitServe itself routes fixed paths only;
- stopping: SIGTERM becomes KeyboardInterrupt, on which LitServe stops its worker processes.

`fast_queue=True`: ZeroMQ between its HTTP process and its worker instead of multiprocessing
queues; at 16 clients on the batch-1 archive it answered 634 and 828 req/s against 577 and 592,
503 and 721 against 218 and 520, in two alternated A/B runs on the loaded 2-core machine.

This file must not use `from __future__ import annotations`: LitServe reads decode_request's
annotation as a type.
"""

import signal
import sys

import litserve as ls
import prometheus_client
from archive_model import ArchiveModel, batching
from fastapi import Depends, Request, Response
from litserve.server import RegularRequestHandler


class RawBodyHandler(RegularRequestHandler):
    """LitServe's handler, with the request's path parameters and raw bytes as its payload."""

    async def _prepare_request(self, request, request_type):
        params = request.path_params
        return params["model"], params.get("version"), await request.body()


class ForgemlServer(ls.LitServer):
    def _register_api_endpoints(self, lit_api, request_type, response_type):
        handler = RawBodyHandler(lit_api, self)

        async def endpoint(request: Request) -> Response:
            return await handler.handle_request(request, Request)

        for path in ("/predictions/{model}", "/predictions/{model}/{version}"):
            self.app.add_api_route(
                path, endpoint, methods=["POST"], dependencies=[Depends(self.setup_auth(lit_api))]
            )


class ForgemlAPI(ls.LitAPI):
    def __init__(self, model_dir: str, metrics_port: int):
        size, timeout = batching(model_dir)
        super().__init__(max_batch_size=size, batch_timeout=timeout, api_path="/predictions")
        self.model_dir, self.metrics_port = model_dir, metrics_port

    def setup(self, device):
        model = ArchiveModel(self.model_dir)
        self.name, self.default = model.name, model.version
        self.versions = {model.version: model}
        prometheus_client.start_http_server(self.metrics_port, addr="127.0.0.1")

    def decode_request(self, request):
        return request

    def batch(self, inputs):
        return inputs

    def predict(self, requests):
        """One call of the archive's modules per version in the batch, answers in order
        (without batching, LitServe hands over one request, not a list)."""
        if self.max_batch_size == 1:
            return self.answer_batch([requests])[0]
        return self.answer_batch(requests)

    def answer_batch(self, requests):
        answers = [None] * len(requests)
        by_version = {}
        for position, (model, version, body) in enumerate(requests):
            by_version.setdefault(self.version(model, version), []).append((position, body))
        for model, items in by_version.items():
            if model is None:
                for position, _ in items:
                    answers[position] = (404, '{"error": "no such model or version"}')
                continue
            for (position, _), answer in zip(items, model.answer([body for _, body in items]), strict=True):
                answers[position] = answer
        return answers

    def version(self, model, version):
        return self.versions.get(version or self.default) if model == self.name else None

    def unbatch(self, output):
        return output

    def encode_response(self, answer):
        status, text = answer
        return Response(text, status_code=status, media_type="application/json")


def main() -> None:
    model_dir, port, metrics_port = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    server = ForgemlServer(
        ForgemlAPI(model_dir, metrics_port), accelerator="cpu", workers_per_device=1, fast_queue=True
    )
    server.run(host="127.0.0.1", port=port, generate_client_file=False, log_level="warning")


if __name__ == "__main__":
    main()
