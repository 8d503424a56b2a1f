"""Process helpers for a local TorchServe: free ports, the frontend's pid and workers, Java."""

from __future__ import annotations

import os
import shutil
import socket
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from forgeml.errors import ForgeError

POLL_SECONDS = 0.1
FRONTEND_CLASS = "org.pytorch.serve.ModelServer"


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
    """True while `pid` is a TorchServe frontend."""
    return running_as(pid, FRONTEND_CLASS)


def running_as(pid: int, marker: str) -> bool:
    """True while `pid` runs with `marker` in its command line: a PID file can outlive its
    process, and pids get reused."""
    import psutil

    try:
        process = psutil.Process(pid)
        return process.status() != psutil.STATUS_ZOMBIE and marker in process.cmdline()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False


def check_ports_free(serve: Any, keys: Iterable[str]) -> None:
    """Refuse to start on a taken port, naming its `serve.*` key and a way out."""
    for key in keys:
        port = serve[key]
        if not port_free(serve.host, port):
            raise ForgeError(
                f"port {port} on {serve.host} is taken (serve.{key}); stop what uses it "
                f"or choose another port, e.g. serve.{key}={port + 100}"
            )


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
        time.sleep(POLL_SECONDS)


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
