"""Ports for the servers tests start. Each pytest-xdist worker takes ports from its own block below
the kernel's ephemeral range (32768-60999 on Linux): two workers never pick the same port, and the
kernel never hands one to an outgoing connection between the pick and the server's bind."""

from __future__ import annotations

import itertools
import os
import random

from forgeml.serving.processes import port_free
from forgeml.serving.server import PORT_KEYS

BLOCK_START, BLOCK_SIZE, BLOCKS = 20_000, 200, 63  # 20000..32599: below the ephemeral range
# a random start inside the block keeps two test runs of the same worker name apart too
_offsets = itertools.count(random.randrange(BLOCK_SIZE))


def worker_block() -> int:
    """The first port of this worker's block ("gw3" -> the fourth block; no xdist -> the first)."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    return BLOCK_START + (int(worker.removeprefix("gw")) % BLOCKS) * BLOCK_SIZE


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """`count` ports of this worker's block, free now and not handed out before in this process."""
    ports = []
    for _ in range(BLOCK_SIZE):
        port = worker_block() + next(_offsets) % BLOCK_SIZE
        if port_free(host, port):
            ports.append(port)
        if len(ports) == count:
            return ports
    raise RuntimeError(f"fewer than {count} free ports in {worker_block()}..{worker_block() + BLOCK_SIZE}")


def serve_ports() -> dict[str, int]:
    """A free port for each of the server's `serve.*_port` keys."""
    return dict(zip(PORT_KEYS, free_ports(len(PORT_KEYS)), strict=True))


def free_serve_ports() -> str:
    """A `serve:` block for a project's conf/config.yaml putting every port on a free one."""
    return "serve:\n" + "".join(f"  {key}: {port}\n" for key, port in serve_ports().items())
