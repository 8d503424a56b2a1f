"""Steady concurrent load on a running server: every answer's status counted, for the deploys,
rollbacks and restarts that must not fail a request."""

from __future__ import annotations

import http.client
import json
import ssl
import threading
import urllib.parse
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


class Load:
    """`clients` threads, each on its own keep-alive connection, POSTing `body` until stopped."""

    def __init__(
        self, url: str, token: str | None, body: Any, clients: int = 16, context: ssl.SSLContext | None = None
    ):
        self.url = urllib.parse.urlsplit(url)
        self.headers = {
            "Content-Type": "application/json",
            **({"Authorization": f"Bearer {token}"} if token else {}),
        }
        self.body = json.dumps(body).encode()
        self.context = context
        self.statuses: Counter[int | str] = Counter()
        self.routes: Counter[str] = Counter()
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.threads = [threading.Thread(target=self.client, daemon=True) for _ in range(clients)]

    def connection(self) -> http.client.HTTPConnection:
        if self.url.scheme == "https":
            return http.client.HTTPSConnection(
                self.url.hostname, self.url.port, timeout=60, context=self.context
            )
        return http.client.HTTPConnection(self.url.hostname, self.url.port, timeout=60)

    def client(self) -> None:
        connection = self.connection()
        while not self.stopping.is_set():
            try:
                connection.request("POST", self.url.path, self.body, self.headers)
                answer = connection.getresponse()
                answer.read()
                status, route = answer.status, answer.getheader("X-Forgeml-Route", "-")
            except (OSError, http.client.HTTPException) as error:
                status, route = type(error).__name__, "-"
                connection.close()
                connection = self.connection()
            with self.lock:
                self.statuses[status] += 1
                self.routes[route] += 1

    @property
    def answered(self) -> int:
        return sum(self.statuses.values())

    @property
    def failed(self) -> int:
        return self.answered - self.statuses[200]


@contextmanager
def steady_load(url: str, token: str | None, body: Any, clients: int = 16, **options: Any) -> Iterator[Load]:
    load = Load(url, token, body, clients, **options)
    for thread in load.threads:
        thread.start()
    try:
        yield load
    finally:
        load.stopping.set()
        for thread in load.threads:
            thread.join(timeout=60)
