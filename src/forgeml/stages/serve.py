"""serve: a local TorchServe for the archives in `serve.model_store`.

    forgeml serve start [serve.model_api=true] [serve.inference_port=...]
    forgeml serve status          # URLs, models, versions, worker states, key file (--json: as JSON)
    forgeml serve stop            # stops TorchServe and every worker it started
    forgeml serve example         # a request body for the model's own features, and its curl line
    forgeml serve configure monitor.sample_rate=auto   # the inference log's rate and rotation, live

`start` serves, for every model of the registry, the version it says was deployed last (none
if never deployed: `forgeml deploy` then registers one); it writes config.properties from the
`serve` config into `serve.runtime_dir` and returns once every worker of every model is READY;
it fails with a clear message when Java is missing, a port is taken or a worker keeps dying.
With `serve.tls=true` every endpoint answers HTTPS only. Clients send `Authorization: Bearer <key>` with the
keys in the key file (`inference` for predictions, `management` for the management API).
"""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig

from forgeml.config import check_ranges
from forgeml.layout import archive_file
from forgeml.serving.deployments import serving_archives
from forgeml.serving.examples import archived_preprocessor, curl_line, example_record
from forgeml.serving.registry import Registry
from forgeml.serving.server import TorchServe

ACTIONS = ("start", "stop", "status", "example", "configure")


def start(cfg: DictConfig) -> dict[str, Any]:
    check_ranges("serve", cfg.serve)
    # the workers write the sampled requests to monitor.log_dir (the archive sets the rate)
    archives = serving_archives(Registry(cfg.serve.model_store))
    server = TorchServe(cfg.serve, inference_log_dir=cfg.monitor.log_dir)
    server.start(archives)
    if archives:
        return server.status()
    return {**server.status(), "note": "no version was ever deployed, so none serves: run `forgeml deploy`"}


def stop(cfg: DictConfig) -> dict[str, Any]:
    server = TorchServe(cfg.serve)
    return {"stopped": server.stop(), **server.status()}


def status(cfg: DictConfig) -> dict[str, Any]:
    return TorchServe(cfg.serve).status()


def example(cfg: DictConfig) -> dict[str, Any]:
    """A request built from the packaged model's features, and the curl line that sends it to the
    running server (its URL, token and certificate; the configured URL when none runs)."""
    body = {
        "instances": [
            example_record(archived_preprocessor(archive_file(cfg.serve.model_store, cfg.serve.model_name)))
        ]
    }
    server = TorchServe(cfg.serve)
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
