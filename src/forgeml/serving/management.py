"""The management API of a running TorchServe: list, describe, register, make default, unregister.

Every call is authenticated with the management key and, on a TLS server, verified against its
certificate; a refusal raises ForgeError quoting TorchServe's message.
"""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any

from forgeml.errors import ForgeError


@dataclass(frozen=True)
class Endpoint:
    """Where a server's management API answers and how to reach it: its URL, its key (None
    without token auth), the TLS context that verifies it (None: plain HTTP), and whether it
    registers new versions (the model API)."""

    url: str
    token: str | None
    context: ssl.SSLContext | None = None
    model_api: bool = True


class ManagementClient:
    """The management calls forgeml makes, against `endpoint`."""

    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint

    def call(self, method: str, path: str) -> Any:
        """One authenticated request; a refusal raises ForgeError."""
        endpoint = self.endpoint
        status, answer = http_request(method, endpoint.url + path, endpoint.token, context=endpoint.context)
        if status >= 300:
            message = answer.get("message", answer) if isinstance(answer, dict) else answer
            raise ForgeError(f"TorchServe refused {method} {path} ({status}): {message}")
        return answer

    def model_names(self) -> list[str]:
        return [model["modelName"] for model in self.call("GET", "/models")["models"]]

    def describe(self, model: str, version: str) -> dict[str, Any]:
        return self.call("GET", f"/models/{model}/{version}")[0]

    def versions(self, model: str) -> list[dict[str, Any]]:
        return self.call("GET", f"/models/{model}/all")

    def holds(self, model: str, version: str) -> bool:
        """Whether `version` of `model` is registered on the server."""
        return model in self.model_names() and any(
            entry["modelVersion"] == version for entry in self.versions(model)
        )

    def default_version(self, model: str) -> str:
        return self.call("GET", f"/models/{model}")[0]["modelVersion"]

    def register(self, archive: str, workers: int) -> None:
        """Register `archive`, a plain file name in the model store (the only kind the server's
        allowed_urls and TorchServe's own checks accept); needs the model API."""
        if not self.endpoint.model_api:
            raise ForgeError(
                "this server was started with the model API off, so it cannot register a new "
                "version; restart it with `forgeml serve stop` and "
                "`forgeml serve start serve.model_api=true`, then deploy"
            )
        url = urllib.parse.quote(archive, safe="")
        self.call("POST", f"/models?url={url}&initial_workers={workers}&synchronous=false")

    def unregister(self, model: str, version: str) -> None:
        self.call("DELETE", f"/models/{model}/{version}")

    def set_default(self, model: str, version: str) -> None:
        self.call("PUT", f"/models/{model}/{version}/set-default")

    def model_status(self, model: str) -> dict[str, Any]:
        """The default version and the worker states of every registered version."""
        return {
            "default_version": self.default_version(model),
            "versions": {
                entry["modelVersion"]: [w["status"] for w in entry["workers"]]
                for entry in self.versions(model)
            },
        }


def http_request(
    method: str,
    url: str,
    token: str | None,
    body: bytes | None = None,
    timeout: float = 30.0,
    context: ssl.SSLContext | None = None,
) -> tuple[int, Any]:
    """(status, decoded JSON body) of one HTTP(S) request; error statuses are returned, not
    raised. `context` verifies an https:// server (None: the system's trust store)."""
    request = urllib.request.Request(url, data=body, method=method)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    if body is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=context) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as error:
        status, raw = error.code, error.read()
    except (urllib.error.URLError, OSError) as error:
        raise ForgeError(f"no answer from {url}: {error}") from None
    try:
        return status, json.loads(raw or b"null")
    except json.JSONDecodeError:
        return status, raw.decode("utf-8", errors="replace")
