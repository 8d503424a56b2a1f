"""Operating a real TorchServe through forgeml: one deployment history across restarts, the
gate's refusal of an unevaluated model, the model store's URL rule, bounded logs, and TLS.

One server (model API on, logs rotated at LOG_MAX_BYTES) serves the module; tests run in file
order: deploys and rollbacks -> restart -> history -> gate -> allowed_urls -> log growth. A
second server runs TLS.
"""

from __future__ import annotations

import copy
import json
import os
import re
import ssl
import stat
import subprocess
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd
import pytest
from omegaconf import DictConfig

from forgeml.errors import ForgeError, Refused
from forgeml.serving.local_server import LocalServer
from forgeml.serving.management import http_request
from forgeml.serving.runtime_files import LOGGERS, allowed_urls, render_properties
from forgeml.stages import deploy, history, models, package, rollback, serve
from tests.helpers.config import package_config_env
from tests.helpers.serving import MODEL, ask, packaged_and_served, records, serving_config

pytestmark = pytest.mark.slow

LOG_MAX_BYTES = 64 * 1024
LOG_BACKUPS = 3
REQUESTS = 5000
# reads a properties file as TorchServe does (java.util.Properties), prints one key's value,
# then whether each further argument matches it as TorchServe matches allowed_urls
PROPERTIES_READER = """
import java.io.FileInputStream;
import java.util.Properties;
import java.util.regex.Pattern;

public class ReadProperty {
    public static void main(String[] args) throws Exception {
        Properties properties = new Properties();
        try (FileInputStream in = new FileInputStream(args[0])) { properties.load(in); }
        String value = properties.getProperty(args[1]);
        StringBuilder out = new StringBuilder();
        for (char c : value.toCharArray()) out.append(String.format("\\\\u%04x", (int) c));
        System.out.println(out);
        for (int i = 2; i < args.length; i++) {
            System.out.println(Pattern.compile(value, Pattern.CASE_INSENSITIVE).matcher(args[i]).matches());
        }
    }
}
"""


@pytest.fixture(scope="module")
def operated(trained_project, tmp_path_factory) -> DictConfig:
    """breast_cancer packaged, served and deployed as v1, logs rotated at LOG_MAX_BYTES."""
    cfg = serving_config(
        trained_project,
        tmp_path_factory.mktemp("operated"),
        model_api=True,
        version="v1",
        log_max_bytes=LOG_MAX_BYTES,
        log_backups=LOG_BACKUPS,
    )
    with packaged_and_served(cfg):
        yield cfg


def version_of(cfg: DictConfig, version: str, **reports) -> DictConfig:
    other = copy.deepcopy(cfg)
    other.serve.version = version
    other.paths.merge_with(reports)
    return other


def serving_now(cfg: DictConfig) -> tuple[str | None, str]:
    """(what `forgeml models` says serves, what the running server's default is)."""
    listed = [e["version"] for e in models.run(cfg)["models"][MODEL] if e["serving"]]
    return (listed[0] if listed else None), serve.status(cfg)["models"][MODEL]["default_version"]


def test_restart_after_rollbacks_serves_the_rolled_back_version(operated):
    for version in ("v2", "v3"):
        package.run(version_of(operated, version))
        deploy.run(version_of(operated, version))
        assert serving_now(operated) == (version, version)
    assert rollback.run(operated)["default_version"] == "v2"
    assert serving_now(operated) == ("v2", "v2")
    assert rollback.run(operated)["default_version"] == "v1"
    assert serving_now(operated) == ("v1", "v1")
    serve.stop(operated)
    # the working archive is v3, the last one packaged: a restart must not serve it
    status = serve.start(operated)
    assert status["models"][MODEL]["versions"] == {"v1": ["READY"]}
    assert serving_now(operated) == ("v1", "v1")
    assert not (Path(operated.serve.runtime_dir) / "deployments.json").exists()
    with pytest.raises(ForgeError, match="nothing to roll back to"):
        rollback.run(operated)


def test_history_lists_every_deploy_and_rollback_with_gate_user_and_host(operated, tmp_path):
    events = history.run(operated)["events"]
    assert [(e["action"], e["version"]) for e in events] == [
        ("deploy", "v1"),
        ("deploy", "v2"),
        ("deploy", "v3"),
        ("rollback", "v2"),
        ("rollback", "v1"),
    ]
    first_deploy, v2_deploy = events[0], events[1]
    assert first_deploy["forced"] is False and first_deploy["gate"] == "gate passed"
    assert first_deploy["replaced"] is None
    assert v2_deploy["replaced"] == "v1" and v2_deploy["replaced_metrics"] == v2_deploy["metrics"]
    assert "test/accuracy" in v2_deploy["metrics"]
    assert events[3]["replaced"] == "v3"
    assert all(e["user"] and e["host"] == os.uname().nodename for e in events)
    command = ["forgeml", "history", f"serve.model_store={operated.serve.model_store}"]
    env = package_config_env(COLUMNS="200")
    table = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, check=True)
    assert "rollback" in table.stdout and "gate passed" in table.stdout and "{" not in table.stdout
    scripted = subprocess.run([*command, "--json"], cwd=tmp_path, env=env, capture_output=True, check=True)
    assert json.loads(scripted.stdout)["history"]["events"] == json.loads(json.dumps(events))


def test_unevaluated_candidate_is_refused_and_force_deploys_it_on_record(operated, tmp_path):
    unevaluated = version_of(operated, "unevaluated", reports_dir=str(tmp_path / "no-reports"))
    assert package.run(unevaluated)["metrics"] == {}
    with pytest.raises(ForgeError, match=r"never evaluated; run `forgeml evaluate`"):
        deploy.run(unevaluated)
    assert serving_now(operated) == ("v1", "v1")
    unevaluated.gate.force = True
    assert deploy.run(unevaluated)["default_version"] == "unevaluated"
    last = history.run(operated)["events"][-1]
    assert (last["version"], last["forced"]) == ("unevaluated", True)
    assert "never evaluated" in last["gate"]
    rollback.run(operated)
    assert serving_now(operated) == ("v1", "v1")


def test_percent_encoded_dot_dot_registration_is_refused_and_copies_nothing(operated, tmp_path):
    # the backend's model API, which forgeml's deploys use (the gateway refuses the public one)
    server = LocalServer(operated.serve).backend()
    store = Path(operated.serve.model_store).resolve()
    outside = tmp_path / "outside"
    outside.mkdir()
    # a valid archive outside the store, under a name the store does not hold
    (outside / "intruder.mar").write_bytes((store / f"{MODEL}.mar").read_bytes())
    relative = os.path.relpath(outside, store).replace("..", "%2e%2e")
    before = sorted(p.name for p in store.iterdir())
    for url in (f"file://{store}/{relative}/intruder.mar", f"file://{store}/.versions/{MODEL}/v2.mar"):
        query = urllib.parse.urlencode({"url": url, "initial_workers": 1})
        status, answer = http_request(
            "POST", f"{server.url('management')}/models?{query}", server.token("management")
        )
        assert status >= 400, answer
        assert "does not match any allowed URL" in answer["message"]
    assert sorted(p.name for p in store.iterdir()) == before
    assert server.api.model_names() == [MODEL]


def test_allowed_urls_reads_back_in_java_as_the_intended_regex(operated, tmp_path):
    program = tmp_path / "ReadProperty.java"
    program.write_text(PROPERTIES_READER)
    store = Path(operated.serve.model_store).resolve()

    def java_reads(path: Path, *urls: str) -> tuple[str, list[bool]]:
        command = ["java", str(program), str(path), "allowed_urls", *urls]
        lines = subprocess.run(command, capture_output=True, text=True, check=True).stdout.split()
        return lines[0].encode("ascii").decode("unicode_escape"), [line == "true" for line in lines[1:]]

    running = LocalServer(operated.serve).backend().properties_file
    value, matches = java_reads(
        running,
        f"file://{store}/{MODEL}.mar",
        f"file://{store}/%2e%2e/etc/{MODEL}.mar",
        f"file://{store}/sub/{MODEL}.mar",
        f"file://{store}x{MODEL}.mar",
    )
    assert value == allowed_urls(store)
    assert matches == [True, False, False, False]
    odd = Path("/srv/models, v2/ünïcode \\ store")
    written = tmp_path / "odd.properties"
    written.write_text(render_properties({"allowed_urls": allowed_urls(odd)}), encoding="latin-1")
    value, matches = java_reads(written, f"file://{odd}/m.mar", f"file://{odd}/../m.mar")
    assert value == allowed_urls(odd)
    assert "," not in value  # TorchServe splits allowed_urls at commas
    assert matches == [True, False]


def test_no_runtime_file_grows_per_request_without_rotation(operated, trained_project):
    runtime = Path(operated.serve.runtime_dir)
    logs = LocalServer(operated.serve).backend().logs_dir

    def sizes() -> dict[Path, int]:
        return {p: p.stat().st_size for p in runtime.rglob("*") if p.is_file()}

    test = pd.read_parquet(Path(trained_project.paths.processed_dir) / "test.parquet")
    body = {"instances": records(test.drop(columns=["target"]).head(1))}
    before = sizes()
    with ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(lambda _: ask(operated, body)[0], range(REQUESTS)))
    assert statuses == [200] * REQUESTS
    after = sizes()
    grown = {path for path, size in after.items() if size > before.get(path, 0)}
    rotated = {name for name, _ in LOGGERS.values()}
    pattern = re.compile(rf"({'|'.join(rotated)})(\.\d+)?\.log")
    unrotated = sorted(str(p.relative_to(runtime)) for p in grown if not pattern.fullmatch(p.name))
    assert unrotated == [], "files growing per request without a rotation policy"
    assert (logs / "access_log.1.log").is_file(), "5,000 requests should have rotated the access log"
    for path in logs.glob("*.log"):
        assert path.stat().st_size <= LOG_MAX_BYTES + 4096, path
    for name in rotated:
        assert len(list(logs.glob(f"{name}.*.log"))) <= LOG_BACKUPS
    # the frontend's per-request INFO lines are left out, its other lines kept
    ts_log = "".join(path.read_text() for path in logs.glob("ts_log*.log"))
    assert "Backend response time" not in ts_log and "Sending response for jobId" not in ts_log
    assert "Inference API bind to: " in ts_log


@pytest.fixture(scope="module")
def tls_served(trained_project, tmp_path_factory) -> DictConfig:
    """breast_cancer deployed on a TorchServe with serve.tls=true and a self-signed pair."""
    cfg = serving_config(trained_project, tmp_path_factory.mktemp("tls"), model_api=True, tls=True)
    with packaged_and_served(cfg):
        yield cfg


def plain_http_refused(url: str, method: str, data: bytes | None) -> bool:
    """TorchServe answers a plain-HTTP request on a TLS port itself, before any API sees it:
    403, or a reset connection when it closes the socket before the answer is read."""
    try:
        status, answer = http_request(method, url, None, data)
    except ForgeError:
        return True
    return (status, answer) == (403, {"status": "This TorchServe instance only accepts HTTPS requests"})


def test_tls_serves_every_endpoint_over_verified_https_only(tls_served, trained_project):
    status = serve.status(tls_served)
    certificate = Path(status["certificate"])
    key = Path(tls_served.serve.runtime_dir) / "tls" / "key.pem"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    verified = ssl.create_default_context(cafile=str(certificate))
    server = LocalServer(tls_served.serve)
    test = pd.read_parquet(Path(trained_project.paths.processed_dir) / "test.parquet")
    body = json.dumps({"instances": records(test.drop(columns=["target"]).head(2))}).encode()
    calls = {
        "inference": ("POST", f"/predictions/{MODEL}", body),
        "management": ("GET", "/models", None),
        "metrics": ("GET", "/metrics", None),
    }
    for api, (method, path, data) in calls.items():
        url = server.url(api)
        assert url.startswith("https://127.0.0.1:")
        answer = http_request(method, url + path, server.token(api), data, context=verified)
        assert answer[0] == 200, (api, answer)
        assert plain_http_refused(url.replace("https://", "http://") + path, method, data)
        with pytest.raises(ForgeError, match="CERTIFICATE_VERIFY_FAILED"):
            http_request(method, url + path, server.token(api), data, context=ssl.create_default_context())
    assert status["models"][MODEL]["versions"] == {status["models"][MODEL]["default_version"]: ["READY"]}


def test_a_tls_server_stays_tls_and_refuses_a_contradicting_setting(tls_served):
    """Commands act on the running server: a restart keeps its TLS, address and keys; a setting
    on the command line that contradicts it is refused, naming it, and changes nothing."""
    server = LocalServer(tls_served.serve)
    before = (server.url("inference"), server.token("inference"), server.certificate())
    plain = copy.deepcopy(tls_served)
    plain.serve.tls = False
    for command in (deploy.run, rollback.run, serve.restart, serve.stop):
        with pytest.raises(Refused, match=r"serve\.tls=false contradicts the running server \(tls=true"):
            command(plain, given=frozenset({"serve.tls"}))
    # the same config without naming serve.tls acts on the running server as it is
    restarted = serve.restart(plain)
    assert restarted["inference_url"].startswith("https://")
    assert (server.url("inference"), server.token("inference"), server.certificate()) == before
    status, _ = http_request(
        "GET",
        f"{server.url('management')}/models",
        server.token("management"),
        context=server.client_context(),
    )
    assert status == 200
