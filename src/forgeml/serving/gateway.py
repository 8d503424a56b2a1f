"""The gateway: the one process clients talk to, in front of the model server that answers.

    python -m forgeml.serving.gateway RUNTIME_DIR

It owns the public ports (`serve.inference_port`, `management_port`, `metrics_port` on
`serve.host`, HTTPS with `serve.tls=true`) and checks forgeml's own keys (credentials.py), so
that what sits behind it can change without a client noticing: the model server (TorchServe on
private loopback ports, with its own per-start keys that only forgeml reads) is replaced by a
restart without a gap, and a deploy or a rollback swaps versions inside it. It also routes a
rollout's traffic (rollout.py decides, the gateway only follows the state it is given): a
sticky share of requests to the candidate version (a candidate that fails a request has
production answer it instead, so a client never sees the candidate's failure), and a sampled
copy of requests to the candidate as a shadow, whose answer is compared with production's and
never reaches the client.

What it serves comes from RUNTIME_DIR/gateway.json (written by local_server.py, re-read when it
changes): the listening settings at start, the backend and the rollouts at every change. Its
own state (the serial it applied, requests in flight per backend, each rollout step's numbers)
answers at GET /forgeml/state on the management port, with the management key.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import random
import signal
import ssl
import sys
import time
from collections import Counter, deque
from pathlib import Path
from typing import Any

from aiohttp import ClientError, ClientSession, ClientTimeout, DummyCookieJar, TCPConnector, web

from forgeml.contract import GATEWAY_ANSWERS
from forgeml.serving import credentials

STATE = "gateway.json"
PID_FILE = "gateway.pid"
STATE_POLL_SECONDS = 0.1
# latencies kept per rollout role and step, for its p99
LATENCY_SAMPLES = 20000
# shadow copies in flight at once; a copy beyond them is dropped, never queued behind clients
SHADOW_CONCURRENCY = 2
# a copy is sent only while at most this many production requests are in flight: the shadow
# uses spare capacity, and under load it is dropped (counted) rather than slowing production
SHADOW_MAX_BUSY = 1
ROUTE_HEADER = "X-Forgeml-Route"
SHADOW_HEADER = "X-Forgeml-Shadow"
FORWARDED_HEADERS = ("Content-Type",)
ANSWER_HEADERS = ("Content-Type", "x-request-id")
MUTATING = ("POST", "PUT", "DELETE", "PATCH")
BUCKETS = 10000


def unauthorized() -> web.Response:
    body = {
        "code": 401,
        "type": "Unauthorized",
        "message": "Token Authorization failed: missing or wrong key",
    }
    return web.json_response(body, status=401, headers={"WWW-Authenticate": "Bearer"})


def bucket(model: str, key: str) -> float:
    """A stable percentage in [0, 100) for a routing key: one caller, one version."""
    number = int(hashlib.sha256(f"{model}\0{key}".encode()).hexdigest()[:8], 16)
    return (number % BUCKETS) * 100 / BUCKETS


def routing_key(body: bytes, field: str) -> str | None:
    """The request's `field` (a record's, or the first instance's), as text; None without one."""
    try:
        request = json.loads(body)
    except ValueError:
        return None
    if isinstance(request, dict) and isinstance(request.get("instances"), list) and request["instances"]:
        request = request["instances"][0]
    if isinstance(request, dict) and request.get(field) is not None:
        return str(request[field])
    return None


def with_ids(body: bytes, answer: bytes) -> bytes:
    """The request `body` with each record's id set to the one production answered it under
    (the handler gives a record without an id a new one): unchanged if they do not line up."""
    try:
        request, predictions = json.loads(body), json.loads(answer).get("predictions")
    except (ValueError, AttributeError):
        return body
    single = isinstance(request, dict) and "instances" not in request
    records = [request] if single else request.get("instances") if isinstance(request, dict) else None
    if not isinstance(records, list) or not isinstance(predictions, list) or len(records) != len(predictions):
        return body
    for record, prediction in zip(records, predictions, strict=True):
        if isinstance(record, dict) and isinstance(prediction, dict) and "id" in prediction:
            record["id"] = prediction["id"]
    return json.dumps(request).encode()


def answers_of(body: bytes) -> list[Any] | None:
    """What an answer predicts, one entry per record (label or value); None if not an answer."""
    try:
        answer = json.loads(body)
    except ValueError:
        return None
    predictions = answer.get("predictions", [answer]) if isinstance(answer, dict) else None
    if not isinstance(predictions, list):
        return None
    return [p.get("label", p.get("value")) if isinstance(p, dict) else p for p in predictions]


class StepStats:
    """One role's numbers (production, candidate or shadow) during one rollout step."""

    def __init__(self) -> None:
        self.codes: Counter[int] = Counter()
        self.latencies: deque[float] = deque(maxlen=LATENCY_SAMPLES)
        self.compared = 0
        self.agreed = 0
        self.dropped = 0

    def record(self, status: int, seconds: float) -> None:
        self.codes[status] += 1
        self.latencies.append(seconds * 1000)

    def summary(self) -> dict[str, Any]:
        latencies = sorted(self.latencies)
        p99 = latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))] if latencies else None
        requests = sum(self.codes.values())
        return {
            "requests": requests,
            "rejected": self.codes.get(400, 0),
            "failed": requests - self.codes.get(200, 0) - self.codes.get(400, 0),
            "p99_ms": p99,
            "compared": self.compared,
            "agreement": self.agreed / self.compared if self.compared else None,
            "dropped": self.dropped,
        }


class Gateway:
    def __init__(self, runtime: Path) -> None:
        self.runtime = runtime
        self.state: dict[str, Any] = {}
        self.state_stamp: tuple[int, int] | None = None
        self.hashes: dict[str, str] = {}
        self.hashes_stamp: tuple[int, int] | None = None
        self.in_flight: Counter[str] = Counter()
        self.answers: Counter[tuple[str, str, int]] = Counter()
        self.stats: dict[tuple[str, str, str], StepStats] = {}
        self.shadows = asyncio.Semaphore(SHADOW_CONCURRENCY)
        self.session: ClientSession | None = None
        self.background: set[asyncio.Task] = set()
        self.reload()

    # --- state ----------------------------------------------------------------------------

    def reload(self) -> None:
        """Re-read gateway.json and the credentials when their files changed."""
        self.state, self.state_stamp = reread(self.runtime / STATE, self.state_stamp, self.state)
        self.hashes, self.hashes_stamp = reread(
            self.runtime / credentials.CREDENTIALS, self.hashes_stamp, self.hashes
        )

    async def follow_state(self) -> None:
        while True:
            await asyncio.sleep(STATE_POLL_SECONDS)
            with contextlib.suppress(OSError, ValueError):
                self.reload()

    def authorized(self, request: web.Request, api: str) -> bool:
        if not self.state.get("token_auth", True):
            return True
        return credentials.accepts(self.hashes, api, request.headers.get("Authorization"))

    def stats_of(self, model: str, role: str) -> StepStats:
        step = str(self.state.get("rollouts", {}).get(model, {}).get("step"))
        return self.stats.setdefault((model, step, role), StepStats())

    # --- forwarding -----------------------------------------------------------------------

    async def forward(
        self, method: str, api: str, path: str, body: bytes | None, headers: dict[str, str]
    ) -> tuple[int, bytes, dict[str, str]]:
        """One request to the backend as it is now; a connection the backend refused (it was
        being replaced) is tried once more against the backend the state names then."""
        for attempt in (1, 2):
            backend = self.state["backend"]
            url = backend[api] + path
            key = backend.get(f"{api}_key")
            sent = {**headers, **({"Authorization": f"Bearer {key}"} if key else {})}
            self.in_flight[backend[api]] += 1
            try:
                async with self.session.request(method, url, data=body, headers=sent) as answer:
                    content = await answer.read()
                    kept = {name: answer.headers[name] for name in ANSWER_HEADERS if name in answer.headers}
                    return answer.status, content, kept
            except (ClientError, OSError):
                if attempt == 2:
                    raise
                self.reload()
                await asyncio.sleep(STATE_POLL_SECONDS)
            finally:
                self.in_flight[backend[api]] -= 1
        raise AssertionError("unreachable")

    async def predictions(self, request: web.Request) -> web.StreamResponse:
        if not self.authorized(request, "inference"):
            return unauthorized()
        model, version = request.match_info["model"], request.match_info.get("version")
        body = await request.read()
        headers = {name: request.headers[name] for name in FORWARDED_HEADERS if name in request.headers}
        rollout = self.state.get("rollouts", {}).get(model)
        if version or not rollout:
            answer = await self.answer("inference", self.prediction_path(model, version), body, headers)
            self.answers[(model, version or "production", answer.status)] += 1
            return answer
        if self.to_candidate(model, rollout, body):
            answered = await self.candidate_answer(model, rollout, body, headers)
            if answered is not None:
                self.answers[(model, "candidate", answered.status)] += 1
                return answered
        started = time.perf_counter()
        status, content, kept = await self.forward(
            "POST", "inference", f"/predictions/{model}", body, headers
        )
        self.stats_of(model, "production").record(status, time.perf_counter() - started)
        if rollout.get("shadow_fraction", 0) > random.random():
            self.shadow(model, rollout, body, headers, status, content)
        self.answers[(model, "production", status)] += 1
        return web.Response(status=status, body=content, headers={**kept, ROUTE_HEADER: "production"})

    def prediction_path(self, model: str, version: str | None) -> str:
        return f"/predictions/{model}/{version}" if version else f"/predictions/{model}"

    def to_candidate(self, model: str, rollout: dict[str, Any], body: bytes) -> bool:
        share = rollout.get("percent", 0)
        if share <= 0:
            return False
        key = routing_key(body, rollout.get("sticky_field", "id"))
        return (bucket(model, key) if key is not None else random.random() * 100) < share

    async def candidate_answer(
        self, model: str, rollout: dict[str, Any], body: bytes, headers: dict[str, str]
    ) -> web.Response | None:
        """The candidate's answer, or None when it failed (production answers instead)."""
        path = self.prediction_path(model, rollout["candidate"])
        started = time.perf_counter()
        try:
            status, content, kept = await self.forward("POST", "inference", path, body, headers)
        except (ClientError, OSError):
            status, content, kept = 599, b"", {}
        self.stats_of(model, "candidate").record(status, time.perf_counter() - started)
        if status != 200:
            return None
        return web.Response(status=status, body=content, headers={**kept, ROUTE_HEADER: "candidate"})

    def shadow(
        self, model: str, rollout: dict[str, Any], body: bytes, headers: dict, status: int, content: bytes
    ) -> None:
        stats = self.stats_of(model, "shadow")
        if self.shadows.locked() or self.in_flight[self.state["backend"]["inference"]] > SHADOW_MAX_BUSY:
            stats.dropped += 1
            return
        task = asyncio.ensure_future(self.mirror(model, rollout, body, headers, status, content, stats))
        self.background.add(task)
        task.add_done_callback(self.background.discard)

    async def mirror(
        self,
        model: str,
        rollout: dict,
        body: bytes,
        headers: dict,
        status: int,
        content: bytes,
        stats: StepStats,
    ) -> None:
        """The candidate answers a copy, carrying production's request ids (so that both answers
        are logged under one id); its answer is compared with production's and dropped."""
        async with self.shadows:
            started = time.perf_counter()
            path = self.prediction_path(model, rollout["candidate"])
            copy = with_ids(body, content) if status == 200 else body
            try:
                shadow_status, shadow_content, _ = await self.forward(
                    "POST", "inference", path, copy, {**headers, SHADOW_HEADER: "1"}
                )
            except (ClientError, OSError):
                shadow_status, shadow_content = 599, b""
            stats.record(shadow_status, time.perf_counter() - started)
            if status == 200 and shadow_status == 200:
                ours, theirs = answers_of(content), answers_of(shadow_content)
                if ours is not None and theirs is not None and len(ours) == len(theirs):
                    stats.compared += len(ours)
                    stats.agreed += sum(a == b for a, b in zip(ours, theirs, strict=True))

    async def answer(self, api: str, path: str, body: bytes | None, headers: dict, method: str = "POST"):
        try:
            status, content, kept = await self.forward(method, api, path, body, headers)
        except (ClientError, OSError) as error:
            return web.json_response(
                {"code": 503, "message": f"model server unavailable: {error}"}, status=503
            )
        return web.Response(status=status, body=content, headers=kept)

    async def ping(self, request: web.Request) -> web.StreamResponse:
        return await self.answer("inference", "/ping", None, {}, method="GET")

    async def management(self, request: web.Request) -> web.StreamResponse:
        if not self.authorized(request, "management"):
            return unauthorized()
        if request.method in MUTATING and not self.state.get("model_api", False):
            message = "the model API is off on this server (serve.model_api=false): use forgeml deploy"
            return web.json_response({"code": 405, "message": message}, status=405)
        body = await request.read() if request.can_read_body else None
        return await self.answer("management", request.path_qs, body, {}, method=request.method)

    async def metrics(self, request: web.Request) -> web.StreamResponse:
        """The backend's metrics, then the gateway's own answer counts."""
        answer = await self.answer("metrics", request.path_qs, None, {}, method="GET")
        if answer.status != 200 or not request.path.startswith("/metrics"):
            return answer
        lines = [f"# TYPE {GATEWAY_ANSWERS} counter"] + [
            f'{GATEWAY_ANSWERS}{{model="{model}",route="{route}",code="{code}"}} {count}'
            for (model, route, code), count in sorted(self.answers.items(), key=str)
        ]
        return web.Response(
            status=200, body=answer.body + ("\n".join(lines) + "\n").encode(), headers=answer.headers
        )

    async def own_state(self, request: web.Request) -> web.StreamResponse:
        if not self.authorized(request, "management"):
            return unauthorized()
        steps: dict[str, dict[str, Any]] = {}
        for (model, step, role), stats in self.stats.items():
            steps.setdefault(model, {}).setdefault(step, {})[role] = stats.summary()
        report = {"serial": self.state.get("serial"), "in_flight": dict(self.in_flight), "rollouts": steps}
        return web.json_response(report)

    # --- serving --------------------------------------------------------------------------

    def applications(self) -> dict[str, web.Application]:
        limit = int(self.state.get("max_request_size", 1 << 20))
        inference = web.Application(client_max_size=limit)
        inference.router.add_post("/predictions/{model}", self.predictions)
        inference.router.add_post("/predictions/{model}/{version}", self.predictions)
        inference.router.add_get("/ping", self.ping)
        management = web.Application(client_max_size=limit)
        management.router.add_get("/forgeml/state", self.own_state)
        management.router.add_route("*", "/{tail:.*}", self.management)
        metrics = web.Application()
        metrics.router.add_get("/{tail:.*}", self.metrics)
        return {"inference": inference, "management": management, "metrics": metrics}

    async def serve(self) -> None:
        timeout = ClientTimeout(total=float(self.state.get("response_timeout", 30)) + 5)
        # no cookie jar: the backend sets none, and parsing for them cost a tenth of a request
        self.session = ClientSession(
            connector=TCPConnector(limit=0, keepalive_timeout=30),
            timeout=timeout,
            cookie_jar=DummyCookieJar(),
        )
        context = server_context(self.state.get("tls"))
        runners = []
        for api, application in self.applications().items():
            runner = web.AppRunner(application, access_log=None, handle_signals=False)
            await runner.setup()
            await web.TCPSite(
                runner, self.state["host"], self.state["ports"][api], ssl_context=context
            ).start()
            runners.append(runner)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        follower = asyncio.ensure_future(self.follow_state())
        (self.runtime / PID_FILE).write_text(f"{os.getpid()}\n")
        await stop.wait()
        follower.cancel()
        for runner in runners:
            await runner.cleanup()
        await self.session.close()


def reread(path: Path, stamp: tuple[int, int] | None, current: dict) -> tuple[dict, tuple[int, int] | None]:
    """(content, stamp) of a JSON file, read again only when its stamp (mtime, size) changed."""
    stat = path.stat()
    now = (stat.st_mtime_ns, stat.st_size)
    if now == stamp:
        return current, stamp
    return json.loads(path.read_text(encoding="utf-8")), now


def server_context(tls: dict[str, str] | None) -> ssl.SSLContext | None:
    if not tls:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(tls["certificate"], tls["private_key"])
    return context


def main(argv: list[str]) -> int:
    """Serve on uvloop where it is installed: the gateway's own cost per request is most of what
    it adds to an answer, and uvloop's event loop roughly halves it (bench/serve_throughput.py)."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(Gateway(Path(argv[0])).serve())
    else:
        uvloop.run(Gateway(Path(argv[0])).serve())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
