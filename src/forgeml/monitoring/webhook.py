"""The `webhook` alert action: a signed JSON POST, retried, and an outbox for what failed.

The body is the alert's JSON (alerts.alert_payload), serialised once; its signature travels in

    X-Forgeml-Signature: sha256=<hex HMAC-SHA256 of the exact body bytes>

keyed by the secret in the environment variable `monitor.webhook.secret_env` (never in the
config, so it stays out of params.yaml and git). A receiver recomputes the HMAC over the raw body
and compares with hmac.compare_digest. Without the variable the POST goes unsigned, with one
warning. `X-Forgeml-Delivery` repeats the payload's id, the same on every retry.

A delivery is tried `1 + monitor.webhook.retries` times, `timeout_s` each, waiting 1 s, 2 s, 4 s...
between tries; a 4xx answer other than 408/429 is the receiver's final no and is not retried.
What still failed is logged and kept in the outbox (a JSON file beside the monitor's reports,
written atomically), sent again at the next check, oldest first, until one fails (a receiver
still down costs one notice's retries, not every one's); it never changes a verdict or an exit
code. Only the standard library: urllib.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from forgeml.io import read_json, write_json

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Forgeml-Signature"
DELIVERY_HEADER = "X-Forgeml-Delivery"
OUTBOX_FORMAT = "forgeml.webhook_outbox/1"
# the first wait between tries, doubled after each
BACKOFF_S = 1.0
# the outbox keeps the newest notices only: a receiver gone for weeks must not grow it unbounded
OUTBOX_LIMIT = 100
# answers a retry may change (timeouts, rate limits, server errors); other 4xx are final
RETRYABLE_CLIENT_ERRORS = {408, 429}


def body_of(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()


def signature(body: bytes, secret: str) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def shown(url: str) -> str:
    """The URL as logs show it: scheme and host only (chat webhooks carry a token in the path)."""
    parts = urllib.parse.urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}/..."


@dataclass
class Webhook:
    """A configured endpoint (`monitor.webhook`); `sleep` is the wait between tries."""

    url: str
    secret_env: str
    timeout_s: float
    retries: int
    sleep: Callable[[float], None] = time.sleep
    warned_unsigned: bool = field(default=False, init=False)

    @classmethod
    def from_config(cls, webhook: Any) -> Webhook:
        return cls(webhook.url, webhook.secret_env, webhook.timeout_s, webhook.retries)

    def headers(self, body: bytes, payload: dict[str, Any]) -> dict[str, str]:
        headers = {"Content-Type": "application/json", DELIVERY_HEADER: str(payload.get("id", ""))}
        secret = os.environ.get(self.secret_env)
        if secret:
            headers[SIGNATURE_HEADER] = signature(body, secret)
        elif not self.warned_unsigned:
            log.warning(
                "webhook deliveries to %s are unsigned: $%s is not set", shown(self.url), self.secret_env
            )
            self.warned_unsigned = True
        return headers

    def send(self, payload: dict[str, Any]) -> str | None:
        """POST `payload`, retrying with backoff; None when delivered, else why it failed."""
        body = body_of(payload)
        headers = self.headers(body, payload)
        problem = None
        for attempt in range(1 + self.retries):
            if attempt:
                self.sleep(BACKOFF_S * 2 ** (attempt - 1))
            problem, retryable = self.post(body, headers)
            if problem is None:
                return None
            log.warning(
                "webhook %s, try %d of %d: %s", shown(self.url), attempt + 1, 1 + self.retries, problem
            )
            if not retryable:
                break
        return problem

    def post(self, body: bytes, headers: dict[str, str]) -> tuple[str | None, bool]:
        """One try: (None, _) on a 2xx answer, else (what went wrong, whether to try again)."""
        request = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                response.read()
        except urllib.error.HTTPError as error:
            retryable = error.code >= 500 or error.code in RETRYABLE_CLIENT_ERRORS
            return f"HTTP {error.code} {error.reason}", retryable
        except (urllib.error.URLError, TimeoutError, ConnectionError) as error:
            return f"{getattr(error, 'reason', error)}", True
        return None, False


class Outbox:
    """Notices whose delivery failed, kept for the next run (atomic writes, newest kept)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def pending(self) -> list[dict[str, Any]]:
        return read_json(self.path)["pending"] if self.path.is_file() else []

    def save(self, pending: list[dict[str, Any]]) -> None:
        if len(pending) > OUTBOX_LIMIT:
            log.warning(
                "webhook outbox %s: dropping the %d oldest notices", self.path, len(pending) - OUTBOX_LIMIT
            )
        if pending or self.path.is_file():
            write_json(self.path, {"format": OUTBOX_FORMAT, "pending": pending[-OUTBOX_LIMIT:]})

    def add(self, payload: dict[str, Any], problem: str) -> None:
        log.error("webhook notice %s not delivered (%s): kept in %s", payload.get("id"), problem, self.path)
        self.save([*self.pending(), payload])

    def flush(self, webhook: Webhook) -> list[str]:
        """Send the pending notices again, oldest first, until one fails (the receiver is still
        down: the rest wait too, rather than each costing its retries); the ids delivered now."""
        pending = self.pending()
        delivered = 0
        while delivered < len(pending) and webhook.send(pending[delivered]) is None:
            delivered += 1
        if delivered:
            self.save(pending[delivered:])
        return [payload["id"] for payload in pending[:delivered]]

    def deliver(self, webhook: Webhook, payload: dict[str, Any]) -> str:
        """Send `payload`; on failure keep it for the next run. The outcome, in words."""
        problem = webhook.send(payload)
        if problem is None:
            return "delivered"
        self.add(payload, problem)
        return f"not delivered ({problem}): queued for the next run"
