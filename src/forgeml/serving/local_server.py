"""forgeml's local server: the gateway on the public ports, a model server behind it.

    runtime_dir/
      gateway.json        what the gateway serves: listening settings, backend, rollouts (0600)
      gateway.pid, logs/gateway.out
      credentials.json    the clients' keys, hashed; key_file.json: the keys themselves (0600)
      inference-log.key   the key that hashes logged columns (the same for every backend)
      tls/                the self-signed pair of `serve.tls=true`
      backends/a, backends/b   one TorchServe each (server.py), on private loopback ports

Why a gateway: TorchServe writes new keys at every start and, with its model API off, takes a
new version only by restarting; a restart was 17-20 s without answers and locked every client
out. Behind the gateway, clients keep one address and one set of keys (credentials.py) for the
life of the runtime directory; the backend keeps its model API on, reachable only on loopback
with its own keys that only forgeml reads, and registering only the store's own archives by
plain name (runtime_files.allowed_urls), so a deploy or a rollback swaps versions in place;
`restart` starts a second backend, moves the gateway to it once it is READY and stops the
first. Public requests to register or unregister are refused unless `serve.model_api=true`.

Commands act on the server that runs: its settings are those of gateway.json, and a setting a
command is given that contradicts them is refused (`check_agrees`), never applied by a restart.
"""

from __future__ import annotations

import json
import os
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from forgeml.errors import ForgeError, Refused
from forgeml.io import read_json, write_private
from forgeml.serving import credentials, tls
from forgeml.serving.gateway import PID_FILE, STATE
from forgeml.serving.management import ManagementClient, http_request
from forgeml.serving.processes import check_ports_free, free_ports, process_alive, running_as, wait_for
from forgeml.serving.server import PORT_KEYS, STOP_TIMEOUT, TorchServe

PUBLIC_APIS = ("inference", "management", "metrics")
SLOTS = ("a", "b")
GATEWAY_START_TIMEOUT = 30.0
GATEWAY_MODULE = "forgeml.serving.gateway"
# what a command may not change on a running server: the address and security clients rely on
RUNNING_SETTINGS = (
    "host",
    "inference_port",
    "management_port",
    "metrics_port",
    "tls",
    "token_auth",
    "model_api",
)


class LocalServer:
    """The server of one runtime directory (`serve.runtime_dir`)."""

    def __init__(self, serve: Any, inference_log_dir: str | Path | None = None):
        self.serve = serve
        self.runtime = Path(serve.runtime_dir).resolve()
        self.inference_log_dir = inference_log_dir

    # --- files ----------------------------------------------------------------------------

    @property
    def state_file(self) -> Path:
        return self.runtime / STATE

    @property
    def key_file(self) -> Path:
        return self.runtime / credentials.KEY_FILE

    @property
    def console_file(self) -> Path:
        return self.runtime / "logs" / "gateway.out"

    def state(self) -> dict[str, Any]:
        """gateway.json of the running server ({} when none runs)."""
        if self.pid() is None or not self.state_file.is_file():
            return {}
        return read_json(self.state_file)

    def write_state(self, state: dict[str, Any]) -> None:
        state = {**state, "serial": int(state.get("serial", 0)) + 1}
        write_private(self.state_file, json.dumps(state, indent=2).encode())

    # --- what clients see ------------------------------------------------------------------

    def pid(self) -> int | None:
        """The gateway's process id while it runs, else None."""
        path = self.runtime / PID_FILE
        if not path.is_file():
            return None
        pid = int(path.read_text().strip() or 0)
        return pid if pid and gateway_running(pid) else None

    def url(self, api: str) -> str:
        """Where the public `api` answers: as the running server listens, else as configured."""
        state = self.state()
        if state:
            scheme = "https" if state.get("tls") else "http"
            return f"{scheme}://{state['host']}:{state['ports'][api]}"
        scheme = "https" if self.serve.tls else "http"
        return f"{scheme}://{self.serve.host}:{self.serve[f'{api}_port']}"

    def token(self, api: str) -> str | None:
        """The clients' key for `api` (None without one)."""
        return credentials.client_key(self.runtime, api)

    def certificate(self) -> Path | None:
        tls_files = self.state().get("tls")
        return Path(tls_files["certificate"]) if tls_files else None

    def client_context(self) -> ssl.SSLContext | None:
        certificate = self.certificate()
        return tls.client_context(certificate) if certificate else None

    def model_api(self) -> bool:
        return bool(self.state().get("model_api", self.serve.model_api))

    def check_agrees(self, given: Iterable[str]) -> None:
        """Refuse a `serve.*` setting the command was given that the running server contradicts."""
        state = self.state()
        if not state:
            return
        running = running_settings(state)
        for key in RUNNING_SETTINGS:
            if f"serve.{key}" in given and self.serve[key] != running[key]:
                raise Refused(
                    f"serve.{key}={json.dumps(self.serve[key])} contradicts the running server "
                    f"({key}={json.dumps(running[key])}, {self.runtime}); a running server keeps its "
                    "settings: stop and start it to change them"
                )

    # --- the backend ----------------------------------------------------------------------

    def backend(self, slot: str | None = None) -> TorchServe:
        """The model server of `slot` (default: the one the gateway sends to)."""
        slot = slot or self.state().get("slot", SLOTS[0])
        ports = self.state().get("backend_ports") if slot == self.state().get("slot") else None
        return self.backend_server(slot, ports or dict.fromkeys(PORT_KEYS, 0))

    def backend_server(self, slot: str, ports: Mapping[str, int]) -> TorchServe:
        """A TorchServe on private loopback ports, its model API on and reachable with its own
        keys only, plain HTTP (the gateway holds TLS)."""
        config = OmegaConf.create(OmegaConf.to_container(self.serve, resolve=True))
        config.merge_with(
            {
                **ports,
                "host": "127.0.0.1",
                "runtime_dir": str(self.runtime / "backends" / slot),
                "tls": False,
                "token_auth": True,
                "model_api": True,
            }
        )
        return TorchServe(config, self.inference_log_dir, log_key_dir=self.runtime)

    @property
    def api(self) -> ManagementClient:
        """forgeml's own client of the backend's management API."""
        return self.backend().api

    def wait_ready(self, model: str, version: str) -> None:
        self.backend().wait_ready(model, version)

    # --- lifecycle ------------------------------------------------------------------------

    def start(self, archives: Mapping[str, str]) -> None:
        """Start a backend serving `archives`, then the gateway in front of it; return once the
        gateway answers and every worker is READY."""
        if self.pid():
            raise ForgeError(
                f"forgeml's server is already running from {self.runtime} (pid {self.pid()}); "
                "stop it with `forgeml serve stop`"
            )
        self.check_ports_free()
        self.runtime.mkdir(parents=True, exist_ok=True)
        credentials.ensure(self.runtime)
        backend = self.start_backend(SLOTS[0], archives)
        try:
            self.write_state(self.listening_state() | self.backend_state(SLOTS[0], backend))
            self.start_gateway()
        except ForgeError:
            backend.stop()
            raise

    def listening_state(self) -> dict[str, Any]:
        serve = self.serve
        state = {
            "host": serve.host,
            "ports": {api: serve[f"{api}_port"] for api in PUBLIC_APIS},
            "tls": None,
            "token_auth": serve.token_auth,
            "model_api": serve.model_api,
            "max_request_size": serve.max_request_size,
            "response_timeout": serve.response_timeout,
            "rollouts": {},
        }
        if serve.tls:
            certificate, key = tls.certificate_pair(serve, self.runtime)
            state["tls"] = {"certificate": str(certificate), "private_key": str(key)}
        return state

    def start_backend(self, slot: str, archives: Mapping[str, str]) -> TorchServe:
        ports = dict(zip(PORT_KEYS, free_ports(len(PORT_KEYS)), strict=True))
        backend = self.backend_server(slot, ports)
        backend.stop()  # one left behind by a crash would hold the slot's PID file
        backend.start(archives)
        return backend

    def backend_state(self, slot: str, backend: TorchServe) -> dict[str, Any]:
        """What the gateway needs to reach `backend`: its URLs and keys."""
        return {
            "slot": slot,
            "backend_ports": {key: backend.serve[key] for key in PORT_KEYS},
            "backend": {
                "inference": backend.url("inference"),
                "management": backend.url("management"),
                "metrics": backend.url("metrics"),
                "inference_key": backend.token("inference"),
                "management_key": backend.token("management"),
            },
        }

    def start_gateway(self) -> None:
        self.console_file.parent.mkdir(parents=True, exist_ok=True)
        (self.runtime / PID_FILE).unlink(missing_ok=True)
        command = [sys.executable, "-m", GATEWAY_MODULE, str(self.runtime)]
        # to a file, never a pipe nobody reads
        with open(self.console_file, "wb") as out:
            process = subprocess.Popen(
                command,
                cwd=self.runtime,
                stdout=out,
                stderr=out,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        deadline = time.monotonic() + GATEWAY_START_TIMEOUT
        while not self.gateway_answers():
            if process.poll() is not None:
                raise ForgeError(f"forgeml's gateway exited while starting:\n{self.console_tail()}")
            if time.monotonic() > deadline:
                process.kill()
                raise ForgeError(f"forgeml's gateway did not answer within {GATEWAY_START_TIMEOUT:.0f}s")
            time.sleep(0.1)

    def gateway_answers(self) -> bool:
        if self.pid() is None:
            return False
        try:
            status, _ = http_request(
                "GET", f"{self.url('inference')}/ping", None, context=self.client_context()
            )
        except ForgeError:
            return False
        return status == 200

    def console_tail(self) -> str:
        if not self.console_file.is_file():
            return ""
        return "\n".join(self.console_file.read_text(errors="replace").splitlines()[-15:])

    def restart(self, archives: Mapping[str, str]) -> None:
        """Replace the backend without a gap: a new one in the other slot serving `archives`
        (this command's `serve` settings for workers and batching), the gateway moved to it once
        it is READY, the old one stopped once its last request is answered. The gateway, its
        address, keys and TLS stay."""
        state = self.state()
        if not state:
            raise ForgeError("no forgeml server running; start one with `forgeml serve start`")
        old_slot = state["slot"]
        new_slot = SLOTS[1 - SLOTS.index(old_slot)]
        old = self.backend(old_slot)
        backend = self.start_backend(new_slot, archives)
        self.write_state(state | self.backend_state(new_slot, backend))
        self.wait_drained(state["backend"]["inference"])
        old.stop()

    def wait_drained(self, old_inference_url: str) -> None:
        """Until the gateway follows the new state and no request is left on the old backend."""
        serial = self.state()["serial"]

        def drained() -> bool:
            own = self.gateway_state()
            return own.get("serial") == serial and not own.get("in_flight", {}).get(old_inference_url)

        wait_for(drained, STOP_TIMEOUT, "the gateway to move to the new backend")

    def gateway_state(self) -> dict[str, Any]:
        """The gateway's own report: the serial it applied, requests in flight, rollout numbers."""
        status, report = http_request(
            "GET",
            f"{self.url('management')}/forgeml/state",
            self.token("management") if self.state().get("token_auth", True) else None,
            context=self.client_context(),
        )
        if status != 200:
            raise ForgeError(f"forgeml's gateway refused its state ({status}): {report}")
        return report

    def stop(self) -> bool:
        """Stop the gateway and every backend; False if nothing was running. The keys stay."""
        pid = self.pid()
        stopped = False
        if pid is not None:
            os.kill(pid, signal.SIGTERM)
            wait_for(lambda: not process_alive(pid), STOP_TIMEOUT, "forgeml's gateway to stop")
            stopped = True
        for slot in SLOTS:
            stopped = self.backend_server(slot, dict.fromkeys(PORT_KEYS, 0)).stop() or stopped
        (self.runtime / PID_FILE).unlink(missing_ok=True)
        return stopped

    def check_ports_free(self) -> None:
        check_ports_free(self.serve, [f"{api}_port" for api in PUBLIC_APIS])

    # --- status ---------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """URLs, models with their versions and worker states, where the keys and the
        certificate are, and the backend behind the gateway."""
        pid = self.pid()
        report: dict[str, Any] = {"running": pid is not None, "runtime_dir": str(self.runtime)}
        if pid is None:
            return report
        certificate = self.certificate()
        backend = self.backend()
        api = backend.api
        report |= {
            "pid": pid,
            "inference_url": self.url("inference"),
            "management_url": self.url("management"),
            "metrics_url": self.url("metrics") + "/metrics",
            "key_file": str(self.key_file) if self.key_file.is_file() else None,
            "certificate": str(certificate) if certificate else None,
            "model_api": self.model_api(),
            "backend": {"engine": "torchserve", "pid": backend.pid(), "runtime_dir": str(backend.runtime)},
            "models": {name: api.model_status(name) for name in api.model_names()},
        }
        rollouts = self.state().get("rollouts")
        if rollouts:
            report["rollouts"] = rollouts
        return report


def running_settings(state: Mapping[str, Any]) -> dict[str, Any]:
    """The `serve.*` values a running server has, from its gateway.json."""
    return {
        "host": state["host"],
        **{f"{api}_port": port for api, port in state["ports"].items()},
        "tls": bool(state.get("tls")),
        "token_auth": state.get("token_auth", True),
        "model_api": state.get("model_api", False),
    }


def gateway_running(pid: int) -> bool:
    """True while `pid` is a forgeml gateway."""
    return running_as(pid, GATEWAY_MODULE)


def running_server(serve: Any, given: Iterable[str] = ()) -> LocalServer:
    """The server running from `serve.runtime_dir`, once it is checked that none of the `given`
    settings (those the command line named) contradicts it."""
    server = LocalServer(serve)
    if server.pid() is None:
        raise ForgeError(
            f"no forgeml server running from {server.runtime}; start one with `forgeml serve start`"
        )
    server.check_agrees(given)
    return server
