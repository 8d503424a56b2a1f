"""A rollout step's verdict on the numbers the gateway kept, and the steps a config may name."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from forgeml.config import RolloutConfig, check_rollout
from forgeml.errors import ForgeError
from forgeml.serving.rollout import judge_step, routing

SETTINGS = OmegaConf.structured(RolloutConfig(min_requests=50))


def numbers(role: str = "candidate", **candidate) -> dict:
    production = {"requests": 200, "rejected": 0, "failed": 0, "p99_ms": 10.0}
    return {
        "production": production,
        role: {"requests": 60, "rejected": 0, "failed": 0, "p99_ms": 12.0, **candidate},
    }


def test_a_candidate_like_production_passes_once_the_step_is_done():
    assert judge_step(25, numbers(), SETTINGS, final=False) is None, "nothing wrong: wait for the step's end"
    verdict = judge_step(25, numbers(), SETTINGS, final=True)
    assert verdict.passed and verdict.step == "25%" and verdict.summary() == "passed"


@pytest.mark.parametrize(
    ("candidate", "reason"),
    [
        ({"failed": 3}, "error rate 0.050"),
        ({"rejected": 6}, "rejects 0.100 of requests against production's 0.000"),
        ({"p99_ms": 25.0, "requests": 120}, "p99 latency 25.0 ms > 2.0 x production's 10.0 ms"),
    ],
)
def test_a_failing_canary_is_judged_early_naming_the_number_and_its_key(candidate, reason):
    verdict = judge_step(5, numbers(**candidate), SETTINGS, final=False)
    assert verdict is not None and not verdict.passed
    assert reason in verdict.summary() and "serve.rollout." in verdict.summary()


def test_a_shadow_that_disagrees_is_refused_and_one_too_young_to_tell_waits():
    verdict = judge_step("shadow", numbers("shadow", agreement=0.5, compared=60), SETTINGS, final=False)
    assert not verdict.passed and "agrees with production on 0.500" in verdict.summary()
    young = numbers("shadow", requests=5, agreement=0.0)
    assert judge_step("shadow", young, SETTINGS, final=False) is None


def test_a_step_the_candidate_never_answered_fails():
    verdict = judge_step(5, numbers(requests=0), SETTINGS, final=True)
    assert not verdict.passed and "answered no request" in verdict.summary()


def test_routing_of_a_step():
    assert routing("shadow", SETTINGS) == {
        "step": "shadow",
        "percent": 0,
        "shadow_fraction": 1.0,
        "sticky_field": "id",
    }
    assert routing(25, SETTINGS)["percent"] == 25 and routing(25, SETTINGS)["shadow_fraction"] == 0.0


@pytest.mark.parametrize(
    ("steps", "message"),
    [
        ([5, 25], "end at 100"),
        ([50, 25, 100], "rise and end at 100"),
        (["canary", 100], "shadow or a percentage"),
    ],
)
def test_steps_that_do_not_rise_to_100_are_refused(steps, message):
    with pytest.raises(ForgeError, match=message):
        check_rollout(OmegaConf.structured(RolloutConfig(steps=steps)))


def test_p99_latencies_of_too_few_requests_are_not_compared():
    """The p99 of 60 requests is about their slowest: one hiccup must not abort a good candidate."""
    verdict = judge_step(25, numbers(p99_ms=80.0), SETTINGS, final=True)
    assert verdict.passed
