"""Serving latency and throughput on loopback: the forgeml handler vs a minimal handler, forgeml's
gateway vs TorchServe alone, and the cost of a shadow rollout to production's answers.

One real local server, as `forgeml serve start` starts it (forgeml's gateway in front of
TorchServe), serves two archives of the same exported model, both with forgeml's default
`serve` settings (batching, worker threads) unless flags override them; what is measured:
  forgeml   the forgeml handler (validation, transform.py preprocessing, metrics, and the
            inference log at the default `monitor` settings: sample_rate 0.1), through the
            gateway: what a client of `forgeml serve start` gets
  minimal   a bare handler: JSON records -> standardised matrix -> program, no validation;
            like forgeml's, it answers with compact JSON text, so the two differ only in
            validation, preprocessing and monitoring (through the gateway)
  direct    the forgeml handler on TorchServe's own port, past the gateway: the gateway's cost
  shadow    the forgeml handler through the gateway while a rollout's shadow step mirrors every
            request (serve.rollout.shadow_fraction 1.0) to a second version of the same model
The models are first warmed up at the highest concurrency (so that the JVM's JIT has
compiled the frontend's request path), then for 2 s at each level. Clients: closed loop, at
each concurrency in `--concurrency` (default 1, 16 and 64) threads on keep-alive connections,
each sending one record per request for `--seconds`. Runs alternate between the models over
`--rounds`; the best round counts. The model is breast_cancer (30 numeric features), prepared
and trained quickly in a temporary workspace: the benchmark never reads the repository's
data/ or models/.

    python bench/serve_throughput.py [--seconds 5] [--rounds 2] [--concurrency 1,16,64]
                                     [--batch-size N] [--max-batch-delay MS]
                                     [--torch-threads N] [--workers N]

Prints requests/s and p50/p99 latency per model and concurrency, then per concurrency
`handler_vs_minimal ratio at <c>: <x>` (forgeml / minimal requests/s, target >= 0.9),
`gateway_vs_direct` (forgeml / direct requests/s), `shadow_vs_none` (shadow / forgeml
requests/s, target >= 0.9 at 16 clients) and `shadow_p50_ratio` (shadow / forgeml p50,
target <= 1.1 at one client), and how many records the inference log holds.
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import psutil
from omegaconf import OmegaConf

from forgeml.config import MonitorConfig, ServeConfig
from forgeml.io import read_json
from forgeml.serving.archive import build_archive
from forgeml.serving.local_server import LocalServer
from forgeml.serving.processes import free_ports
from forgeml.serving.rollout import prioritize
from forgeml.serving.server import PORT_KEYS

MINIMAL_HANDLER = """
import json, os
import numpy as np
import torch

program, names, mean, std = None, None, None, None


def handle(data, context):
    global program, names, mean, std
    if program is None:
        threads = (context.model_yaml_config.get("handler") or {}).get("torch_threads")
        if threads:
            torch.set_num_threads(threads)
        model_dir = context.system_properties["model_dir"]
        program = torch.export.load(os.path.join(model_dir, "model.pt2")).module()
        with open(os.path.join(model_dir, "preprocessor.json")) as file:
            features = json.load(file)["features"]
        names = [f["name"] for f in features]
        mean = np.array([f["mean"] for f in features])
        std = np.array([f["std"] for f in features])
    if data is None:
        return None
    bodies = [row.get("body") or row.get("data") for row in data]
    bodies = [json.loads(b) if isinstance(b, (bytes, bytearray, str)) else b for b in bodies]
    rows = [[record[n] for n in names] for body in bodies for record in body["instances"]]
    inputs = torch.from_numpy(((np.array(rows) - mean) / std).astype(np.float32))
    with torch.inference_mode():
        outputs = program(inputs).tolist()
    answers, start = [], 0
    for body in bodies:
        answers.append(json.dumps({"predictions": outputs[start : start + len(body["instances"])]}))
        start += len(body["instances"])
    return answers
"""
MODELS = ("forgeml", "minimal")
# what is measured: (name, model, past the gateway, with a shadow step)
TARGETS = (
    ("forgeml", "forgeml", False, False),
    ("minimal", "minimal", False, False),
    ("direct", "forgeml", True, False),
    ("shadow", "forgeml", False, True),
)
SHADOW_VERSION = "shadow"
# the gateway re-reads its state every 0.1 s
STATE_SETTLE_SECONDS = 0.5
# the `serve` settings a flag may override; unset, forgeml's defaults are measured
SERVE_FLAGS = ("batch_size", "max_batch_delay", "torch_threads", "workers")
WARM_UP_SECONDS = 5.0


def serve_config(workdir: Path, overrides: dict[str, Any]) -> Any:
    """forgeml's default `serve` config (ServeConfig), on free ports in `workdir`, with the
    batching flags that were given."""
    ports = free_ports(5)
    return OmegaConf.merge(
        OmegaConf.structured(ServeConfig),
        {
            "model_name": "bench",
            **dict(zip(PORT_KEYS, ports, strict=True)),
            "model_store": str(workdir / "store"),
            "runtime_dir": str(workdir / "runtime"),
        },
        overrides,
    )


def build_archives(models_dir: Path, serve: Any, workdir: Path) -> None:
    minimal = workdir / "minimal_handler.py"
    minimal.write_text(MINIMAL_HANDLER)
    for name in MODELS:
        handler = {"handler": minimal} if name == "minimal" else {"monitor": MonitorConfig()}
        build_archive(models_dir, serve.model_store, name, "1", serve, **handler)
    # the shadow's archive: the forgeml model again, as a second version, under a plain name
    built = build_archive(
        models_dir, workdir / "shadow", "forgeml", SHADOW_VERSION, serve, monitor=MonitorConfig()
    )
    built.replace(Path(serve.model_store) / f"forgeml.{SHADOW_VERSION}.mar")


def add_shadow_version(server: LocalServer) -> None:
    server.api.register(f"forgeml.{SHADOW_VERSION}.mar", server.serve.workers)
    server.wait_ready("forgeml", SHADOW_VERSION)


def set_shadow(server: LocalServer, on: bool) -> None:
    """A rollout's shadow step of the shadow version, on or off, as `forgeml rollout` sets it
    (its workers' priority included)."""
    prioritize(server, "forgeml", SHADOW_VERSION, on)
    rollouts = {
        "forgeml": {"candidate": SHADOW_VERSION, "step": "shadow", "percent": 0, "shadow_fraction": 1.0}
    }
    server.write_state(server.state() | {"rollouts": rollouts if on else {}})
    time.sleep(STATE_SETTLE_SECONDS)


def trained_model(workdir: Path) -> tuple[Path, Path]:
    """(models dir, test split) of a breast_cancer model trained here, in `workdir`."""
    from hydra import compose, initialize_config_dir

    from forgeml.stages import prepare, train

    conf = Path(__file__).resolve().parents[1] / "conf"
    overrides = [
        "data=breast_cancer",
        f"paths.data_dir={workdir}/data",
        f"paths.models_dir={workdir}/models",
        f"paths.log_dir={workdir}/logs",
        "logger=none",
        "trainer.max_epochs=2",
        "trainer.accelerator=cpu",
        "trainer.enable_progress_bar=false",
    ]
    with initialize_config_dir(str(conf), version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    prepare.run(cfg)
    train.run(cfg)
    return Path(cfg.paths.models_dir), Path(cfg.paths.processed_dir) / "test.parquet"


def request_body(models_dir: Path, test_split: Path) -> bytes:
    """One test record without its target (named by the model's preprocessor.json), as JSON."""
    target = read_json(models_dir / "preprocessor.json")["target"]
    record = pd.read_parquet(test_split).drop(columns=[target]).head(1)
    return json.dumps({"instances": json.loads(record.to_json(orient="records"))}).encode()


class KeepAliveClient:
    """One HTTP/1.1 connection replaying one pre-built request: little client CPU per request,
    so the 2-core loopback measures the server rather than Python's http.client."""

    def __init__(self, host: str, port: int, request: bytes):
        self.connection = socket.create_connection((host, port), timeout=30)
        self.request = request

    def send(self) -> int:
        """The response status; the body is read and dropped."""
        self.connection.sendall(self.request)
        head = b""
        while b"\r\n\r\n" not in head:
            head += self.connection.recv(65536)
        head, body = head.split(b"\r\n\r\n", 1)
        lines = head.split(b"\r\n")
        length = next(
            int(line.split(b":")[1]) for line in lines if line.lower().startswith(b"content-length")
        )
        while len(body) < length:
            body += self.connection.recv(65536)
        return int(lines[0].split()[1])

    def close(self) -> None:
        self.connection.close()


def http_request(host: str, path: str, body: bytes, token: str | None = None) -> bytes:
    """The bytes of one keep-alive JSON POST of `body` to `path`."""
    headers = [
        f"POST {path} HTTP/1.1",
        f"Host: {host}",
        "Content-Type: application/json",
        f"Content-Length: {len(body)}",
    ]
    if token:
        headers.append(f"Authorization: Bearer {token}")
    return ("\r\n".join(headers) + "\r\n\r\n").encode() + body


def load(server: LocalServer, target: tuple, body: bytes, clients: int, seconds: float) -> dict:
    """Closed-loop load on one target: through the gateway or past it, with a shadow or not."""
    _, model, direct, shadow = target
    set_shadow(server, shadow)
    entry = server.backend() if direct else server
    host = entry.url("inference").removeprefix("http://")
    request = http_request(host, f"/predictions/{model}", body, entry.token("inference"))
    address, port = host.split(":")
    return closed_loop(address, int(port), request, clients, seconds, lambda: server_cpu(server))


def closed_loop(
    host: str, port: int, request: bytes, clients: int, seconds: float, cpu_seconds: Callable[[], float]
) -> dict:
    """`clients` threads, each sending `request` one at a time on its own connection, for
    `seconds`; `cpu_seconds`: the server's CPU time so far."""
    latencies: list[list[float]] = [[] for _ in range(clients)]
    failures = [0] * clients
    stop_at = time.perf_counter() + seconds

    def client(index: int) -> None:
        connection = KeepAliveClient(host, port, request)
        while (start := time.perf_counter()) < stop_at:
            failures[index] += connection.send() != 200
            latencies[index].append(time.perf_counter() - start)
        connection.close()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    cpu_before = cpu_seconds()
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    cpu = cpu_seconds() - cpu_before
    samples = sorted(x for per_client in latencies for x in per_client)
    return {
        "rps": len(samples) / elapsed,
        "p50_ms": 1000 * statistics.median(samples),
        "p99_ms": 1000 * samples[int(0.99 * (len(samples) - 1))],
        "cpu_ms": 1000 * cpu / len(samples),
        "failures": sum(failures),
    }


def process_cpu(pid: int) -> float:
    """CPU seconds used so far by a server process and its children (a TorchServe frontend and
    its workers): per request, a cost that the load of a shared machine inflates far less than
    it does wall-clock latency."""
    server = psutil.Process(pid)
    return sum(sum(process.cpu_times()[:2]) for process in [server, *server.children(recursive=True)])


def server_cpu(server: LocalServer) -> float:
    """The CPU seconds of the gateway, the TorchServe frontend and its workers."""
    return process_cpu(server.pid()) + process_cpu(server.backend().pid())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", default="1,16,64", help="comma-separated client counts")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=2)
    for flag in SERVE_FLAGS:
        name = f"--{flag.replace('_', '-')}"
        parser.add_argument(name, type=int, help=f"serve.{flag} (default: forgeml's)")
    args = parser.parse_args()
    overrides = {flag: getattr(args, flag) for flag in SERVE_FLAGS if getattr(args, flag) is not None}
    levels = [int(level) for level in args.concurrency.split(",")]
    with tempfile.TemporaryDirectory(prefix="serve-bench-") as work:
        workdir = Path(work)
        models_dir, test_split = trained_model(workdir)
        serve = serve_config(workdir, overrides)
        build_archives(models_dir, serve, workdir)
        body = request_body(models_dir, test_split)
        server = LocalServer(serve, inference_log_dir=workdir / "inference-log")
        server.start({name: f"{name}.mar" for name in MODELS})
        try:
            add_shadow_version(server)
            warm_up(server, body, max(levels))
            best = {level: run_rounds(server, body, level, args) for level in levels}
        finally:
            server.stop()
        logged = sum(
            len(path.read_bytes().splitlines()) for path in (workdir / "inference-log").glob("*.jsonl")
        )
    report(best, serve, args)
    print(f"inference log: {logged} records at sample_rate {MonitorConfig.sample_rate}")


def warm_up(server: LocalServer, body: bytes, clients: int) -> None:
    """Every target under the heaviest load first, so that the JVM's JIT has compiled the
    frontend's request path before any level is measured: a few seconds at one client leave
    its compiler busy through the first measured rounds, on the same two cores."""
    for target in TARGETS:
        load(server, target, body, clients, WARM_UP_SECONDS)


def run_rounds(server: LocalServer, body: bytes, clients: int, args: argparse.Namespace) -> dict[str, dict]:
    """Each target's best round (by requests/s) at `clients` concurrent clients."""
    best: dict[str, dict] = {}
    for target in TARGETS:
        load(server, target, body, clients, 2.0)  # warm-up, the JVM's JIT included
    for round_number in range(args.rounds):
        # alternate the order, so neither side always runs on a warmer server
        for target in TARGETS[:: 1 if round_number % 2 == 0 else -1]:
            name = target[0]
            result = load(server, target, body, clients, args.seconds)
            if result["failures"]:
                raise SystemExit(f"{name}: {result['failures']} requests failed")
            if name not in best or result["rps"] > best[name]["rps"]:
                best[name] = result
    return best


def report(best: dict[int, dict[str, dict]], serve: Any, args: argparse.Namespace) -> None:
    settings = ", ".join(f"{flag} {serve[flag]}" for flag in SERVE_FLAGS)
    print(f"{args.seconds:.0f}s x {args.rounds} rounds per model and concurrency, {settings}, loopback")
    print(f"{'target':<8} {'clients':>7} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'cpu ms/req':>10}")
    for level, results in best.items():
        for model, result in results.items():
            print(
                f"{model:<8} {level:>7} {result['rps']:>9.1f} {result['p50_ms']:>8.2f} "
                f"{result['p99_ms']:>8.2f} {result['cpu_ms']:>10.3f}"
            )
    for level, results in best.items():
        forgeml = results["forgeml"]
        print(f"handler_vs_minimal ratio at {level}: {forgeml['rps'] / results['minimal']['rps']:.3f}")
        print(f"gateway_vs_direct ratio at {level}: {forgeml['rps'] / results['direct']['rps']:.3f}")
        print(f"shadow_vs_none ratio at {level}: {results['shadow']['rps'] / forgeml['rps']:.3f}")
        print(f"shadow_p50_ratio at {level}: {results['shadow']['p50_ms'] / forgeml['p50_ms']:.3f}")


if __name__ == "__main__":
    main()
