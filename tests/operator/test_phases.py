"""Each phase of the plan on its own, over a hand-built PlanState (pure; no cluster)."""

from __future__ import annotations

import pytest

from modelops import names
from modelops.core import phases, render, status
from modelops.core.harvest import Failed, Succeeded
from modelops.core.plan import PHASES, plan
from modelops.core.state import Observed, PlanState
from modelops.settings import Settings
from modelops.spec import ModelDeploymentSpec

from .test_reconcile import available

pytestmark = pytest.mark.unit

SETTINGS = Settings()
NOW = "2026-01-01T00:00:00Z"


def cr(version="v1", status_=None, **spec):
    body = {
        "apiVersion": "modelops.dev/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": "iris", "namespace": "ml", "uid": "u-1", "generation": 3},
        "spec": {"modelVersion": version, **spec},
    }
    if status_ is not None:
        body["status"] = status_
    return body


def state(resource=None, observed=None, outcomes=None) -> PlanState:
    return PlanState.start(resource or cr(), observed or Observed(), outcomes or {}, SETTINGS, NOW)


def artifact(version="v1", accuracy=0.95, sha="abc"):
    metadata = {
        "metrics": {"test_accuracy": accuracy},
        "model_sha256": sha,
        "created_at": NOW,
        "version": version,
    }
    return render.artifact_configmap(cr(version), version, metadata, b"model")


def server(version="v1", replicas=2, ready=2):
    """The server Deployment of ``version``, ``ready`` of ``replicas`` available."""
    resource = cr(version)
    spec = ModelDeploymentSpec.from_dict(resource["spec"])
    deployment = render.server_deployment(resource, spec, SETTINGS, version, "abc")
    deployment["spec"]["replicas"] = replicas
    rolled = available(deployment, replicas)
    rolled["status"]["updatedReplicas"] = rolled["status"]["availableReplicas"] = ready
    return rolled


def accepted(version="v1", accuracy=0.95):
    return {
        "version": version,
        "accuracy": accuracy,
        "outcome": names.ACCEPTED,
        "reason": "FirstVersion",
        "message": "ok",
        "modelSha256": "abc",
        "time": NOW,
    }


def test_plan_runs_every_phase_in_order():
    assert [p.__name__ for p in PHASES] == [
        "trust_artifacts", "check_policy", "announce_block",
        "recover_serving", "store_results", "run_gate", "start_training", "choose_target",
        "plan_rollout", "converge_children", "converge_candidate", "advance_serving",
        "check_progress", "prune", "write_status",
    ]  # fmt: skip
    assert plan(cr(), Observed(), {}, SETTINGS, NOW).status["phase"] == names.TRAINING


def test_recover_serving_adopts_a_rolled_out_deployment_when_status_is_lost():
    s = state(observed=Observed(server=server("v1"), artifacts={"v1": artifact()}))
    phases.recover_serving(s)
    assert (s.serving, s.serving_accuracy) == ("v1", 0.95)


def test_recover_serving_ignores_a_deployment_still_rolling():
    s = state(observed=Observed(server=server("v1", ready=1)))
    phases.recover_serving(s)
    assert s.serving is None


def test_recover_serving_keeps_a_recorded_history():
    s = state(cr(status_={"history": [accepted("v0")]}), Observed(server=server("v1")))
    phases.recover_serving(s)
    assert s.serving is None


def test_store_results_creates_the_artifact_once():
    metadata = {"metrics": {"test_accuracy": 0.9}, "model_sha256": "s", "version": "v1"}
    s = state(outcomes={"v1": Succeeded("v1", 0.9, metadata, b"m")})
    phases.store_results(s)
    assert [m["kind"] for m in s.result.create] == ["ConfigMap"]
    assert "v1" in s.artifacts
    assert [e.reason for e in s.result.events] == [names.EVENT_ARTIFACT_STORED]
    again = state(observed=Observed(artifacts={"v1": artifact()}), outcomes=s.outcomes)
    phases.store_results(again)
    assert again.result.create == [] and again.result.events == []


def test_store_results_records_a_failure_once():
    s = state(outcomes={"v1": Failed("v1", "InvalidParameters", "bad n_neighbors")})
    phases.store_results(s)
    assert s.history[0]["outcome"] == names.OUTCOME_FAILED
    assert s.history[0]["reason"] == "InvalidParameters"
    assert [e.reason for e in s.result.events] == [names.EVENT_TRAINING_FAILED]
    phases.store_results(s)
    assert len(s.history) == 1


def test_run_gate_decides_once_and_records_the_verdict():
    s = state(observed=Observed(artifacts={"v1": artifact(accuracy=0.95)}))
    phases.run_gate(s)
    assert s.entry is not None and s.entry["outcome"] == names.ACCEPTED
    assert s.entry["modelSha256"] == "abc" and s.history[0] is s.entry
    assert [e.reason for e in s.result.events] == [names.EVENT_GATE_ACCEPTED]
    decided = state(cr(status_={"history": [accepted(accuracy=0.91)]}))
    phases.run_gate(decided)
    assert decided.candidate_accuracy == 0.91 and decided.result.events == []


def test_run_gate_rejects_a_regression_against_the_serving_model():
    resource = cr("v2", {"servingVersion": "v1", "accuracy": 0.97, "history": [accepted()]})
    s = state(resource, Observed(artifacts={"v2": artifact("v2", accuracy=0.9)}))
    phases.run_gate(s)
    assert s.entry["outcome"] == names.REJECTED and s.entry["reason"] == "RegressionDetected"
    assert [e.reason for e in s.result.events] == [names.EVENT_GATE_REJECTED]


def test_run_gate_waits_for_an_artifact():
    s = state()
    phases.run_gate(s)
    assert s.entry is None and s.history == []


def test_start_training_creates_one_job_per_version():
    s = state()
    phases.start_training(s)
    assert [m["metadata"]["name"] for m in s.result.create] == ["iris-train-v1"]
    assert s.job_created
    running = state(observed=Observed(jobs={"v1": {"metadata": {}, "status": {}}}))
    phases.start_training(running)
    assert running.result.create == []


def test_choose_target_follows_the_verdict():
    s = state(observed=Observed(artifacts={"v1": artifact()}))
    s.entry = accepted()
    phases.choose_target(s)
    assert (s.target, s.artifact_missing) == ("v1", False)
    gone = state()
    gone.entry, gone.serving = accepted(), "v0"
    phases.choose_target(gone)
    assert (gone.target, gone.artifact_missing) == ("v0", True)


def test_converge_children_applies_what_is_missing_and_deletes_the_idle_loadgen():
    loadgen = {"metadata": {"name": "iris-loadgen"}}
    s = state(cr(loadRate=0), Observed(loadgen=loadgen))
    phases.converge_children(s)
    assert [m["kind"] for m in s.result.apply] == ["Service"]
    assert [r.name for r in s.result.delete] == ["iris-loadgen"]
    # The first rollout: no load generator until something serves (its requests would fail).
    first = state(cr(loadRate=1))
    first.target = "v1"
    phases.converge_children(first)
    assert [m["metadata"]["name"] for m in first.result.apply] == ["iris", "iris-server"]
    serving = state(cr(loadRate=1))
    serving.target = serving.serving = "v1"  # load only once something serves
    phases.converge_children(serving)
    assert [m["metadata"]["name"] for m in serving.result.apply] == [
        "iris", "iris-server", "iris-loadgen",
    ]  # fmt: skip


def test_advance_serving_once_rolled_out():
    s = state(cr(replicas=2, status_={"history": [accepted()]}), Observed(server=server("v1")))
    s.target = "v1"
    phases.advance_serving(s)
    assert (s.serving, s.serving_accuracy) == ("v1", 0.95)
    assert s.history[0]["servedAt"] == NOW
    assert [e.reason for e in s.result.events] == [names.EVENT_ROLLED_OUT]
    rolling = state(cr(replicas=2), Observed(server=server("v1", ready=1)))
    rolling.target = "v1"
    phases.advance_serving(rolling)
    assert rolling.serving is None


def test_prune_keeps_history_limit_and_the_versions_in_use():
    history = [accepted(f"v{i}") for i in (5, 4, 3, 2)]
    jobs = {f"v{i}": {} for i in (1, 2, 3, 4, 5)}
    s = state(cr("v5", historyLimit=2, status_={"history": history}), Observed(jobs=jobs))
    s.serving = "v2"
    phases.prune(s)
    assert [h["version"] for h in s.history] == ["v5", "v4"]
    assert [r.name for r in s.result.delete] == ["iris-train-v1", "iris-train-v3"]


@pytest.mark.parametrize(
    ("entry", "serving", "missing", "expected"),
    [
        (None, None, False, names.TRAINING),  # the Job is created in this pass
        ({"outcome": names.REJECTED}, "v0", False, names.DEGRADED),
        ({"outcome": names.OUTCOME_FAILED}, None, False, names.FAILED),
        ({"outcome": names.ACCEPTED}, "v1", False, names.SERVING),
        ({"outcome": names.ACCEPTED}, "v0", False, names.ROLLING_OUT),
        ({"outcome": names.ACCEPTED}, "v0", True, names.DEGRADED),
    ],
)
def test_phase_of(entry, serving, missing, expected):
    s = state()
    if entry is None:
        phases.start_training(s)
    s.entry, s.serving, s.artifact_missing = entry, serving, missing
    assert status.phase_of(s) == expected


def test_status_gate_and_conditions():
    s = state(cr(status_={"history": [accepted()]}))
    phases.run_gate(s)
    phases.choose_target(s)
    gate = status.gate_of(s)
    assert gate["result"] == names.ACCEPTED and gate["version"] == "v1"
    assert status.accepted_condition(s)["status"] == "True"
    assert status.trained_condition(s)["reason"] == names.REASON_SUCCEEDED
    assert status.available_condition(s)["reason"] == names.REASON_NO_MODEL
    assert status.progressing_condition(s, names.SERVING)["reason"] == names.REASON_SETTLED
    assert status.degraded_condition(s, names.SERVING)["status"] == "False"


def test_write_status_keeps_transition_times_and_reports_changes():
    first = state()
    phases.start_training(first)
    status.write_status(first)
    assert first.result.status_changed
    conditions = [c["type"] for c in first.result.status["conditions"]]
    assert conditions == list(names.CONDITION_TYPES)
    later = PlanState.start(
        cr(status_=first.result.status), Observed(jobs={"v1": {"metadata": {}, "status": {}}}),
        {}, SETTINGS, "2026-01-01T00:05:00Z",
    )  # fmt: skip
    status.write_status(later)
    assert not later.result.status_changed
