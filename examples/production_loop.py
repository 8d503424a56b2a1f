"""The production loop, end to end, with the real tools a user runs.

    train v1 -> deploy -> in-distribution traffic -> `forgeml monitor`: no drift
    -> shifted traffic -> drift on exactly the shifted features
    -> the labels arrive -> measured and estimated accuracy next to drift, per time window
    -> `forgeml watch --once`: the drift alert, a signed webhook to a local receiver
    -> retrain on the new data (`dvc repro` with new raw data): refused by v1's data contract,
       then accepted as a deliberate change -> gate -> `forgeml replay` v2 on the logged traffic
    -> `forgeml rollout` v2 under live traffic: shadow, 50%, 100% -> rollback

Run it with `python examples/production_loop.py [--workdir DIR]` (`make demo` does). It creates
a fresh project with `forgeml init --data patients.csv` (a git + DVC repository of its own, the
CSV in data/raw/), and drives `dvc repro`, `forgeml serve|deploy|monitor|watch|replay|rollout|
rollback`, HTTP requests and a webhook receiver exactly as a person would, printing each step.
tests/integration/test_production_loop.py runs the same `main` and checks every outcome.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import math
import os
import secrets
import shutil
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

MODEL = "patients"
RAW = "data/raw/patients.csv"
# the features the "new world" changes: scaled and moved by a standard deviation
SHIFTED = [
    "mean radius", "mean texture", "mean perimeter", "mean area", "mean smoothness",
    "mean compactness", "mean concavity", "mean concave points", "mean symmetry",
    "mean fractal dimension", "radius error", "texture error", "perimeter error", "area error",
    "smoothness error", "compactness error",
]  # fmt: skip
DEFAULT_PORTS = {
    "inference": 8080,
    "management": 8081,
    "metrics": 8082,
    "grpc_inference": 7070,
    "grpc_management": 7071,
}
# the alert step's window (seconds stand for a service's hours): the loop waits for one to begin,
# fills it with shifted traffic and waits for its end, so at most two of them
WATCH_WINDOW_SECONDS = 20
# v2's rollout, in steps short enough for a demo: a shadow copy, then half, then all of the traffic,
# each held for 40 answers of v2's; it takes all traffic only with a passed replay and shadow step.
# (With 40 answers a step's p99 is its slowest request: latencies are compared only from 100 on.)
ROLLOUT = [
    "serve.rollout.steps=[shadow,50,100]", "serve.rollout.min_requests=40",
    "serve.rollout.min_minutes=0", "gate.require=[offline,replay,shadow]",
]  # fmt: skip
# the clients sending steady in-distribution traffic while v2 rolls out
CLIENTS = 3


def overrides(ports: dict[str, int]) -> list[str]:
    """The loop's settings on top of the project's: every request logged, the gate's bar. Nothing
    else is needed for deploys, rollouts and rollbacks without a gap: the default (secure) server
    swaps versions behind its gateway."""
    return [
        "trainer.max_epochs=15", "trainer.enable_progress_bar=false", "logger=none",
        "monitor.sample_rate=1.0", "monitor.p_value=0.01",
        "monitor.wandb=false", "gate.thresholds={test/accuracy:0.85}", "gate.max_regression=0.05",
        *(f"serve.{api}_port={port}" for api, port in ports.items()),
    ]  # fmt: skip


class Workspace:
    """A copy of the project where the loop runs its commands."""

    def __init__(self, root: Path, ports: dict[str, int], echo=print) -> None:
        self.root, self.ports, self.echo = root, ports, echo
        bin_dir = os.path.dirname(sys.executable)
        self.env = {
            **os.environ,
            "PATH": f"{bin_dir}:{os.environ['PATH']}",
            "GIT_AUTHOR_NAME": "forgeml", "GIT_AUTHOR_EMAIL": "forgeml@example.invalid",
            "GIT_COMMITTER_NAME": "forgeml", "GIT_COMMITTER_EMAIL": "forgeml@example.invalid",
        }  # fmt: skip
        self.env.pop("FORGEML_CONFIG_DIR", None)
        # `forgeml serve start`'s report: the endpoint's URL, key file and TLS certificate
        self.server: dict[str, Any] = {}

    def run(
        self,
        *command: str,
        ok: tuple[int, ...] = (0,),
        shown: str | None = None,
        env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess:
        """`command` in the project; `env`: variables for this command only."""
        self.echo(f"$ {shown or ' '.join(command)}")
        result = subprocess.run(
            command, cwd=self.root, env={**self.env, **(env or {})}, capture_output=True, text=True,
            timeout=900,
        )  # fmt: skip
        if result.returncode not in ok:
            output = f"{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
            raise RuntimeError(f"{' '.join(command)} exited {result.returncode}:\n{output}")
        return result

    def forgeml(
        self, *args: str, ok: tuple[int, ...] = (0,), env: dict[str, str] | None = None
    ) -> tuple[int, dict[str, Any]]:
        """A forgeml command with the loop's overrides (the command's own come last, and win);
        its JSON report."""
        words = [arg for arg in args if "=" not in arg]
        extra = [arg for arg in args if "=" in arg]
        shown = " ".join(["forgeml", *words, "<the loop's overrides>", *extra])
        command = ("forgeml", *words, "--json", *overrides(self.ports), *extra)
        result = self.run(*command, ok=ok, shown=shown, env=env)
        text = result.stdout
        return result.returncode, json.loads(text[text.index("{") :]) if "{" in text else {}

    def post(self, payload: Any) -> tuple[int, Any]:
        """One request to the endpoint, with the inference token, verifying the server's
        certificate when it serves HTTPS (`serve.tls=true`): (HTTP status, JSON answer)."""
        key = json.loads(Path(self.server["key_file"]).read_text())["inference"]["key"]
        url = f"{self.server['inference_url']}/predictions/{MODEL}"
        certificate = self.server["certificate"]
        context = ssl.create_default_context(cafile=certificate) if certificate else None
        headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
        request = urllib.request.Request(url, json.dumps(payload).encode(), headers)
        try:
            with urllib.request.urlopen(request, timeout=30, context=context) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read())

    def predict(self, rows: pd.DataFrame, per_request: int = 10) -> list[dict[str, Any]]:
        """POST the rows to the endpoint, `per_request` instances a request."""
        records = json.loads(rows.to_json(orient="records"))
        answers = []
        for start in range(0, len(records), per_request):
            status, answer = self.post({"instances": records[start : start + per_request]})
            if status != 200:
                raise RuntimeError(f"the endpoint answered {status}: {answer}")
            answers += answer["predictions"]
        return answers


class WebhookReceiver:
    """A real HTTP endpoint on a free loopback port, as a team's alerting service would run: it
    accepts a POST whose `X-Forgeml-Signature` is the HMAC-SHA256 of its body under the shared
    secret (401 otherwise) and keeps every notice, with whether its signature held."""

    def __init__(self, secret: str) -> None:
        self.secret, self.deliveries = secret, []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                signed = receiver.signed(body, self.headers.get("X-Forgeml-Signature", ""))
                receiver.deliveries.append({"signed": signed, "notice": json.loads(body)})
                self.send_response(200 if signed else 401)
                self.end_headers()

            def log_message(self, *args: Any) -> None:  # the loop prints what it received itself
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"

    def signed(self, body: bytes, header: str) -> bool:
        expected = "sha256=" + hmac.new(self.secret.encode(), body, hashlib.sha256).hexdigest()
        return hmac.compare_digest(header, expected)

    def __enter__(self) -> WebhookReceiver:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.shutdown()
        self.server.server_close()


def send_inside_one_window(space: Workspace, rows: pd.DataFrame, seconds: int) -> None:
    """POST `rows` inside one whole window of `seconds` aligned to the Unix epoch, as
    `forgeml watch` cuts them, and return once that window has ended."""
    start = (time.time() // seconds + 1) * seconds
    shown = datetime.fromtimestamp(start, timezone.utc).strftime("%H:%M:%S")
    space.echo(f"   {len(rows)} shifted rows inside the window from {shown} UTC, then its end")
    time.sleep(start - time.time() + 0.2)
    space.predict(rows)
    if time.time() >= start + seconds:
        raise RuntimeError(f"the traffic outlasted its {seconds} s window: raise WATCH_WINDOW_SECONDS")
    time.sleep(start + seconds - time.time() + 0.2)


class SteadyTraffic:
    """`clients` threads posting in-distribution rows, one a request, until the block ends; what
    failed is counted. Each request carries its own id, the rollout's routing key: the gateway
    sends a given id to the same version every time."""

    def __init__(self, space: Workspace, rows: pd.DataFrame, clients: int) -> None:
        self.space, self.records = space, json.loads(rows.to_json(orient="records"))
        self.sent, self.failed = [0] * clients, [0] * clients
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self.client, args=(n,)) for n in range(clients)]

    def client(self, number: int) -> None:
        while not self.stop.is_set():
            record = self.records[self.sent[number] % len(self.records)]
            try:
                status, _ = self.space.post({**record, "id": f"client-{number}-{self.sent[number]}"})
            except (OSError, ValueError):
                status = None
            self.sent[number] += 1
            self.failed[number] += status != 200
            self.stop.wait(0.02)

    def __enter__(self) -> SteadyTraffic:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join()


def split_world(seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """breast_cancer in three parts: what v1 is trained on, today's traffic, tomorrow's traffic
    (the same rows with SHIFTED features moved), each with its true labels."""
    from sklearn.datasets import load_breast_cancer

    frame = load_breast_cancer(as_frame=True).frame.sample(frac=1.0, random_state=seed)
    cut = int(len(frame) * 0.6)
    v1, recent = frame.iloc[:cut].reset_index(drop=True), frame.iloc[cut:].reset_index(drop=True)
    shifted = recent.copy()
    std = v1[SHIFTED].std()
    shifted[SHIFTED] = shifted[SHIFTED] * 1.5 + std
    return v1, recent, shifted


def deliver_an_alert(space: Workspace, rows: pd.DataFrame) -> dict[str, Any]:
    """Step 5c: `rows` inside one whole window, then `forgeml watch --once` judges that window and
    runs the drift rule's webhook, signed with a secret that only the watcher and a local
    receiver hold. The watch's result, with what the receiver got."""
    secret = secrets.token_hex(16)
    with WebhookReceiver(secret) as receiver:
        space.echo(f"   a webhook receiver at {receiver.url}, checking signatures with the shared secret")
        send_inside_one_window(space, rows, WATCH_WINDOW_SECONDS)
        # `on` bare: Hydra's override grammar reads a key as text (in a YAML file, quote it)
        code, report = space.forgeml(
            "watch", "--once", f"monitor.window_duration={WATCH_WINDOW_SECONDS}s",
            "monitor.alerts=[{on: drift, actions: [webhook]}]", f"monitor.webhook.url={receiver.url}",
            env={"FORGEML_WEBHOOK_SECRET": secret},
        )  # fmt: skip
    for judged in report["watch"]["judged"]:
        space.echo(f"   the window ending {judged['window_end']}: {judged['verdict']}")
    for delivery in receiver.deliveries:
        notice = delivery["notice"]
        space.echo(
            f"   received, {'valid' if delivery['signed'] else 'INVALID'} signature: {notice['verdict']} "
            f"of {notice['model']} {notice['version']}: {notice['reason']}"
        )
    return {"exit_code": code, **report["watch"], "deliveries": receiver.deliveries}


def replay(space: Workspace, version: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """`forgeml replay`: `version`'s answers to the logged requests against v1's and, where step
    5's labels arrived, against the truth. Its result, and the measured metrics of both."""
    _, replayed = space.forgeml("replay", version, "monitor.labels=labels.csv")
    result = replayed["replay"]
    report = space.root / result["report"] / "replay.json"
    measured = json.loads(report.read_text())["overall"]["measured"]
    before, after = measured["production"]["accuracy"], measured["candidate"]["accuracy"]
    space.echo(
        f"   {result['message']}: v2 agrees with v1 on {result['agreement']:.3f} of {result['requests']} "
        f"requests; on the {measured['labelled_rows']} labelled ones, accuracy {before:.3f} (v1) -> "
        f"{after:.3f} (v2); report: {report.with_suffix('.html')}"
    )
    return result, measured


def roll_out(space: Workspace, version: str, rows: pd.DataFrame) -> dict[str, Any]:
    """`forgeml rollout` while CLIENTS keep sending `rows`: its result, with what they sent and
    how many of their requests failed (none may: a step moves traffic, never drops it)."""
    with SteadyTraffic(space, rows, CLIENTS) as traffic:
        _, rolled = space.forgeml("rollout", version, *ROLLOUT)
    result = {**rolled["rollout"], "requests": sum(traffic.sent), "failed": sum(traffic.failed)}
    space.echo(
        f"   serving version {result['default_version']}; {CLIENTS} clients sent {result['requests']} "
        f"requests meanwhile, {result['failed']} failed"
    )
    return result


def main(workdir: Path, ports: dict[str, int] = DEFAULT_PORTS, echo=print) -> dict[str, Any]:
    space = Workspace(workdir, ports, echo)
    v1_rows, recent, shifted = split_world()
    features = recent.drop(columns=["target"])
    summary: dict[str, Any] = {}

    echo("\n== 0. a project with our data: forgeml init --data patients.csv (-> data/raw/)")
    with tempfile.TemporaryDirectory() as scratch:
        csv = Path(scratch) / Path(RAW).name
        v1_rows.to_csv(csv, index=False)
        space.run("forgeml", "init", str(workdir), "--data", str(csv), "--target", "target", "--name", MODEL)
    space.forgeml("compose")
    space.run("git", "add", "-A")
    space.run("git", "commit", "-qm", "patients v1")

    echo("\n== 1. train v1: dvc repro (prepare -> train -> evaluate -> package)")
    space.run("dvc", "repro")
    summary["v1_metrics"] = json.loads((workdir / "reports/metrics.json").read_text())
    echo(f"   v1 test metrics: {summary['v1_metrics']}")
    try:
        echo("\n== 2. serve and deploy v1")
        _, started = space.forgeml("serve", "start")
        space.server = started["serve start"]
        _, deployed = space.forgeml("deploy")
        summary["v1"] = deployed["deploy"]["default_version"]
        echo(f"   serving {MODEL} version {summary['v1']}")

        echo(f"\n== 3. in-distribution traffic: {len(features)} rows")
        traffic_start = time.time()
        answers = space.predict(features)
        served = answers
        accuracy = np.mean([a["label"] == t for a, t in zip(answers, recent["target"], strict=True)])
        echo(f"   {len(answers)} answers, accuracy {accuracy:.3f}; the first two:")
        for answer in answers[:2]:
            echo(f"   {json.dumps(answer)}")
        bad = {**features.iloc[0].to_dict(), "mean radius": "large"}
        status, answer = summary["bad_request"] = space.post(bad)
        echo(f"   a bad request ('mean radius': 'large') -> HTTP {status}: {answer}")

        echo("\n== 4. forgeml monitor: the log against the training reference")
        code, report = space.forgeml("monitor", ok=(0, 3, 4))
        summary["in_distribution"] = {"exit_code": code, **report["monitor"]}
        echo(f"   exit {code}: {report['monitor']['message']}")

        echo(f"\n== 5. shifted traffic: {len(SHIFTED)} features scaled and moved")
        shifted_start = time.time()
        served = served + space.predict(shifted.drop(columns=["target"]))
        traffic_end = time.time()
        code, report = space.forgeml("monitor", f"monitor.window_rows={len(shifted)}", ok=(0, 3, 4))
        summary["shifted"] = {"exit_code": code, **report["monitor"]}
        echo(f"   exit {code}: {report['monitor']['message']}")
        echo(f"   drifted: {report['monitor']['drifted_features']}")
        echo(f"   report: {workdir / 'reports/drift.html'}")

        echo("\n== 5b. the labels arrive (joined by the answers' ids): accuracy per time window")
        truth = [*recent["target"], *shifted["target"]]
        labels = pd.DataFrame({"id": [answer["id"] for answer in served], "label": truth})
        labels.to_csv(workdir / "labels.csv", index=False)
        # windows as long as the shifted traffic took, the last one ending just after it: it fills
        # the last window, today's traffic earlier ones (seconds stand for a service's days)
        span = math.ceil(traffic_end - shifted_start) + 3
        count = math.ceil((traffic_end - traffic_start) / span) + 1
        end = datetime.fromtimestamp(math.ceil(traffic_end) + 1, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        code, report = space.forgeml(
            "monitor", "monitor.labels=labels.csv", f"monitor.window_duration={span}s",
            f"monitor.windows={count}", f"monitor.window_end={end}", ok=(0, 3, 4),
        )  # fmt: skip
        summary["over_time"] = json.loads((workdir / "reports/monitoring.json").read_text())["windows"]
        for result in summary["over_time"]:
            estimated, measured = result["estimated"] or {}, (result["measured"] or {}).get("metrics") or {}
            echo(
                f"   {result['window']['end']}: {result['rows']['current']} rows, share drifted "
                f"{result['share_drifted']}, accuracy estimated {estimated.get('accuracy')}, "
                f"measured {measured.get('accuracy')}"
            )
        echo(f"   exit {code}: {report['monitor']['message']}")
        # kept aside: step 6's `dvc repro` runs the monitor stage again, without the labels
        shutil.copy2(workdir / "reports/monitoring.html", workdir / "monitoring-with-labels.html")
        echo(f"   report: {workdir / 'monitoring-with-labels.html'}")

        echo(
            f"\n== 5c. an alert: shifted traffic in one {WATCH_WINDOW_SECONDS} s window, forgeml watch --once"
        )
        summary["alert"] = deliver_an_alert(space, shifted.drop(columns=["target"]))

        echo("\n== 6. retrain on the new data: append the labelled new rows, dvc repro")
        pd.concat([v1_rows, shifted], ignore_index=True).to_csv(workdir / RAW, index=False)
        # DVC exits 255 when a stage fails: here `prepare`, holding the data to v1's contract
        refused = space.run("dvc", "repro", ok=(255,))
        output = refused.stdout + refused.stderr
        summary["contract"] = output[output.index("the new data breaks") :].splitlines()
        echo("   " + "\n   ".join(summary["contract"][:4]) + "\n   ...")
        echo(
            "   the world moved, the export is not broken: accept it, the new model carries the new contract"
        )
        space.forgeml("compose", "data.contract.accept=true")
        space.run("dvc", "repro")
        summary["v2_metrics"] = json.loads((workdir / "reports/metrics.json").read_text())
        echo(f"   v2 test metrics: {summary['v2_metrics']}")

        echo("\n== 7. the gate, a replay of the logged traffic, then v2 rolls out under live traffic")
        strict = "gate.thresholds={test/accuracy:0.999}"
        refusal = space.run(
            "forgeml", "deploy", *overrides(ports), strict, ok=(1,), shown=f"forgeml deploy {strict}"
        )
        summary["strict_gate"] = refusal.stderr.strip()
        echo(f"   {summary['strict_gate']}")
        _, listing = space.forgeml("models")
        summary["v2"] = next(e["version"] for e in listing["models"]["models"][MODEL] if not e["serving"])
        summary["replay"], summary["replay_measured"] = replay(space, summary["v2"])
        summary["rollout"] = roll_out(space, summary["v2"], features)
        history = space.run("forgeml", "history").stdout.splitlines()
        summary["history"] = [line for line in history if f" {summary['v2']}: " in line]
        echo("   " + "\n   ".join(summary["history"]))
        answers = space.predict(shifted.drop(columns=["target"]))
        summary["v2_shifted_accuracy"] = float(
            np.mean([a["label"] == t for a, t in zip(answers, shifted["target"], strict=True)])
        )

        echo("\n== 8. rollback")
        _, rolled = space.forgeml("rollback")
        summary["after_rollback"] = rolled["rollback"]["default_version"]
        echo(f"   serving version {summary['after_rollback']} again")
        _, listing = space.forgeml("models")
        summary["registry"] = listing["models"]["models"][MODEL]
    finally:
        space.forgeml("serve", "stop", ok=(0, 2))
    echo(f"\n== drift verdict on the shifted traffic: {summary['shifted']['verdict']} "
         f"(exit {summary['shifted']['exit_code']}); report: {workdir / 'reports/drift.html'}")  # fmt: skip
    return summary


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, help="a new or empty directory (default: a temporary one)")
    args = parser.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="forgeml-loop-"))
    workdir.mkdir(parents=True, exist_ok=True)
    main(workdir)
