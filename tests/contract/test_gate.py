"""The accuracy gate: every branch and boundary of the seed's flowchart."""

import math

import pytest

from modelops_contract.gate import Decision, GatePolicy, Reason, decide

DEFAULT = GatePolicy()


@pytest.mark.parametrize(
    ("candidate", "serving", "accepted", "reason", "warning"),
    [
        # first version: only the floor applies
        (0.90, None, True, Reason.FIRST_VERSION, False),
        (0.85, None, True, Reason.FIRST_VERSION, False),  # exactly the floor passes
        (0.8499, None, False, Reason.ACCURACY_BELOW_MINIMUM, False),
        (0.0, None, False, Reason.ACCURACY_BELOW_MINIMUM, False),
        (1.0, None, True, Reason.FIRST_VERSION, False),
        # against a serving model
        (0.97, 0.95, True, Reason.IMPROVED, False),
        (0.955, 0.95, True, Reason.IMPROVED, False),  # exactly +0.005 is significant
        (0.9549, 0.95, True, Reason.INSIGNIFICANT_IMPROVEMENT, True),
        (0.95, 0.95, True, Reason.INSIGNIFICANT_IMPROVEMENT, True),  # exactly 0: warn, accept
        (0.9499, 0.95, False, Reason.REGRESSION_DETECTED, False),
        (0.90, 0.95, False, Reason.REGRESSION_DETECTED, False),
        # the floor is checked independently of the serving model
        (0.84, 0.80, False, Reason.ACCURACY_BELOW_MINIMUM, False),
        (0.85, 0.80, True, Reason.IMPROVED, False),
        # float noise of accuracy arithmetic does not flip a boundary
        (0.9 - 0.895 + 0.95, 0.95, True, Reason.IMPROVED, False),
        (0.1 + 0.2 + 0.65, 0.95, True, Reason.INSIGNIFICANT_IMPROVEMENT, True),
    ],
)
def test_default_policy_table(candidate, serving, accepted, reason, warning):
    decision = decide(candidate, serving)
    assert decision.accepted is accepted
    assert decision.reason is reason
    assert decision.warning is warning
    assert decision.message


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf, -0.01, 1.01, 2, True, "0.9", None])
def test_invalid_candidate_is_rejected(bad):
    decision = decide(bad, 0.9)
    assert not decision.accepted
    assert decision.reason is Reason.INVALID_ACCURACY
    assert decision.candidate_accuracy is None


@pytest.mark.parametrize("bad", [math.nan, -0.5, 1.5])
def test_invalid_serving_accuracy_is_rejected(bad):
    decision = decide(0.95, bad)
    assert not decision.accepted
    assert decision.reason is Reason.INVALID_ACCURACY
    assert "serving" in decision.message


def test_regression_tolerance_allows_small_drops():
    policy = GatePolicy(regression_tolerance=0.02)
    assert decide(0.94, 0.95, policy).accepted
    assert decide(0.93, 0.95, policy).accepted  # exactly the tolerance
    rejected = decide(0.9299, 0.95, policy)
    assert not rejected.accepted
    assert rejected.reason is Reason.REGRESSION_DETECTED
    assert "tolerance 0.0200" in rejected.message


def test_custom_floor_and_significance():
    policy = GatePolicy(min_accuracy=0.5, significant_improvement=0.05)
    assert decide(0.6, None, policy).reason is Reason.FIRST_VERSION
    assert decide(0.64, 0.6, policy).reason is Reason.INSIGNIFICANT_IMPROVEMENT
    assert decide(0.65, 0.6, policy).reason is Reason.IMPROVED
    assert decide(0.49, None, policy).reason is Reason.ACCURACY_BELOW_MINIMUM


def test_messages_are_actionable():
    below = decide(0.80, 0.95)
    assert below.message.startswith("accuracy 0.8000 is below minAccuracy 0.8500")
    regression = decide(0.90, 0.95)
    assert "worse than the serving model's 0.9500" in regression.message
    insignificant = decide(0.951, 0.95)
    assert insignificant.message.startswith("improvement not significant")


def test_decision_serialises_with_string_reason():
    data = decide(0.97, 0.95).to_dict()
    assert data["reason"] == "Improved"
    assert data["accepted"] is True
    assert data["improvement"] == pytest.approx(0.02)
    assert isinstance(decide(0.97, None), Decision)


@pytest.mark.parametrize(
    "field", ["min_accuracy", "regression_tolerance", "significant_improvement"]
)
@pytest.mark.parametrize("value", [-0.1, 1.1, math.nan])
def test_policy_rejects_out_of_range(field, value):
    with pytest.raises(ValueError, match=field):
        GatePolicy(**{field: value})
