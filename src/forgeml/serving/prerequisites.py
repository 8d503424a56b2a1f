"""What serving needs on this machine, checked in a second (`forgeml doctor`), before a pipeline
trains for a minute and then fails at `package` or `serve start`.

Each check says what it found and, where it fails, the command that fixes it. The checks reuse
what packaging and the server call, so they fail exactly where those would.
"""

from __future__ import annotations

import importlib.metadata
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from forgeml.errors import ForgeError
from forgeml.serving.archive import archiver_command
from forgeml.serving.processes import find_java, port_free, torchserve_executable

# TorchServe 0.12's frontend is built for Java 11 and newer
MIN_JAVA = 11
SERVE_EXTRA = "pip install 'forgeml[serve]'"
PORTS = ("inference_port", "management_port", "metrics_port")


@dataclass(frozen=True)
class Check:
    name: str
    passed: bool
    found: str
    fix: str | None = None


def serving_checks(serve: Any, running_pid: int | None) -> list[Check]:
    """Every prerequisite of `forgeml package`, `serve start` and `deploy` with the `serve` config;
    a server of this project already running (`running_pid`) holds its own ports."""
    return [
        package_check("torch", "torch", "pip install torch==<version> (see the install docs)"),
        raised_check("torch-model-archiver", archiver_command, lambda: version_of("torch-model-archiver")),
        raised_check("torchserve", torchserve_executable, lambda: version_of("torchserve")),
        package_check("PyYAML (TorchServe's workers)", "PyYAML", SERVE_EXTRA),
        java_check(),
        ports_check(serve, running_pid),
    ]


def version_of(distribution: str) -> str:
    return importlib.metadata.version(distribution)


def package_check(name: str, distribution: str, fix: str) -> Check:
    try:
        return Check(name, True, version_of(distribution))
    except importlib.metadata.PackageNotFoundError:
        return Check(name, False, "not installed", fix)


def raised_check(name: str, find: Any, describe: Any) -> Check:
    """`find` raises ForgeError (naming the fix) where packaging or serving would."""
    try:
        find()
    except ForgeError as error:
        return Check(name, False, "not installed", str(error).split(": ", 1)[-1])
    return Check(name, True, describe())


def java_check() -> Check:
    try:
        java_home = find_java()
    except ForgeError as error:
        return Check("Java (TorchServe's frontend)", False, "not found", str(error).split("; ", 1)[-1])
    java = str(Path(java_home) / "bin" / "java") if java_home else "java"
    major = java_major(java)
    if major is None or major < MIN_JAVA:
        fix = f"TorchServe needs Java {MIN_JAVA} or newer, e.g. `apt-get install openjdk-17-jre-headless`"
        return Check("Java (TorchServe's frontend)", False, f"{java}: version {major or 'unknown'}", fix)
    return Check("Java (TorchServe's frontend)", True, f"{java}: {major}")


def java_major(java: str) -> int | None:
    """The major version `java -version` reports (on stderr), None when it does not run."""
    try:
        printed = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=30).stderr
    except (OSError, subprocess.TimeoutExpired):
        return None
    return parse_java_major(printed)


def parse_java_major(printed: str) -> int | None:
    """17 for 'openjdk version "17.0.15" 2025-04-15', 8 for Java 8's 'version "1.8.0_402"'."""
    match = re.search(r'version "(\d+)(?:\.(\d+))?', printed)
    if not match:
        return None
    major = int(match.group(1))
    return int(match.group(2) or 0) if major == 1 else major  # "1.8.0" is Java 8


def ports_check(serve: Any, running_pid: int | None) -> Check:
    ports = {key: serve[key] for key in PORTS}
    if running_pid is not None:
        return Check("ports", True, f"held by this project's server (pid {running_pid})")
    taken = [f"{port} (serve.{key})" for key, port in ports.items() if not port_free(serve.host, port)]
    if taken:
        fix = "stop what uses them, or choose others: " + " ".join(f"serve.{key}=<port>" for key in PORTS)
        return Check("ports", False, f"taken on {serve.host}: {', '.join(taken)}", fix)
    return Check("ports", True, f"free on {serve.host}: {', '.join(map(str, ports.values()))}")
