"""The accuracy gate: one pure function decides whether a candidate model may serve.

The operator, local mode and the trainer's ``gate`` command (CI's model-release pipeline) all
call :func:`decide`; nothing else in the project re-implements the policy.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any


class Reason(StrEnum):
    """Why the gate decided as it did (stable codes, used in conditions and events)."""

    FIRST_VERSION = "FirstVersion"
    IMPROVED = "Improved"
    INSIGNIFICANT_IMPROVEMENT = "InsignificantImprovement"
    REGRESSION_DETECTED = "RegressionDetected"
    ACCURACY_BELOW_MINIMUM = "AccuracyBelowMinimum"
    INVALID_ACCURACY = "InvalidAccuracy"


@dataclass(frozen=True)
class GatePolicy:
    """Thresholds of the gate. The defaults are the course project's flowchart."""

    min_accuracy: float = 0.85
    # How much worse than the serving model a candidate may be (0: any regression rejects).
    regression_tolerance: float = 0.0
    # Gains below this are accepted with a warning.
    significant_improvement: float = 0.005

    def __post_init__(self) -> None:
        for name in ("min_accuracy", "regression_tolerance", "significant_improvement"):
            value = getattr(self, name)
            if not _is_probability(value):
                raise ValueError(f"gate policy {name} must be a number in [0, 1], got {value!r}")


@dataclass(frozen=True)
class Decision:
    """The gate's verdict. `warning` is set for accepted-but-insignificant improvements."""

    accepted: bool
    reason: Reason
    message: str
    candidate_accuracy: float | None
    serving_accuracy: float | None
    improvement: float | None
    warning: bool = False

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["reason"] = str(self.reason)
        return data


def _is_probability(value: object) -> bool:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return math.isfinite(value) and 0.0 <= value <= 1.0


# Accuracy is a ratio of small counts; compare at a precision far finer than one test row
# but coarse enough that 0.9 - 0.895 == 0.005 counts as "exactly the threshold".
_EPS = 1e-9


def decide(
    candidate_accuracy: float,
    serving_accuracy: float | None,
    policy: GatePolicy | None = None,
) -> Decision:
    """Decide whether a model with `candidate_accuracy` may replace the serving model.

    Order of checks: invalid input, absolute floor, regression against the serving model,
    then significance of the gain. With no serving model the floor alone decides.
    """
    policy = policy or GatePolicy()
    if not _is_probability(candidate_accuracy):
        return Decision(
            accepted=False,
            reason=Reason.INVALID_ACCURACY,
            message=f"candidate accuracy {candidate_accuracy!r} is not a number in [0, 1]",
            candidate_accuracy=None,
            serving_accuracy=serving_accuracy if _is_probability(serving_accuracy) else None,
            improvement=None,
        )
    if serving_accuracy is not None and not _is_probability(serving_accuracy):
        return Decision(
            accepted=False,
            reason=Reason.INVALID_ACCURACY,
            message=f"serving model accuracy {serving_accuracy!r} is not a number in [0, 1]",
            candidate_accuracy=candidate_accuracy,
            serving_accuracy=None,
            improvement=None,
        )

    improvement = None if serving_accuracy is None else candidate_accuracy - serving_accuracy

    def verdict(accepted: bool, reason: Reason, message: str, warning: bool = False) -> Decision:
        return Decision(
            accepted=accepted,
            reason=reason,
            message=message,
            candidate_accuracy=candidate_accuracy,
            serving_accuracy=serving_accuracy,
            improvement=improvement,
            warning=warning,
        )

    if candidate_accuracy < policy.min_accuracy - _EPS:
        return verdict(
            False,
            Reason.ACCURACY_BELOW_MINIMUM,
            f"accuracy {candidate_accuracy:.4f} is below minAccuracy {policy.min_accuracy:.4f}; "
            "the serving model is kept",
        )
    if serving_accuracy is None or improvement is None:
        return verdict(
            True,
            Reason.FIRST_VERSION,
            f"first version: accuracy {candidate_accuracy:.4f} meets minAccuracy "
            f"{policy.min_accuracy:.4f}",
        )
    if improvement < -policy.regression_tolerance - _EPS:
        return verdict(
            False,
            Reason.REGRESSION_DETECTED,
            f"accuracy {candidate_accuracy:.4f} is worse than the serving model's "
            f"{serving_accuracy:.4f} (change {improvement:+.4f}, tolerance "
            f"{policy.regression_tolerance:.4f}); the serving model is kept",
        )
    if improvement < policy.significant_improvement - _EPS:
        return verdict(
            True,
            Reason.INSIGNIFICANT_IMPROVEMENT,
            f"improvement not significant: accuracy {candidate_accuracy:.4f} vs serving "
            f"{serving_accuracy:.4f} (change {improvement:+.4f} < "
            f"{policy.significant_improvement:.4f})",
            warning=True,
        )
    return verdict(
        True,
        Reason.IMPROVED,
        f"accuracy improved from {serving_accuracy:.4f} to {candidate_accuracy:.4f} "
        f"(change {improvement:+.4f})",
    )
