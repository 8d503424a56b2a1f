"""The serving-engine bake-off of issue 21: one forgeml archive served by TorchServe (through
forgeml, as `forgeml serve start` runs it) and by a prototype adapter on each other engine.

One .mar of the breast_cancer model (trained quickly in a temporary workspace, as
bench/serve_throughput.py does) is built twice: at forgeml's default `serve` settings (batch 1)
and with dynamic batching (`serve.batch_size` 8, `max_batch_delay` 5 ms); one TorchServe serves
both. Each other engine serves the second archive (`--engine-archive default`: the first),
unpacked: its own modules
(bench/archive_model.py) in the engine's virtual environment, `<venvs>/<engine>/bin/python`,
batching as the archive's model-config.yaml says (8 requests, 5 ms), with the forgeml metrics
and the inference log at the archive's settings:

    litserve   bench/bakeoff_litserve.py   POST /predictions/<model>, forgeml's body as is
    mlserver   bench/bakeoff_mlserver.py   POST /predictions/<model>, a custom route on MLServer's
                                           app feeding its adaptive batcher
    pytriton   bench/bakeoff_pytriton.py   POST /v2/models/<model>/infer: KServe v2 only, so the
                                           client sends forgeml's body wrapped as a BYTES input
                                           (what a translating gateway would send)

Before any load, each engine's answers to a good request and to each kind of bad one (missing
feature, wrong type, Infinity, malformed JSON, empty instances) are compared with TorchServe's,
status and body, and 8 concurrent requests, every other one bad, are sent 20 times to each
batching server: a good request refused or a bad one answered is counted as answered wrongly.
An engine whose environment is missing is skipped, saying why. Every server stays up through
the run (one idle beside the one measured); the client is serve_throughput.py's keep-alive
client, on one record per request, with OMP_NUM_THREADS=1 everywhere. Each server is warmed up
at the highest concurrency, then each level runs `--rounds` times, the servers' order reversed
every other round; the median round counts.

    python bench/engine_bakeoff.py [--engines litserve,mlserver,pytriton] [--seconds 5]
                                   [--rounds 2] [--concurrency 1,16] [--venvs DIR]
                                   [--engine-archive batched|default]

Prints req/s, p50, p99 and server CPU per request for each server and level, then each
engine's req/s and p50 as ratios against TorchServe's at the default settings (`ratio vs
torchserve`) and with the same batching (`ratio vs torchserve-b8`).
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import signal
import statistics
import subprocess
import tempfile
import time
import urllib.request
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from serve_throughput import closed_loop, http_request, process_cpu, request_body, serve_config, trained_model

from forgeml.config import MonitorConfig
from forgeml.serving.archive import build_archive
from forgeml.serving.processes import free_ports
from forgeml.serving.server import TorchServe

BENCH = Path(__file__).resolve().parent
ENGINES = ("litserve", "mlserver", "pytriton")
BATCHING = {"batch_size": 8, "max_batch_delay": 5}
BASELINE = "torchserve"
MODEL = "bench"
# the archive with BATCHING: TorchServe's second model, and every other engine's
BATCHED = f"{MODEL}_b8"
START_TIMEOUT = 240.0


@dataclass
class Target:
    """One server's model, as the client sees it: forgeml's body as is, or wrapped as a KServe
    v2 request (`v2`)."""

    name: str
    host: str
    port: int
    path: str
    pid: int
    token: str | None = None
    v2: bool = False

    def request(self, body: bytes) -> bytes:
        return http_request(
            f"{self.host}:{self.port}", self.path, v2_body(body) if self.v2 else body, self.token
        )

    def load(self, body: bytes, clients: int, seconds: float) -> dict:
        request = self.request(body)
        return closed_loop(self.host, self.port, request, clients, seconds, lambda: process_cpu(self.pid))

    def answer(self, body: bytes) -> tuple[int, Any]:
        """(HTTP status, JSON answer) to one request; a v2 answer unwrapped."""
        headers = {"Content-Type": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        connection = http.client.HTTPConnection(self.host, self.port, timeout=30)
        try:
            connection.request("POST", self.path, v2_body(body) if self.v2 else body, headers)
            response = connection.getresponse()
            status, answer = response.status, json.loads(response.read() or b"null")
        finally:
            connection.close()
        if self.v2 and status == 200:
            outputs = {output["name"]: output["data"][0] for output in answer["outputs"]}
            status, answer = int(outputs["status"]), json.loads(outputs["answer"])
        return status, answer


def torchserve_targets(server: TorchServe) -> list[Target]:
    host, port = server.url("inference").removeprefix("http://").split(":")
    token = server.token("inference")
    return [
        Target(name, host, int(port), f"/predictions/{model}", server.pid(), token)
        for name, model in ((BASELINE, MODEL), (f"{BASELINE}-b8", BATCHED))
    ]


def start_engine(
    engine: str, python: Path, model_dir: Path, model: str, log_dir: Path
) -> tuple[subprocess.Popen, Target]:
    """The engine's prototype serving `model` on a free port, once its readiness route answers
    200."""
    port, metrics_port = free_ports(2)
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "FORGEML_INFERENCE_LOG_DIR": str(log_dir / engine),
        "PYTHONPATH": str(BENCH),
        # Triton's Python stub links the system's libpython3.11; the venv's interpreter may be
        # another 3.11 (pyenv's), whose standard library the stub then fails on
        "LD_LIBRARY_PATH": interpreter_libdir(python),
    }
    command = [str(python), str(BENCH / f"bakeoff_{engine}.py"), str(model_dir), str(port), str(metrics_port)]
    with open(log_dir / f"{engine}.err", "wb") as errors:
        # a session of its own: its worker processes are stopped with it (stop_engine)
        process = subprocess.Popen(
            command, env=env, stdout=subprocess.DEVNULL, stderr=errors, start_new_session=True
        )
    # LitServe's /health waits for every worker; the v2 servers' own readiness does not wait
    # for the model (Triton answers it before the model loads), their model's does
    ready = f"http://127.0.0.1:{port}" + ("/health" if engine == "litserve" else f"/v2/models/{model}/ready")
    try:
        wait_ready(process, ready, log_dir / f"{engine}.err")
    except RuntimeError:
        stop_engine(process)
        raise
    v2 = engine == "pytriton"
    path = f"/v2/models/{model}/infer" if v2 else f"/predictions/{model}"
    return process, Target(engine, "127.0.0.1", port, path, process.pid, v2=v2)


def interpreter_libdir(python: Path) -> str:
    """The lib directory of the interpreter a virtual environment was made from."""
    config = (python.parent.parent / "pyvenv.cfg").read_text()
    home = next(line.split("=", 1)[1].strip() for line in config.splitlines() if line.startswith("home"))
    return str(Path(home).parent / "lib")


def stop_engine(process: subprocess.Popen) -> None:
    """SIGTERM to the prototype, then to whatever of its session is left."""
    process.terminate()
    try:
        process.wait(30)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)


def v2_body(body: bytes) -> bytes:
    """forgeml's request body as the one BYTES element of a KServe v2 request."""
    return json.dumps(
        {"inputs": [{"name": "body", "shape": [1, 1], "datatype": "BYTES", "data": [body.decode()]}]}
    ).encode()


def unpack(archive: Path, directory: Path) -> Path:
    """`archive` unzipped into `directory`; a member that would land outside it is refused (the
    path traversal TorchServe's archive reader was left open to)."""
    directory = directory.resolve()
    with zipfile.ZipFile(archive) as members:
        for name in members.namelist():
            if not (directory / name).resolve().is_relative_to(directory):
                raise ValueError(f"{archive}: member {name!r} lies outside the archive")
        members.extractall(directory)
    return directory


def wait_ready(process: subprocess.Popen, url: str, errors: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"exited {process.returncode}:\n{errors.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"not ready after {START_TIMEOUT:.0f} s:\n{errors.read_text()[-3000:]}")


def contract_bodies(body: bytes) -> dict[str, bytes]:
    """A good request (with its own id, so that answers compare equal) and one of each kind of
    bad request, named by the refusal expected."""
    record = {**json.loads(body)["instances"][0], "id": "r1"}
    first = next(iter(record))
    return {
        "good": json.dumps({"instances": [record]}).encode(),
        "missing_feature": json.dumps(
            {"instances": [{k: v for k, v in record.items() if k != first}]}
        ).encode(),
        "wrong_type": json.dumps({"instances": [{**record, first: "x"}]}).encode(),
        "not_finite": json.dumps({"instances": [{**record, first: float("inf")}]}).encode(),
        "malformed_json": b'{"instances": [',
        "empty_instances": b'{"instances": []}',
    }


def check_contract(baseline: Target, target: Target, body: bytes) -> list[str]:
    """Where `target` answers other than `baseline` (statuses and JSON bodies)."""
    differences = []
    for kind, request in contract_bodies(body).items():
        expected, got = baseline.answer(request), target.answer(request)
        if expected != got:
            differences.append(f"{kind}: torchserve {expected}, {target.name} {got}")
    return differences


def check_isolation(target: Target, body: bytes, rounds: int = 20) -> int:
    """Requests answered wrongly when 8 arrive together, every other one bad: a batching server
    must refuse the bad ones alone."""
    bodies = contract_bodies(body)
    mixed = [bodies["good"] if i % 2 == 0 else bodies["missing_feature"] for i in range(8)]
    wrong = 0
    for _ in range(rounds):
        with ThreadPoolExecutor(len(mixed)) as pool:
            statuses = [status for status, _ in pool.map(target.answer, mixed)]
        wrong += sum(status != (200 if i % 2 == 0 else 400) for i, status in enumerate(statuses))
    return wrong


def measure(
    targets: list[Target], body: bytes, levels: list[int], seconds: float, rounds: int
) -> dict[int, dict[str, dict]]:
    """Per level and target, the median of `rounds` rounds; the targets' order reversed every
    other round."""
    for target in targets:
        target.load(body, max(levels), 5.0)
    results: dict[int, dict[str, list[dict]]] = {level: {t.name: [] for t in targets} for level in levels}
    for level in levels:
        for round_number in range(rounds):
            for target in targets[:: 1 if round_number % 2 == 0 else -1]:
                result = target.load(body, level, seconds)
                if result["failures"]:
                    raise SystemExit(f"{target.name}: {result['failures']} requests failed")
                results[level][target.name].append(result)
    return {
        level: {
            name: {key: statistics.median(r[key] for r in runs) for key in runs[0]}
            for name, runs in per.items()
        }
        for level, per in results.items()
    }


def report(
    results: dict[int, dict[str, dict]], args: argparse.Namespace, load_before: tuple, load_after: tuple
) -> None:
    print(f"{args.seconds:.0f}s x {args.rounds} rounds (median), loopback, OMP_NUM_THREADS=1")
    print(f"engines serve the {args.engine_archive} archive")
    print(f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f} (1 min)")
    print(f"{'server':<12} {'clients':>7} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'cpu ms/req':>10}")
    for level, per in results.items():
        for name, r in per.items():
            figures = f"{r['rps']:>9.1f} {r['p50_ms']:>8.2f} {r['p99_ms']:>8.2f} {r['cpu_ms']:>10.3f}"
            print(f"{name:<12} {level:>7} {figures}")
    for baseline in (BASELINE, f"{BASELINE}-b8"):
        for level, per in results.items():
            base = per[baseline]
            for name, r in per.items():
                if not name.startswith(BASELINE):
                    print(
                        f"ratio vs {baseline} at {level}: {name} req/s {r['rps'] / base['rps']:.2f}, "
                        f"p50 {r['p50_ms'] / base['p50_ms']:.2f}"
                    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engines", default=",".join(ENGINES))
    parser.add_argument("--concurrency", default="1,16")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--venvs", type=Path, default=Path("/work/bakeoff-venvs"))
    parser.add_argument(
        "--engine-archive",
        choices=("batched", "default"),
        default="batched",
        help="which archive the other engines serve: the batching one, or forgeml's default (batch 1)",
    )
    args = parser.parse_args()
    os.environ["OMP_NUM_THREADS"] = "1"
    levels = [int(level) for level in args.concurrency.split(",")]
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="engine-bakeoff-") as work:
        workdir = Path(work)
        models_dir, test_split = trained_model(workdir)
        serve = serve_config(workdir, {})
        monitor = MonitorConfig()
        build_archive(models_dir, serve.model_store, MODEL, "1", serve, monitor=monitor)
        build_archive(
            models_dir,
            serve.model_store,
            BATCHED,
            "1",
            serve_config(workdir, BATCHING),
            monitor=monitor,
        )
        body = request_body(models_dir, test_split)
        processes = []
        server = TorchServe(serve, inference_log_dir=workdir / "inference-log")
        server.start({MODEL: f"{MODEL}.mar", BATCHED: f"{BATCHED}.mar"})
        try:
            targets = torchserve_targets(server)
            wrong = check_isolation(targets[1], body)
            print(f"torchserve-b8: requests answered wrongly in mixed batches: {wrong}")
            for engine in args.engines.split(","):
                python = args.venvs / engine / "bin" / "python"
                if not python.is_file():
                    print(f"{engine}: skipped, no {python}")
                    continue
                model = BATCHED if args.engine_archive == "batched" else MODEL
                model_dir = unpack(Path(serve.model_store) / f"{model}.mar", workdir / f"unpacked-{engine}")
                try:
                    process, target = start_engine(engine, python, model_dir, model, workdir)
                except RuntimeError as error:
                    print(f"{engine}: skipped, it did not start: {error}")
                    continue
                processes.append(process)
                differences = check_contract(targets[0], target, body)
                print(f"{engine}: answers and 400s as torchserve's: {differences or 'yes'}")
                print(
                    f"{engine}: requests answered wrongly in mixed batches: {check_isolation(target, body)}"
                )
                targets.append(target)
            results = measure(targets, body, levels, args.seconds, args.rounds)
        finally:
            for process in processes:
                stop_engine(process)
            server.stop()
    report(results, args, load_before, os.getloadavg())


if __name__ == "__main__":
    main()
