"""Serving throughput on loopback: the forgeml handler vs a minimal handler, and batching gain.

One real TorchServe (one worker per model) serves three archives of the same exported model:
  forgeml      the forgeml handler (validation, transform.py preprocessing, metrics, and the
               inference log at the default `monitor` settings: sample_rate 0.1), batch_size 16
  minimal      a bare handler: JSON records -> standardised matrix -> program, no validation,
               same batching (batch_size 16, same max_batch_delay); like forgeml's, it answers
               with compact JSON text, so the two differ only in validation, preprocessing and
               monitoring
  forgeml_b1   the forgeml handler with batch_size 1
Clients: `--concurrency` threads on keep-alive connections, each sending one record per
request for `--seconds`. Runs alternate between models over `--rounds`; the best round counts.
The model is breast_cancer (30 numeric features), prepared and trained quickly in a temporary
workspace: the benchmark never reads the repository's data/ or models/.

    python bench/serve_throughput.py [--seconds 8] [--rounds 3]

Prints requests/s and p50/p99 latency per model, then `handler_vs_minimal ratio: <x>`
(forgeml / minimal requests/s, target >= 0.9), `batching gain: <x>` (batch 16 / batch 1
requests/s, target >= 4) and how many records the inference log holds.
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import pandas as pd
from omegaconf import OmegaConf

from forgeml.config import MonitorConfig, ServeConfig
from forgeml.io import read_json
from forgeml.serving.archive import build_archive
from forgeml.serving.processes import free_ports
from forgeml.serving.server import TorchServe

MINIMAL_HANDLER = """
import json, os
import numpy as np
import torch

program, names, mean, std = None, None, None, None


def handle(data, context):
    global program, names, mean, std
    if program is None:
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
MODELS = {"forgeml": 16, "minimal": 16, "forgeml_b1": 1}


def serve_config(workdir: Path, batch_delay: int) -> Any:
    ports = free_ports(5)
    return OmegaConf.merge(
        OmegaConf.structured(ServeConfig),
        {
            "model_name": "bench",
            "inference_port": ports[0],
            "management_port": ports[1],
            "metrics_port": ports[2],
            "grpc_inference_port": ports[3],
            "grpc_management_port": ports[4],
            "max_batch_delay": batch_delay,
            "model_store": str(workdir / "store"),
            "runtime_dir": str(workdir / "runtime"),
        },
    )


def build_archives(models_dir: Path, serve: Any, workdir: Path) -> None:
    minimal = workdir / "minimal_handler.py"
    minimal.write_text(MINIMAL_HANDLER)
    for name, batch_size in MODELS.items():
        settings = OmegaConf.merge(serve, {"batch_size": batch_size})
        handler = {"handler": minimal} if name == "minimal" else {"monitor": MonitorConfig()}
        build_archive(models_dir, serve.model_store, name, "1", settings, **handler)


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


def request_bytes(server: TorchServe, model: str, body: bytes) -> bytes:
    host = server.url("inference").removeprefix("http://")
    headers = [
        f"POST /predictions/{model} HTTP/1.1",
        f"Host: {host}",
        "Content-Type: application/json",
        f"Content-Length: {len(body)}",
    ]
    if token := server.token("inference"):
        headers.append(f"Authorization: Bearer {token}")
    return ("\r\n".join(headers) + "\r\n\r\n").encode() + body


def load(server: TorchServe, model: str, body: bytes, clients: int, seconds: float) -> dict:
    """Closed-loop load: `clients` threads, each one request at a time, for `seconds`."""
    host, port = server.url("inference").removeprefix("http://").split(":")
    request = request_bytes(server, model, body)
    latencies: list[list[float]] = [[] for _ in range(clients)]
    failures = [0] * clients
    stop_at = time.perf_counter() + seconds

    def client(index: int) -> None:
        connection = KeepAliveClient(host, int(port), request)
        while (start := time.perf_counter()) < stop_at:
            failures[index] += connection.send() != 200
            latencies[index].append(time.perf_counter() - start)
        connection.close()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    samples = sorted(x for per_client in latencies for x in per_client)
    return {
        "rps": len(samples) / elapsed,
        "p50_ms": 1000 * statistics.median(samples),
        "p99_ms": 1000 * samples[int(0.99 * (len(samples) - 1))],
        "failures": sum(failures),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch-delay", type=int, default=10, help="max_batch_delay, ms")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="serve-bench-") as work:
        workdir = Path(work)
        models_dir, test_split = trained_model(workdir)
        serve = serve_config(workdir, args.batch_delay)
        build_archives(models_dir, serve, workdir)
        body = request_body(models_dir, test_split)
        server = TorchServe(serve, inference_log_dir=workdir / "inference-log")
        server.start({name: f"{name}.mar" for name in MODELS})
        try:
            best = run_rounds(server, body, args)
        finally:
            server.stop()
        logged = sum(
            len(path.read_bytes().splitlines()) for path in (workdir / "inference-log").glob("*.jsonl")
        )
    report(best, args)
    print(f"inference log: {logged} records at sample_rate {MonitorConfig.sample_rate}")


def run_rounds(server: TorchServe, body: bytes, args: argparse.Namespace) -> dict[str, dict]:
    best: dict[str, dict] = {}
    for model in MODELS:
        load(server, model, body, args.concurrency, 3.0)  # warm-up, the JVM's JIT included
    for round_number in range(args.rounds):
        # alternate the order, so neither side always runs on a warmer server
        for model in list(MODELS)[:: 1 if round_number % 2 == 0 else -1]:
            result = load(server, model, body, args.concurrency, args.seconds)
            if result["failures"]:
                raise SystemExit(f"{model}: {result['failures']} requests failed")
            if model not in best or result["rps"] > best[model]["rps"]:
                best[model] = result
    return best


def report(best: dict[str, dict], args: argparse.Namespace) -> None:
    print(
        f"concurrency {args.concurrency}, {args.seconds:.0f}s x {args.rounds} rounds per model, "
        f"max_batch_delay {args.batch_delay} ms, 1 worker per model, loopback"
    )
    print(f"{'model':<12} {'batch':>5} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8}")
    for model, result in best.items():
        print(
            f"{model:<12} {MODELS[model]:>5} {result['rps']:>9.1f} {result['p50_ms']:>8.2f} "
            f"{result['p99_ms']:>8.2f}"
        )
    print(f"handler_vs_minimal ratio: {best['forgeml']['rps'] / best['minimal']['rps']:.3f}")
    print(f"batching gain: {best['forgeml']['rps'] / best['forgeml_b1']['rps']:.2f}")


if __name__ == "__main__":
    main()
