"""A local TorchServe: start, stop, status, readiness and the management calls deploy needs.

Each server lives in its own runtime directory (`serve.runtime_dir`), which is its working
directory (TorchServe writes logs/ and key_file.json there), its TMPDIR (PID file, worker
sockets, unpacked archives) and the home of the config.properties written from the `serve`
config. Two servers with different runtime directories and ports run side by side.

Secure by default: every port on `serve.host` (127.0.0.1), token auth on, the model API
(register/unregister at runtime) only with `serve.model_api=true`, `allowed_urls` limited to
the local model store, workflows from an empty store only, request size capped.

Monitoring: metrics in Prometheus format on the metrics port, from a metrics config
(metrics.yaml in the runtime directory) that declares the forgeml handler's metrics next to
TorchServe's own; and the workers are told where to write the inference log
($FORGEML_INFERENCE_LOG_DIR, from `monitor.log_dir`).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from forgeml.errors import ForgeError
from forgeml.io import read_json, write_json, write_text
from forgeml.monitoring.privacy import LOG_KEY_VARIABLE, log_key_file
from forgeml.serving.archive import archive_manifest

if TYPE_CHECKING:
    from forgeml.serving.registry import Registry

READY = "READY"
POLL_SECONDS = 0.5
STOP_TIMEOUT = 30.0
# a worker that died this many times while loading is crash-looping, not starting slowly
CRASH_LOOP_DEATHS = 2
QUOTED_LOG_LINES = 15
FRONTEND_CLASS = "org.pytorch.serve.ModelServer"
# read by the handler (handler.py, LOG_DIR_VARIABLE): the directory of the inference log
LOG_DIR_VARIABLE = "FORGEML_INFERENCE_LOG_DIR"
# the handler's metrics (handler.py, top) as (type, name, unit, own dimensions): in prometheus
# mode TorchServe shows declared metrics only, and takes dimension values by position
HANDLER_METRICS = [
    ("counter", "forgeml_predictions", "count", ["Class"]),
    ("counter", "forgeml_rejected_requests", "count", ["Reason"]),
    ("counter", "forgeml_out_of_range_values", "count", ["Feature"]),
    ("counter", "forgeml_inference_log_errors", "count", []),
    ("histogram", "forgeml_predicted_value", "value", []),
]
# after its own, every handler metric carries ModelVersion, then the ModelName and Level that
# TorchServe's add_counter/add_metric append (and the Hostname its frontend adds)
COMMON_DIMENSIONS = ["ModelVersion", "ModelName", "Level"]


class TorchServe:
    """One TorchServe instance described by a `serve` config node."""

    def __init__(self, serve: Any, inference_log_dir: str | Path | None = None):
        """`inference_log_dir` (`monitor.log_dir`): where a server started here has its workers
        write the inference log; None: no inference log."""
        self.serve = serve
        self.runtime = Path(serve.runtime_dir).resolve()
        self.store = Path(serve.model_store).resolve()
        self.inference_log_dir = Path(inference_log_dir).resolve() if inference_log_dir else None

    # --- files of the runtime directory -------------------------------------------------

    @property
    def tmp_dir(self) -> Path:
        return self.runtime / "tmp"

    @property
    def logs_dir(self) -> Path:
        return self.runtime / "logs"

    @property
    def key_file(self) -> Path:
        return self.runtime / "key_file.json"

    @property
    def pid_file(self) -> Path:
        # where the torchserve launcher writes it: tempfile.gettempdir(), i.e. our TMPDIR
        return self.tmp_dir / ".model_server.pid"

    @property
    def history_file(self) -> Path:
        """Versions made default, oldest first, per model: what rollback goes back along."""
        return self.runtime / "deployments.json"

    def url(self, api: str) -> str:
        """Where `api` listens: as the running server was configured, else as the config says."""
        written = self.running_properties().get(f"{api}_address")
        port = {
            "inference": self.serve.inference_port,
            "management": self.serve.management_port,
            "metrics": self.serve.metrics_port,
        }[api]
        return written or f"http://{self.serve.host}:{port}"

    def model_api(self) -> bool:
        written = self.running_properties().get("enable_model_api")
        return self.serve.model_api if written is None else written == "true"

    def running_properties(self) -> dict[str, str]:
        """The config.properties the running server started with ({} when none runs)."""
        path = self.runtime / "config.properties"
        if self.pid() is None or not path.is_file():
            return {}
        lines = path.read_text(encoding="utf-8").splitlines()
        pairs = [line.split("=", 1) for line in lines if "=" in line and not line.startswith("#")]
        return dict(pairs)

    # --- lifecycle ------------------------------------------------------------------------

    def pid(self) -> int | None:
        """The Java frontend's process id while it runs, else None."""
        if not self.pid_file.is_file():
            return None
        pid = int(self.pid_file.read_text().strip() or 0)
        return pid if pid and frontend_running(pid) else None

    def start(self) -> None:
        """Start TorchServe with every archive of the store loaded; return when all are READY."""
        if self.pid():
            raise ForgeError(
                f"TorchServe is already running from {self.runtime} (pid {self.pid()}); "
                "stop it with `forgeml serve stop`"
            )
        java_home = find_java()
        self.check_ports_free()
        self.prepare_runtime()
        env = {**os.environ, "TMPDIR": str(self.tmp_dir), "TEMP": str(self.tmp_dir)}
        # TorchServe passes its environment on to the workers it starts
        env.pop(LOG_DIR_VARIABLE, None)
        env.pop(LOG_KEY_VARIABLE, None)
        if self.inference_log_dir:
            env[LOG_DIR_VARIABLE] = str(self.inference_log_dir)
            env[LOG_KEY_VARIABLE] = str(log_key_file(self.runtime))
        if java_home:
            env["JAVA_HOME"] = java_home
        command = [
            torchserve_executable(),
            *("--start", "--ncs", "--ts-config", str(self.runtime / "config.properties")),
            *("--model-store", str(self.store)),
        ]
        # TorchServe's output goes to a file: a pipe nobody reads would block it when full
        with open(self.logs_dir / "torchserve.out", "ab") as out:
            subprocess.run(
                command, cwd=self.runtime, env=env, stdout=out, stderr=out, timeout=60, check=False
            )
        try:
            self.wait_until_answering()
            for model in self.model_names():
                for entry in self.versions(model):
                    self.wait_ready(model, entry["modelVersion"])
        except ForgeError:
            self.stop()
            raise
        write_json(self.history_file, {m: [self.default_version(m)] for m in self.model_names()})

    def stop(self) -> bool:
        """Stop the frontend and every worker it started; False if nothing was running."""
        pid = self.pid()
        if pid is None:
            return False
        workers = descendants(pid)
        os.kill(pid, signal.SIGTERM)
        try:
            wait_for(lambda: not process_alive(pid), STOP_TIMEOUT, "TorchServe to stop")
        except ForgeError:
            os.kill(pid, signal.SIGKILL)
        # the frontend stops its workers; any it left behind are ended here
        for worker in workers:
            if process_alive(worker):
                os.kill(worker, signal.SIGKILL)
        wait_for(lambda: not any(map(process_alive, workers)), STOP_TIMEOUT, "workers to exit")
        self.pid_file.unlink(missing_ok=True)
        self.key_file.unlink(missing_ok=True)
        return True

    def prepare_runtime(self) -> None:
        for directory in (self.tmp_dir, self.logs_dir, self.runtime / "workflows", self.store):
            directory.mkdir(parents=True, exist_ok=True)
        # keys of an earlier run would look valid until the new ones are written
        self.key_file.unlink(missing_ok=True)
        write_text(self.runtime / "metrics.yaml", yaml.safe_dump(metrics_config(), sort_keys=False))
        write_text(self.runtime / "config.properties", render_properties(self.properties()))

    def properties(self) -> dict[str, Any]:
        serve, host = self.serve, self.serve.host
        return {
            "inference_address": f"http://{host}:{serve.inference_port}",
            "management_address": f"http://{host}:{serve.management_port}",
            "metrics_address": f"http://{host}:{serve.metrics_port}",
            "grpc_inference_address": host,
            "grpc_management_address": host,
            "grpc_inference_port": serve.grpc_inference_port,
            "grpc_management_port": serve.grpc_management_port,
            "model_store": self.store,
            "load_models": "ALL",
            "workflow_store": self.runtime / "workflows",
            "allowed_urls": f"file://{re.escape(str(self.store))}/.*",
            "enable_model_api": serve.model_api,
            "disable_token_authorization": not serve.token_auth,
            "enable_envvars_config": False,
            "install_py_dep_per_model": False,
            "metrics_mode": "prometheus",
            "metrics_config": self.runtime / "metrics.yaml",
            "max_request_size": serve.max_request_size,
            "default_workers_per_model": serve.workers,
            "default_response_timeout": serve.response_timeout,
        }

    def check_ports_free(self) -> None:
        for key in (
            "inference_port",
            "management_port",
            "metrics_port",
            "grpc_inference_port",
            "grpc_management_port",
        ):
            port = self.serve[key]
            if not port_free(self.serve.host, port):
                raise ForgeError(
                    f"port {port} on {self.serve.host} is taken (serve.{key}); stop what uses it "
                    f"or choose another port, e.g. serve.{key}={port + 100}"
                )

    # --- readiness ------------------------------------------------------------------------

    def wait_until_answering(self) -> None:
        deadline = time.monotonic() + self.serve.startup_timeout
        while not self.answers():
            if self.pid() is None:
                raise ForgeError(f"TorchServe exited while starting:\n{self.log_tail('ts_log.log')}")
            if time.monotonic() > deadline:
                raise ForgeError(f"TorchServe did not answer within {self.serve.startup_timeout}s")
            time.sleep(POLL_SECONDS)

    def answers(self) -> bool:
        try:
            self.call("GET", "management", "/models")
        except ForgeError:
            return False
        return True

    def wait_ready(self, model: str, version: str) -> None:
        """Every worker READY (describe-model); `/ping` says Healthy while workers crash-loop."""
        deadline = time.monotonic() + self.serve.startup_timeout
        while True:
            workers = self.describe(model, version)["workers"]
            if workers and all(worker["status"] == READY for worker in workers):
                return
            if self.worker_deaths(model, version) >= CRASH_LOOP_DEATHS:
                raise ForgeError(
                    f"the workers of {model} version {version} keep dying while loading; "
                    f"model log ({self.logs_dir / 'model_log.log'}):\n"
                    f"{self.model_log_excerpt(model, version)}"
                )
            if time.monotonic() > deadline:
                states = ", ".join(w["status"] for w in workers) or "none"
                raise ForgeError(
                    f"{model} version {version} not READY after {self.serve.startup_timeout}s "
                    f"(workers: {states}); raise serve.startup_timeout or see {self.logs_dir}"
                )
            time.sleep(POLL_SECONDS)

    def worker_deaths(self, model: str, version: str) -> int:
        tag = f"-{model}_{version}-stdout MODEL_LOG - Backend worker process died"
        return sum(tag in line for line in self.read_log("model_log.log"))

    def model_log_excerpt(self, model: str, version: str) -> str:
        """The model's last log messages, without TorchServe's prefixes."""
        tag = f"-{model}_{version}-"
        messages = [
            line.split("MODEL_LOG - ", 1)[-1] for line in self.read_log("model_log.log") if tag in line
        ]
        return "\n".join(f"  {message}" for message in messages[-QUOTED_LOG_LINES:])

    def read_log(self, name: str) -> list[str]:
        path = self.logs_dir / name
        if not path.is_file():
            return []
        return path.read_text(encoding="utf-8", errors="replace").splitlines()

    def log_tail(self, name: str) -> str:
        lines = self.read_log(name) or self.read_log("torchserve.out")
        return "\n".join(lines[-QUOTED_LOG_LINES:])

    # --- management API ---------------------------------------------------------------------

    def token(self, api: str) -> str | None:
        """The key for `api` from TorchServe's key file; None without token auth."""
        if not self.key_file.is_file():
            return None
        try:
            return read_json(self.key_file)[api]["key"]
        except (json.JSONDecodeError, KeyError):
            # a starting TorchServe is still writing it: the call is refused, and retried
            return None

    def call(self, method: str, api: str, path: str, body: bytes | None = None) -> Any:
        """One authenticated request; a refusal raises ForgeError quoting TorchServe's message."""
        status, answer = http_request(method, self.url(api) + path, self.token(api), body)
        if status >= 300:
            message = answer.get("message", answer) if isinstance(answer, dict) else answer
            raise ForgeError(f"TorchServe refused {method} {path} ({status}): {message}")
        return answer

    def model_names(self) -> list[str]:
        return [model["modelName"] for model in self.call("GET", "management", "/models")["models"]]

    def describe(self, model: str, version: str) -> dict[str, Any]:
        return self.call("GET", "management", f"/models/{model}/{version}")[0]

    def versions(self, model: str) -> list[dict[str, Any]]:
        return self.call("GET", "management", f"/models/{model}/all")

    def default_version(self, model: str) -> str:
        return self.call("GET", "management", f"/models/{model}")[0]["modelVersion"]

    def register(self, archive: str) -> None:
        """Register an archive of the model store; needs the model API (serve.model_api=true)."""
        if not self.model_api():
            raise ForgeError(
                "this server was started with the model API off, so it cannot register a new "
                "version; restart it with `forgeml serve stop` and "
                "`forgeml serve start serve.model_api=true`, then deploy"
            )
        url = urllib.parse.quote(archive, safe="")
        query = f"url={url}&initial_workers={self.serve.workers}&synchronous=false"
        self.call("POST", "management", f"/models?{query}")

    def set_default(self, model: str, version: str) -> None:
        self.call("PUT", "management", f"/models/{model}/{version}/set-default")

    # --- deployments ------------------------------------------------------------------------

    def deploy(self, archive: Path) -> dict[str, Any]:
        """Register the archive's version unless it is already, wait for READY, make it default."""
        model, version = archive_identity(archive)
        registered = model in self.model_names() and any(
            entry["modelVersion"] == version for entry in self.versions(model)
        )
        if not registered:
            self.register(archive.name)
        try:
            self.wait_ready(model, version)
        except ForgeError:
            if not registered:
                self.call("DELETE", "management", f"/models/{model}/{version}")
            raise
        self.set_default(model, version)
        history = self.history()
        if history.get(model, [])[-1:] != [version]:
            history.setdefault(model, []).append(version)
        write_json(self.history_file, history)
        return {"model": model, **self.model_status(model)}

    def rollback(self, model: str, registry: Registry) -> dict[str, Any]:
        """Make the version that was default before the current one the default again,
        registering it from the registry's archive copy if this server no longer holds it."""
        history = self.history().get(model, [])
        if len(history) < 2:
            raise ForgeError(
                f"nothing to roll back to: {model} has had one default version on this server "
                f"({', '.join(history) or 'none'}) since it started"
            )
        previous = history[-2]
        if all(entry["modelVersion"] != previous for entry in self.versions(model)):
            self.register(str(registry.archive_copy(model, previous).relative_to(self.store)))
        self.wait_ready(model, previous)
        self.set_default(model, previous)
        write_json(self.history_file, {**self.history(), model: history[:-1]})
        return {"model": model, **self.model_status(model)}

    def history(self) -> dict[str, list[str]]:
        return read_json(self.history_file) if self.history_file.is_file() else {}

    def status(self) -> dict[str, Any]:
        """URLs, models with their versions and worker states, and where the tokens are."""
        pid = self.pid()
        report: dict[str, Any] = {"running": pid is not None, "runtime_dir": str(self.runtime)}
        if pid is None:
            return report
        report |= {
            "pid": pid,
            "inference_url": self.url("inference"),
            "management_url": self.url("management"),
            "metrics_url": self.url("metrics") + "/metrics",
            "key_file": str(self.key_file) if self.key_file.is_file() else None,
            "model_api": self.model_api(),
            "models": {name: self.model_status(name) for name in self.model_names()},
        }
        return report

    def model_status(self, model: str) -> dict[str, Any]:
        return {
            "default_version": self.default_version(model),
            "versions": {
                entry["modelVersion"]: [w["status"] for w in entry["workers"]]
                for entry in self.versions(model)
            },
        }


def archive_identity(archive: Path) -> tuple[str, str]:
    """(model name, version) written in the archive by `forgeml package`."""
    if not archive.is_file():
        raise ForgeError(f"no archive {archive}; build it with `forgeml package`")
    model = archive_manifest(archive)["model"]
    return model["modelName"], model["modelVersion"]


def metrics_config() -> dict[str, Any]:
    """TorchServe's default metrics config with the forgeml handler's metrics added."""
    try:
        import ts
    except ImportError:
        raise ForgeError("TorchServe is not installed: pip install 'forgeml[serve]'") from None
    defaults = Path(ts.__file__).with_name("configs") / "metrics.yaml"
    config = yaml.safe_load(defaults.read_text(encoding="utf-8"))
    model_metrics = config.get("model_metrics") or {}
    for kind, name, unit, dimensions in HANDLER_METRICS:
        declared = {"name": name, "unit": unit, "dimensions": [*dimensions, *COMMON_DIMENSIONS]}
        model_metrics[kind] = [*(model_metrics.get(kind) or []), declared]
    return {**config, "model_metrics": model_metrics}


def render_properties(properties: dict[str, Any]) -> str:
    def text(value: Any) -> str:
        return str(value).lower() if isinstance(value, bool) else str(value)

    lines = ["# written by `forgeml serve start` from the `serve` config; edits are overwritten"]
    return "\n".join([*lines, *(f"{key}={text(value)}" for key, value in properties.items())]) + "\n"


def http_request(
    method: str, url: str, token: str | None, body: bytes | None = None, timeout: float = 30.0
) -> tuple[int, Any]:
    """(status, decoded JSON body) of one HTTP request; error statuses are returned, not raised."""
    request = urllib.request.Request(url, data=body, method=method)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    if body is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as error:
        status, raw = error.code, error.read()
    except (urllib.error.URLError, OSError) as error:
        raise ForgeError(f"no answer from {url}: {error}") from None
    try:
        return status, json.loads(raw or b"null")
    except json.JSONDecodeError:
        return status, raw.decode("utf-8", errors="replace")


def find_java() -> str | None:
    """JAVA_HOME if it holds a java, else None when java is on PATH; ForgeError when neither."""
    java_home = os.environ.get("JAVA_HOME")
    if java_home and (Path(java_home) / "bin" / "java").is_file():
        return java_home
    if shutil.which("java"):
        return None
    raise ForgeError(
        "TorchServe needs Java 11 or newer and none was found (no JAVA_HOME, no java on PATH); "
        "install it, e.g. `apt-get install openjdk-17-jre-headless`"
    )


def torchserve_executable() -> str:
    beside_python = Path(sys.executable).with_name("torchserve")
    found = str(beside_python) if beside_python.is_file() else shutil.which("torchserve")
    if not found:
        raise ForgeError("TorchServe is not installed: pip install 'forgeml[serve]'")
    return found


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """`count` distinct ports free right now on `host` (for side-by-side servers and tests)."""
    sockets = [socket.socket() for _ in range(count)]
    for probe in sockets:
        probe.bind((host, 0))
    ports = [probe.getsockname()[1] for probe in sockets]
    for probe in sockets:
        probe.close()
    return ports


def port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        # like the server will: a port in TIME_WAIT is free, one with a listener is not
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def process_alive(pid: int) -> bool:
    """True for a running process; a zombie (exited, not yet reaped) counts as gone."""
    import psutil  # a TorchServe dependency

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def frontend_running(pid: int) -> bool:
    """True while `pid` is a TorchServe frontend: a PID file can outlive it, and pids get reused."""
    import psutil

    try:
        process = psutil.Process(pid)
        return process.status() != psutil.STATUS_ZOMBIE and FRONTEND_CLASS in process.cmdline()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False


def descendants(pid: int) -> list[int]:
    """Every process below `pid`: the frontend's workers."""
    import psutil

    try:
        return [child.pid for child in psutil.Process(pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise ForgeError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(POLL_SECONDS / 5)
