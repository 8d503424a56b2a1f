"""How a command line becomes a stage's config: the keys it set (which a running server's
commands hold against its settings), the version given first, the rollout's flags."""

from __future__ import annotations

from forgeml import cli


def test_given_keys_are_the_keys_the_command_line_set():
    given = cli.given_keys(["serve.tls=false", "+extra=1", "~monitor.labels", "--params", "params.yaml"])
    assert given == frozenset({"serve.tls", "extra", "monitor.labels"})


def test_rollout_takes_its_version_first_and_its_flags_as_overrides(monkeypatch):
    seen = {}

    def run(stage, args, as_json):
        seen.update(stage=stage, args=args)
        return 0

    monkeypatch.setattr(cli, "run_hydra_app", run)
    assert cli.main(["rollout", "v2", "--shadow", "--no-wait", "serve.rollout.min_requests=5"]) == 0
    assert seen["stage"] == "rollout"
    assert seen["args"] == [
        "candidate='v2'",
        "serve.rollout.shadow_only=true",
        "serve.rollout.wait=false",
        "serve.rollout.min_requests=5",
    ]
    assert cli.main(["rollout", "--abort"]) == 0
    assert seen["args"] == ["serve.rollout.action=abort"]
