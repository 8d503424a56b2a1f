"""The promotion gate: may a candidate model replace the one that serves now?

A candidate is refused when it has no test metrics at all (it was never evaluated), when a
test metric misses its absolute threshold (`gate.thresholds`:
a minimum, or a maximum for error metrics such as test/rmse), or when it is worse than the
deployed version by more than `gate.max_regression` (relative: 0.02 = 2 % worse), or when a
class's test recall is below `gate.min_class_recall` (one number for every class, or
{class: minimum}). Every refusal quotes the numbers and names the class.

Live evidence: `gate.require` lists what a version must have passed before it takes all traffic:
`offline` (the checks above), `replay` (`forgeml replay VERSION` on logged traffic), `shadow`
(the shadow step of `forgeml rollout`). The registry's events are the evidence.

The regression check compares the summary metrics (`test/accuracy`, not the per-class
`test/recall/<class>`): a rare class's scores move by a whole row, so they are held by
`min_class_recall` instead.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

# metrics where smaller is better; everything else (accuracy, f1, auroc, r2) is larger-is-better
ERROR_METRICS = ("loss", "mae", "mse", "rmse")
# per-class recall, as evaluate names it: test/recall/<class>
RECALL = "test/recall/"
NOT_EVALUATED = (
    "the candidate has no test metrics: it was never evaluated; run `forgeml evaluate`, "
    "then `forgeml package`"
)


# what each kind of live evidence is in the registry's events: (action, step)
LIVE_EVIDENCE = {"replay": ("replay", None), "shadow": ("rollout", "shadow")}
PASSED = "passed"


def missing_evidence(events: list[dict[str, Any]], version: str, require: list[str]) -> list[str]:
    """What `gate.require` asks of `version` beyond the offline checks that no passed event shows."""
    reasons = []
    for kind in require:
        if kind not in LIVE_EVIDENCE:
            continue
        action, step = LIVE_EVIDENCE[kind]
        found = any(
            e["version"] == version
            and e["action"] == action
            and e.get("step") == step
            and e.get("verdict") == PASSED
            for e in events
        )
        if not found:
            command = f"forgeml replay {version}" if kind == "replay" else f"forgeml rollout {version}"
            reasons.append(f"gate.require has {kind}, and {version} has passed none: run `{command}`")
    return reasons


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
    min_class_recall: float | Mapping[str, float] | None = None,
    baseline: str = "the deployed",
) -> GateDecision:
    """`baseline`: how a reason names the version `deployed` holds the metrics of."""
    if not candidate:
        return GateDecision(passed=False, reasons=[NOT_EVALUATED])
    reasons = [_threshold_miss(candidate, metric, bound) for metric, bound in thresholds.items()]
    reasons += _class_recall_misses(candidate, min_class_recall)
    if deployed:
        reasons += [
            _regression(metric, candidate[metric], deployed[metric], max_regression, baseline)
            for metric in sorted(set(candidate) & set(deployed))
            if metric.count("/") == 1
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
    decision = promotion_gate(
        candidate, baseline, gate.thresholds, gate.max_regression, gate.get("min_class_recall")
    )
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


def _class_recall_misses(
    candidate: Mapping[str, float], minimum: float | Mapping[str, float] | None
) -> list[str]:
    """A refusal for each class whose test recall is below its minimum (or was not measured)."""
    if minimum is None:
        return []
    measured = {key.removeprefix(RECALL): value for key, value in candidate.items() if key.startswith(RECALL)}
    if not isinstance(minimum, Mapping):
        minimum = dict.fromkeys(measured or ["every class"], minimum)
    reasons = []
    for name, bound in minimum.items():
        if str(name) not in measured:
            classes = ", ".join(measured) or "none (re-run `forgeml evaluate`)"
            reasons.append(f"class {name!r}: no test recall was measured (classes measured: {classes})")
        elif measured[str(name)] < bound:
            recall = measured[str(name)]
            reasons.append(
                f"class {name!r}: test recall {recall:.4f} is below the required minimum {bound:.4f}"
            )
    return reasons


def _regression(
    metric: str, value: float, deployed: float, max_regression: float, baseline: str
) -> str | None:
    worse_by = (value - deployed) if lower_is_better(metric) else (deployed - value)
    allowed = max_regression * max(abs(deployed), 1e-12)
    if worse_by > allowed:
        return (
            f"{metric} {value:.4f} is worse than {baseline} {deployed:.4f} by {worse_by:.4f} "
            f"(allowed: {max_regression:.0%} = {allowed:.4f})"
        )
    return None
