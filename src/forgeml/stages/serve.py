"""serve: a local server for the archives in `serve.model_store` (local_server.py): forgeml's
gateway on the public ports, TorchServe behind it.

    forgeml serve start [serve.inference_port=...] [serve.tls=true]
    forgeml serve status          # URLs, models, versions, worker states, key file (--json: as JSON)
    forgeml serve restart         # a new TorchServe behind the gateway, without a gap
    forgeml serve stop            # stops the gateway, TorchServe and every worker it started
    forgeml serve example         # a request body for the model's own features, and its curl line
    forgeml serve rotate          # new client keys (the old ones stop working at once)
    forgeml serve configure monitor.sample_rate=auto   # the inference log's rate and rotation, live

`start` serves, for every model of the registry, the version it says was deployed last (none
if never deployed: `forgeml deploy` then registers one); it writes config.properties from the
`serve` config into `serve.runtime_dir` and returns once every worker of every model is READY;
it fails with a clear message when Java is missing, a port is taken or a worker keeps dying.
With `serve.tls=true` every endpoint answers HTTPS only. Clients send `Authorization: Bearer <key>` with the
keys in the key file (`inference` for predictions, `management` for the management API); the
keys stay the same across stops, starts, restarts and deploys until `forgeml serve rotate`.
Commands other than start act on the server that runs, with its settings: a `serve.*` setting
on their command line that contradicts it is refused.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from omegaconf import DictConfig

from forgeml.config import check_ranges
from forgeml.layout import archive_file
from forgeml.serving import credentials
from forgeml.serving.deployments import serving_archives
from forgeml.serving.examples import archived_preprocessor, curl_line, example_record
from forgeml.serving.local_server import LocalServer, running_server
from forgeml.serving.registry import Registry

ACTIONS = ("start", "stop", "status", "restart", "example", "rotate", "configure")


def start(cfg: DictConfig) -> dict[str, Any]:
    check_ranges("serve", cfg.serve)
    # the workers write the sampled requests to monitor.log_dir (the archive sets the rate)
    archives = serving_archives(Registry(cfg.serve.model_store))
    server = LocalServer(cfg.serve, inference_log_dir=cfg.monitor.log_dir)
    server.start(archives)
    if archives:
        return server.status()
    return {**server.status(), "note": "no version was ever deployed, so none serves: run `forgeml deploy`"}


def restart(cfg: DictConfig, given: Iterable[str] = ()) -> dict[str, Any]:
    """A new TorchServe with this command's worker and batching settings, swapped in behind the
    gateway once READY: clients keep their address, keys and TLS, and get every answer."""
    check_ranges("serve", cfg.serve)
    running_server(cfg.serve, given)
    server = LocalServer(cfg.serve, inference_log_dir=cfg.monitor.log_dir)
    server.restart(serving_archives(Registry(cfg.serve.model_store)))
    return server.status()


def stop(cfg: DictConfig, given: Iterable[str] = ()) -> dict[str, Any]:
    server = LocalServer(cfg.serve)
    server.check_agrees(given)
    return {"stopped": server.stop(), **server.status()}


def status(cfg: DictConfig, given: Iterable[str] = ()) -> dict[str, Any]:
    server = LocalServer(cfg.serve)
    server.check_agrees(given)
    return server.status()


def rotate(cfg: DictConfig) -> dict[str, Any]:
    """New keys for every client; a running gateway takes them within a moment."""
    server = LocalServer(cfg.serve)
    server.runtime.mkdir(parents=True, exist_ok=True)
    credentials.ensure(server.runtime, rotate=True)
    return {"rotated": True, "key_file": str(server.key_file)}


def example(cfg: DictConfig) -> dict[str, Any]:
    """A request built from the packaged model's features, and the curl line that sends it to the
    running server (its URL, token and certificate; the configured URL when none runs)."""
    body = {
        "instances": [
            example_record(archived_preprocessor(archive_file(cfg.serve.model_store, cfg.serve.model_name)))
        ]
    }
    server = LocalServer(cfg.serve)
    status = server.status()
    url = f"{status.get('inference_url') or server.url('inference')}/predictions/{cfg.serve.model_name}"
    return {
        "body": body,
        "curl": curl_line(url, body, status.get("key_file"), status.get("certificate")),
        "running": status["running"],
    }


def configure(cfg: DictConfig) -> dict[str, Any]:
    """The running server's inference-log settings (sample rate, rotation) become `cfg.monitor`'s,
    without repackaging (serving/log_settings.py)."""
    from forgeml.serving.log_settings import write_log_settings  # pandas: only this action parses durations

    return write_log_settings(cfg.monitor)
