"""A local TorchServe: start, stop and readiness (local_server.py puts it behind the gateway).

Each server lives in its own runtime directory (`serve.runtime_dir`), which is its working
directory (TorchServe writes key_file.json there) and the home of the files it is started with
(runtime_files.py: config.properties, log4j2.xml, metrics.yaml; tls/ for a self-signed
certificate); its TMPDIR (PID file, worker sockets, unpacked archives) is a short directory
named after it (`tmp_dir`). Two servers with different runtime directories and ports run side
by side.

Secure by default: every port on `serve.host` (127.0.0.1), token auth on, the model API
(register/unregister at runtime) only with `serve.model_api=true`, `allowed_urls` limited to
plain archive names in the local model store, workflows from an empty store only, request size
capped, HTTPS on every endpoint with `serve.tls=true`. Logs rotate by size (`serve.log_max_bytes`).

A server loads exactly the archives it is given (deployments.py: the versions the registry
says serve), never "every archive in the store". The workers are told where to write the
inference log ($FORGEML_INFERENCE_LOG_DIR, from `monitor.log_dir`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import ssl
import subprocess
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from forgeml.contract import LOG_DIR_VARIABLE, LOG_KEY_VARIABLE
from forgeml.errors import ForgeError
from forgeml.io import read_json, write_text
from forgeml.monitoring.privacy import log_key_file
from forgeml.serving import tls
from forgeml.serving.management import Endpoint, ManagementClient
from forgeml.serving.processes import (
    check_ports_free,
    descendants,
    find_java,
    frontend_running,
    port_free,
    process_alive,
    torchserve_executable,
    wait_for,
)
from forgeml.serving.runtime_files import (
    allowed_urls,
    log4j_config,
    metrics_config,
    read_properties,
    render_properties,
)

READY = "READY"
POLL_SECONDS = 0.5
STOP_TIMEOUT = 30.0
# seconds `stop` waits for the server's ports to be free once its processes are gone
PORT_RELEASE_TIMEOUT = 10.0
# a worker that died this many times while loading is crash-looping, not starting slowly
CRASH_LOOP_DEATHS = 2
QUOTED_LOG_LINES = 15
# a year: the keys of a running server outlive any deploy, and are new at each start anyway
TOKEN_LIFETIME_MINUTES = 525600
PORT_KEYS = (
    "inference_port",
    "management_port",
    "metrics_port",
    "grpc_inference_port",
    "grpc_management_port",
)


def jvm_options() -> str:
    """The frontend JVM's flags. TorchServe 0.12 hands every batch to its worker through
    `CompletableFuture.runAsync`, which starts a new thread per call when the JVM's common pool
    has fewer than two threads, as it has by default (one less than the cores) on a 2-core
    machine. A thread per batch there cost unbatched serving half its requests/s at 16 clients
    and more than a millisecond of a lone request's latency (bench/serve_throughput.py). Larger
    machines keep the JVM's default."""
    parallelism = max(2, (os.cpu_count() or 1) - 1)
    return f"-Djava.util.concurrent.ForkJoinPool.common.parallelism={parallelism}"


class TorchServe:
    """One TorchServe instance described by a `serve` config node."""

    def __init__(
        self, serve: Any, inference_log_dir: str | Path | None = None, log_key_dir: str | Path | None = None
    ):
        """`inference_log_dir` (`monitor.log_dir`): where a server started here has its workers
        write the inference log; None: no inference log. `log_key_dir`: the directory whose
        inference-log key hashes the logged columns (default: the runtime directory), so that
        servers that replace one another hash alike."""
        self.serve = serve
        self.runtime = Path(serve.runtime_dir).resolve()
        self.store = Path(serve.model_store).resolve()
        self.inference_log_dir = Path(inference_log_dir).resolve() if inference_log_dir else None
        self.log_key_dir = Path(log_key_dir).resolve() if log_key_dir else self.runtime

    # --- files of the runtime directory -------------------------------------------------

    @property
    def tmp_dir(self) -> Path:
        """TorchServe's TMPDIR (PID file, worker sockets, unpacked archives): a short directory of
        its own in the system's temporary directory, named after the runtime directory. A worker's
        socket path must fit in 107 bytes, which a project's runtime directory nested a few
        levels deep (serve/runtime/a/tmp/.ts.sock.9000) does not."""
        digest = hashlib.sha256(str(self.runtime).encode()).hexdigest()[:16]
        return Path(tempfile.gettempdir()) / f"forgeml-{digest}"

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
    def properties_file(self) -> Path:
        return self.runtime / "config.properties"

    @property
    def console_file(self) -> Path:
        """TorchServe's console output of the last start: launcher messages and JVM errors (the
        logs proper go to rotated files), rewritten at every start, so it stays small."""
        return self.logs_dir / "torchserve.out"

    def url(self, api: str) -> str:
        """Where `api` listens: as the running server was configured, else as the config says."""
        written = self.running_properties().get(f"{api}_address")
        port = {
            "inference": self.serve.inference_port,
            "management": self.serve.management_port,
            "metrics": self.serve.metrics_port,
        }[api]
        scheme = "https" if self.serve.tls else "http"
        return written or f"{scheme}://{self.serve.host}:{port}"

    @property
    def api(self) -> ManagementClient:
        """A client of the management API as it is now: a starting server's key file and
        properties are read afresh at each use."""
        endpoint = Endpoint(
            self.url("management"), self.token("management"), self.client_context(), self.model_api()
        )
        return ManagementClient(endpoint)

    def model_api(self) -> bool:
        written = self.running_properties().get("enable_model_api")
        return self.serve.model_api if written is None else written == "true"

    def certificate(self) -> Path | None:
        """The certificate the running server presents; None without TLS."""
        written = self.running_properties().get("certificate_file")
        return Path(written) if written else None

    def client_context(self) -> ssl.SSLContext | None:
        """What forgeml's clients verify the running server with: its own certificate."""
        certificate = self.certificate()
        return tls.client_context(certificate) if certificate else None

    def running_properties(self) -> dict[str, str]:
        """The config.properties the running server started with ({} when none runs)."""
        if self.pid() is None or not self.properties_file.is_file():
            return {}
        return read_properties(self.properties_file.read_text(encoding="utf-8"))

    def token(self, api: str) -> str | None:
        """The key for `api` from TorchServe's key file; None without token auth."""
        if not self.key_file.is_file():
            return None
        try:
            return read_json(self.key_file)[api]["key"]
        except (json.JSONDecodeError, KeyError):
            # a starting TorchServe is still writing it: the call is refused, and retried
            return None

    # --- lifecycle ------------------------------------------------------------------------

    def pid(self) -> int | None:
        """The Java frontend's process id while it runs, else None."""
        if not self.pid_file.is_file():
            return None
        pid = int(self.pid_file.read_text().strip() or 0)
        return pid if pid and frontend_running(pid) else None

    def start(self, archives: Mapping[str, str]) -> None:
        """Start TorchServe serving `archives` (model name -> plain file name in the model
        store; empty: no model); return when every worker is READY."""
        if self.pid():
            raise ForgeError(
                f"TorchServe is already running from {self.runtime} (pid {self.pid()}); "
                "stop it with `forgeml serve stop`"
            )
        java_home = find_java()
        self.check_ports_free()
        self.prepare_runtime(archives)
        env = {**os.environ, "TMPDIR": str(self.tmp_dir), "TEMP": str(self.tmp_dir)}
        # TorchServe passes its environment on to the workers it starts
        env.pop(LOG_DIR_VARIABLE, None)
        env.pop(LOG_KEY_VARIABLE, None)
        if self.inference_log_dir:
            env[LOG_DIR_VARIABLE] = str(self.inference_log_dir)
            env[LOG_KEY_VARIABLE] = str(log_key_file(self.log_key_dir))
        if java_home:
            env["JAVA_HOME"] = java_home
        command = [
            torchserve_executable(),
            *("--start", "--ncs", "--ts-config", str(self.properties_file)),
            *("--model-store", str(self.store), "--log-config", str(self.runtime / "log4j2.xml")),
        ]
        # to a file, never a pipe nobody reads (it would block TorchServe when full)
        with open(self.console_file, "wb") as out:
            subprocess.run(
                command, cwd=self.runtime, env=env, stdout=out, stderr=out, timeout=60, check=False
            )
        try:
            self.wait_until_answering()
            for model in archives:
                for entry in self.api.versions(model):
                    self.wait_ready(model, entry["modelVersion"])
        except ForgeError:
            self.stop()
            raise

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
            # its ports are free only once it is gone: a restart right after a kill found one taken
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            wait_for(lambda: not process_alive(pid), STOP_TIMEOUT, "TorchServe to exit after SIGKILL")
        # the frontend stops its workers; any it left behind are ended here
        for worker in workers:
            if process_alive(worker):
                os.kill(worker, signal.SIGKILL)
        wait_for(lambda: not any(map(process_alive, workers)), STOP_TIMEOUT, "workers to exit")
        # the kernel may hold a port a moment after its process is gone (a restart found the gRPC
        # port taken): a restart waits for them; a port still taken after that, start names
        with contextlib.suppress(ForgeError):
            wait_for(self.ports_free, PORT_RELEASE_TIMEOUT, "the server's ports to be released")
        self.pid_file.unlink(missing_ok=True)
        self.key_file.unlink(missing_ok=True)
        return True

    def prepare_runtime(self, archives: Mapping[str, str]) -> None:
        for directory in (self.logs_dir, self.runtime / "workflows", self.store):
            directory.mkdir(parents=True, exist_ok=True)
        self.tmp_dir.mkdir(mode=0o700, exist_ok=True)
        # keys of an earlier run would look valid until the new ones are written
        self.key_file.unlink(missing_ok=True)
        serve = self.serve
        write_text(self.runtime / "metrics.yaml", yaml.safe_dump(metrics_config(), sort_keys=False))
        log4j = log4j_config(self.logs_dir, serve.log_max_bytes, serve.log_backups)
        write_text(self.runtime / "log4j2.xml", log4j)
        write_text(self.properties_file, render_properties(self.properties(archives)))

    def properties(self, archives: Mapping[str, str]) -> dict[str, Any]:
        serve, host = self.serve, self.serve.host
        scheme = "https" if serve.tls else "http"
        properties = {
            "inference_address": f"{scheme}://{host}:{serve.inference_port}",
            "management_address": f"{scheme}://{host}:{serve.management_port}",
            "metrics_address": f"{scheme}://{host}:{serve.metrics_port}",
            "grpc_inference_address": host,
            "grpc_management_address": host,
            "grpc_inference_port": serve.grpc_inference_port,
            "grpc_management_port": serve.grpc_management_port,
            "model_store": self.store,
            "workflow_store": self.runtime / "workflows",
            "allowed_urls": allowed_urls(self.store),
            "enable_model_api": serve.model_api,
            "disable_token_authorization": not serve.token_auth,
            # TorchServe's keys expire after an hour by default; they live as long as the server
            "token_expiration_min": TOKEN_LIFETIME_MINUTES,
            "enable_envvars_config": False,
            "install_py_dep_per_model": False,
            "metrics_mode": "prometheus",
            "metrics_config": self.runtime / "metrics.yaml",
            "max_request_size": serve.max_request_size,
            "default_workers_per_model": serve.workers,
            "default_response_timeout": serve.response_timeout,
            "vmargs": jvm_options(),
        }
        if archives:
            properties["load_models"] = ",".join(f"{model}={file}" for model, file in archives.items())
        if serve.tls:
            certificate, key = tls.certificate_pair(serve, self.runtime)
            properties |= {"certificate_file": certificate, "private_key_file": key, "enable_grpc_ssl": True}
        return properties

    def ports_free(self) -> bool:
        return all(port_free(self.serve.host, self.serve[key]) for key in PORT_KEYS)

    def check_ports_free(self) -> None:
        check_ports_free(self.serve, PORT_KEYS)

    # --- readiness ------------------------------------------------------------------------

    def wait_until_answering(self) -> None:
        deadline = time.monotonic() + self.serve.startup_timeout
        while not self.answers():
            if self.pid() is None:
                raise ForgeError(
                    f"TorchServe exited while starting:\n{self.log_tail('ts_log.log')}\n"
                    f"{self.log_tail(self.console_file.name)}"
                )
            if time.monotonic() > deadline:
                raise ForgeError(f"TorchServe did not answer within {self.serve.startup_timeout}s")
            time.sleep(POLL_SECONDS)

    def answers(self) -> bool:
        try:
            self.api.call("GET", "/models")
        except ForgeError:
            return False
        return True

    def wait_ready(self, model: str, version: str) -> None:
        """Every worker READY (describe-model); `/ping` says Healthy while workers crash-loop."""
        deadline = time.monotonic() + self.serve.startup_timeout
        while True:
            workers = self.api.describe(model, version)["workers"]
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
        return "\n".join(self.read_log(name)[-QUOTED_LOG_LINES:])
