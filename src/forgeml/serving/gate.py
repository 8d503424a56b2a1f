"""The promotion gate: may a candidate model replace the one that serves now?

A candidate is refused when it has no test metrics at all (it was never evaluated), when a
test metric misses its absolute threshold (`gate.thresholds`:
a minimum, or a maximum for error metrics such as test/rmse), or when it is worse than the
deployed version by more than `gate.max_regression` (relative: 0.02 = 2 % worse). Every refusal
quotes the numbers.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

# metrics where smaller is better; everything else (accuracy, f1, auroc, r2) is larger-is-better
ERROR_METRICS = ("loss", "mae", "mse", "rmse")
NOT_EVALUATED = (
    "the candidate has no test metrics: it was never evaluated; run `forgeml evaluate`, "
    "then `forgeml package`"
)


def lower_is_better(metric: str) -> bool:
    return metric.rsplit("/", 1)[-1] in ERROR_METRICS


@dataclass
class GateDecision:
    passed: bool
    reasons: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return "gate passed" if self.passed else "gate refused: " + "; ".join(self.reasons)


def promotion_gate(
    candidate: Mapping[str, float],
    deployed: Mapping[str, float] | None,
    thresholds: Mapping[str, float],
    max_regression: float,
) -> GateDecision:
    if not candidate:
        return GateDecision(passed=False, reasons=[NOT_EVALUATED])
    reasons = [_threshold_miss(candidate, metric, bound) for metric, bound in thresholds.items()]
    if deployed:
        reasons += [
            _regression(metric, candidate[metric], deployed[metric], max_regression)
            for metric in sorted(set(candidate) & set(deployed))
        ]
    reasons = [reason for reason in reasons if reason]
    return GateDecision(passed=not reasons, reasons=reasons)


@dataclass
class Judgement:
    """The gate's decision on a registered version, and what it was compared with."""

    decision: GateDecision
    candidate: dict[str, float]
    serving: str | None
    baseline: dict[str, float] | None


def judge(registry: Any, model: str, version: str, gate: Any) -> Judgement:
    """The gate on `version` of `model` against the version the registry says serves (if
    another): what `forgeml gate` reports and `forgeml deploy` enforces."""
    candidate = registry.version(model, version)["metrics"]
    serving = registry.serving(model)
    baseline = registry.version(model, serving)["metrics"] if serving and serving != version else None
    decision = promotion_gate(candidate, baseline, gate.thresholds, gate.max_regression)
    return Judgement(decision, candidate, serving, baseline)


def _threshold_miss(candidate: Mapping[str, float], metric: str, bound: float) -> str | None:
    if metric not in candidate:
        return f"{metric} was not measured (measured: {', '.join(sorted(candidate))})"
    value = candidate[metric]
    if lower_is_better(metric) and value > bound:
        return f"{metric} {value:.4f} is above the allowed maximum {bound:.4f}"
    if not lower_is_better(metric) and value < bound:
        return f"{metric} {value:.4f} is below the required minimum {bound:.4f}"
    return None


def _regression(metric: str, value: float, deployed: float, max_regression: float) -> str | None:
    worse_by = (value - deployed) if lower_is_better(metric) else (deployed - value)
    allowed = max_regression * max(abs(deployed), 1e-12)
    if worse_by > allowed:
        return (
            f"{metric} {value:.4f} is worse than the deployed {deployed:.4f} by {worse_by:.4f} "
            f"(allowed: {max_regression:.0%} = {allowed:.4f})"
        )
    return None
