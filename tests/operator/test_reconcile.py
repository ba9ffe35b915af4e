"""The pure planner and the harvest of trainer results (no cluster, no mocks)."""

from __future__ import annotations

import copy
import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest

from modelops import names
from modelops.core import harvest, render
from modelops.core.drift import contains, drifted, rolled_out
from modelops.core.harvest import Disrupted, Failed, NeedsLog, Succeeded, read_outcome
from modelops.core.plan import harvest_needed, plan
from modelops.core.state import Observed
from modelops.settings import Settings
from modelops_contract import bundle, params

SETTINGS = Settings()
T0, T1, T2 = "2026-01-01T00:00:00Z", "2026-01-01T00:01:00Z", "2026-01-01T00:02:00Z"
TRAINER = str(Path(sys.executable).with_name("modelops-trainer"))


def cr(version="v1", status=None, generation=1, **spec):
    body = {
        "apiVersion": "modelops.dev/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": "iris", "namespace": "ml", "uid": "u-1", "generation": generation},
        "spec": {"modelVersion": version, **spec},
    }
    if status is not None:
        body["status"] = status
    return body


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """Real trainer summaries: knn (bundle inline), random forest (bundle in the log), failure."""
    tmp = tmp_path_factory.mktemp("train")
    out = {}
    for key, args in {
        "knn": [],
        "rf": ["--algorithm", "random_forest"],
        "bad": ["--params-json", '{"n_neighbors": -1}'],
    }.items():
        proc = subprocess.run(
            [TRAINER, "train", "--version", "v1", "--output-dir", str(tmp / key),
             "--result-file", str(tmp / f"{key}.json"), "--emit-artifact", *args],
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        out[key] = ((tmp / f"{key}.json").read_text(), proc.stdout)
    return out


def job(state="Complete", reason=None):
    conditions = [] if state is None else [{"type": state, "status": "True", "reason": reason}]
    return {"metadata": {"name": "iris-train-v1", "uid": "j"}, "status": {"conditions": conditions}}


def pod(message, exit_code=0, reason="Completed"):
    terminated = {"exitCode": exit_code, "reason": reason, "message": message}
    return {
        "metadata": {"name": "iris-train-v1-abcde", "creationTimestamp": T0},
        "status": {"containerStatuses": [{"name": "trainer", "state": {"terminated": terminated}}]},
    }


# Harvest ------------------------------------------------------------------------------------


def test_running_job_has_no_outcome():
    assert read_outcome("v1", job(None), []) is None


def test_inline_bundle(results):
    message, _ = results["knn"]
    outcome = read_outcome("v1", job(), [pod(message)])
    assert isinstance(outcome, Succeeded)
    assert outcome.accuracy == json.loads(message)["accuracy"]
    assert outcome.metadata["version"] == "v1" and outcome.model.startswith(params.MAGIC)


def test_big_model_needs_the_log(results):
    message, log = results["rf"]
    assert bundle.SUMMARY_KEY not in json.loads(message)
    first = read_outcome("v1", job(), [pod(message)])
    assert first == NeedsLog("iris-train-v1-abcde")
    outcome = read_outcome("v1", job(), [pod(message)], log=log)
    assert isinstance(outcome, Succeeded) and outcome.metadata["algorithm"] == "random_forest"
    # The log is gone (pod deleted, log rotated): the result is lost, not failed.
    lost = read_outcome("v1", job(), [pod(message)], log="rotated away")
    assert isinstance(lost, Disrupted) and "no artifact line" in lost.message


def test_trainer_failure_is_reported_with_its_reason(results):
    message, _ = results["bad"]
    outcome = read_outcome("v1", job("Failed", "BackoffLimitExceeded"), [pod(message, 1, "Error")])
    assert isinstance(outcome, Failed) and outcome.reason == "InvalidParameters"
    assert "n_neighbors" in outcome.message


def test_crash_and_deadline():
    crash = read_outcome("v1", job("Failed"), [pod("Segfault\n", 139, "Error")])
    assert isinstance(crash, Failed) and crash.reason == "TrainerCrashed"
    assert "Error" in crash.message and "139" in crash.message and "Segfault" in crash.message
    late = read_outcome("v1", job("Failed", "DeadlineExceeded"), [])
    assert isinstance(late, Failed) and late.reason == "DeadlineExceeded"
    assert "timeoutSeconds" in late.message
    empty = read_outcome("v1", job(), [pod("")])
    assert isinstance(empty, Failed) and empty.reason == "NoResult"


def test_tampered_bundle_is_refused(results):
    message, _ = results["knn"]
    summary = json.loads(message)
    summary["modelSha256"] = "0" * 64
    outcome = read_outcome("v1", job(), [pod(json.dumps(summary))])
    assert isinstance(outcome, Failed) and outcome.reason == "ArtifactCorrupt"
    other = read_outcome("v2", job(), [pod(message)])
    assert isinstance(other, Failed) and "expected 'v2'" in other.message


# Planner ------------------------------------------------------------------------------------


def succeeded(results, version="v1"):
    outcome = read_outcome("v1", job(), [pod(results["knn"][0])])
    assert isinstance(outcome, Succeeded)
    metadata = {**outcome.metadata, "version": version}
    return Succeeded(version, outcome.accuracy, metadata, outcome.model)


def scored(outcome, accuracy):
    """The same trained model, reported by its Job with another accuracy."""
    metrics = {**outcome.metadata["metrics"], "test_accuracy": accuracy}
    return Succeeded(
        outcome.version, accuracy, {**outcome.metadata, "metrics": metrics}, outcome.model
    )


def with_accuracy(cm, accuracy):
    cm = copy.deepcopy(cm)
    cm["metadata"]["annotations"][names.ANNOTATION_ACCURACY] = repr(accuracy)
    return cm


def available(deployment, replicas=None):
    d = copy.deepcopy(deployment)
    n = d["spec"]["replicas"] if replicas is None else replicas
    d["metadata"]["generation"] = 1
    d["status"] = {
        "observedGeneration": 1,
        "replicas": n,
        "updatedReplicas": n,
        "readyReplicas": n,
        "availableReplicas": n,
        "conditions": [
            {"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable"}
        ],
    }
    return d


def test_new_resource_creates_the_job_and_a_pending_status():
    p = plan(cr(), Observed(), {}, SETTINGS, T0)
    assert [m["kind"] for m in p.create] == ["Job"]
    assert [m["kind"] for m in p.apply] == ["Service"]
    assert p.status["phase"] == "Training" and p.status["gate"]["result"] == "Pending"
    assert p.status["ready"] == "0/1" and p.status["observedGeneration"] == 1
    assert p.status["selector"] == "app.kubernetes.io/component=server,modelops.dev/name=iris"
    assert p.status["endpoint"] == "http://iris.ml.svc:8000"
    assert [e.reason for e in p.events] == ["TrainingStarted"]
    types = [c["type"] for c in p.status["conditions"]]
    assert types == ["Trained", "Accepted", "Available", "Progressing", "Degraded"]


def test_first_version_flows_to_serving(results):
    # Pass 1: Job exists and finished → artifact created, gate passes, Deployment applied.
    running = {"v1": job()}
    p1 = plan(cr(), Observed(jobs=running), {"v1": succeeded(results)}, SETTINGS, T0)
    kinds = sorted(m["kind"] for m in p1.create)
    assert kinds == ["ConfigMap"]
    applied = {m["metadata"]["name"]: m for m in p1.apply}
    # No load generator yet: nothing serves, every request would fail.
    assert set(applied) == {"iris", "iris-server"}
    assert p1.status["phase"] == "RollingOut"
    assert p1.status["gate"]["reason"] == "FirstVersion"
    assert p1.status["history"][0]["outcome"] == "Accepted"
    assert "servingVersion" not in p1.status
    assert [e.reason for e in p1.events] == ["ArtifactStored", "GateAccepted"]

    # Pass 2: the Deployment is available → serving moves forward; history gets servedAt;
    # the load generator starts.
    cm = p1.create[0]
    observed = Observed(
        jobs=running,
        artifacts={"v1": cm},
        server=available(applied["iris-server"]),
        service=applied["iris"],
    )
    p2 = plan(cr(status=p1.status), observed, {}, SETTINGS, T1)
    assert p2.status["servingVersion"] == "v1" and p2.status["phase"] == "Serving"
    assert p2.status["accuracy"] == pytest.approx(0.966667)
    assert p2.status["history"][0]["servedAt"] == T1
    assert p2.status["ready"] == "1/1"
    assert [e.reason for e in p2.events] == ["RolledOut"]
    assert [m["metadata"]["name"] for m in p2.apply] == ["iris-loadgen"]
    assert not p2.create and not p2.delete

    # Pass 3: nothing changed → nothing to write at all.
    observed = dataclasses.replace(observed, loadgen=p2.apply[0])
    p3 = plan(cr(status=p2.status), observed, {}, SETTINGS, T2)
    assert p3.writes == 0 and not p3.status_changed
    # Conditions keep their transition time.
    times = {c["type"]: c["lastTransitionTime"] for c in p3.status["conditions"]}
    assert times["Trained"] == T0 and times["Available"] == T1


def _serving_state(results):
    running = {"v1": job()}
    p1 = plan(cr(), Observed(jobs=running), {"v1": succeeded(results)}, SETTINGS, T0)
    applied = {m["metadata"]["name"]: m for m in p1.apply}
    observed = Observed(
        jobs=running,
        artifacts={"v1": p1.create[0]},
        server=available(applied["iris-server"]),
        service=applied["iris"],
    )
    p2 = plan(cr(status=p1.status), observed, {}, SETTINGS, T1)
    return p2.status, dataclasses.replace(observed, loadgen=p2.apply[0])


def test_regression_is_rejected_and_nothing_serving_changes(results):
    status, observed = _serving_state(results)
    worse = scored(succeeded(results, "v2"), 0.9)
    worse_cm = render.artifact_configmap(cr("v2"), "v2", worse.metadata, worse.model)
    obs = Observed(
        jobs={**observed.jobs, "v2": job()},
        artifacts={**observed.artifacts, "v2": worse_cm},
        server=observed.server,
        service=observed.service,
        loadgen=observed.loadgen,
    )
    # Stored in an earlier pass whose status write was lost: the Job's result is read again.
    p = plan(cr("v2", status=status, generation=2), obs, {"v2": worse}, SETTINGS, T2)
    assert p.status["phase"] == "Degraded" and p.status["servingVersion"] == "v1"
    assert p.status["gate"]["result"] == "Rejected"
    assert p.status["gate"]["reason"] == "RegressionDetected"
    assert not p.apply  # the Deployment stays at v1
    assert [(e.type, e.reason) for e in p.events] == [("Warning", "GateRejected")]
    degraded = next(c for c in p.status["conditions"] if c["type"] == "Degraded")
    assert degraded["status"] == "True" and "still serving v1" in degraded["message"]
    # The verdict is sticky: the next pass decides nothing again.
    again = plan(cr("v2", status=p.status, generation=2), obs, {}, SETTINGS, T2)
    assert again.writes == 0


def test_failed_training_with_nothing_serving_is_failed_and_not_retried():
    failure = Failed("v1", "InvalidParameters", "invalid knn hyperparameter: n_neighbors")
    obs = Observed(jobs={"v1": job("Failed")})
    p = plan(cr(), obs, {"v1": failure}, SETTINGS, T0)
    assert p.status["phase"] == "Failed" and not p.create
    trained = next(c for c in p.status["conditions"] if c["type"] == "Trained")
    assert trained["reason"] == "InvalidParameters" and "n_neighbors" in trained["message"]
    assert [(e.type, e.reason) for e in p.events] == [("Warning", "TrainingFailed")]
    # Next pass: recorded, so no harvest and no new Job, even if the Job is deleted.
    assert harvest_needed(cr(status=p.status), obs) == []
    after = plan(cr(status=p.status), Observed(service=p.apply[0]), {}, SETTINGS, T1)
    assert after.writes == 0


def test_rollback_to_a_kept_version_needs_no_training(results):
    status, observed = _serving_state(results)
    better = scored(succeeded(results, "v2"), 0.99)
    v2_cm = render.artifact_configmap(cr("v2"), "v2", better.metadata, better.model)
    obs = Observed(
        jobs={**observed.jobs, "v2": job()},
        artifacts={**observed.artifacts, "v2": v2_cm},
        server=observed.server,
        service=observed.service,
    )
    p = plan(cr("v2", status=status, loadRate=0), obs, {"v2": better}, SETTINGS, T2)
    assert p.status["gate"]["reason"] == "Improved"
    server = next(m for m in p.apply if m["metadata"]["name"] == "iris-server")
    assert server["spec"]["template"]["metadata"]["labels"]["modelops.dev/version"] == "v2"
    # Back to v1: no Job, the Deployment points at v1's ConfigMap again.
    obs = Observed(**{**obs.__dict__, "server": available(server)})
    back = plan(cr("v1", status=p.status, loadRate=0), obs, {}, SETTINGS, T2)
    assert not back.create
    server = next(m for m in back.apply if m["metadata"]["name"] == "iris-server")
    assert server["spec"]["template"]["metadata"]["labels"]["modelops.dev/version"] == "v1"
    assert back.status["gate"]["result"] == "Accepted"


def test_old_versions_beyond_history_are_deleted(results):
    status, observed = _serving_state(results)
    sha = succeeded(results).metadata["model_sha256"]
    status["history"] = [
        {
            "version": f"v{i}",
            "outcome": "Rejected",
            "accuracy": 0.5,
            "reason": "x",
            "message": "m",
            "modelSha256": sha,
        }
        for i in (4, 3, 2)
    ] + status["history"]
    jobs = {f"v{i}": job() for i in range(1, 6)}
    cms = {
        f"v{i}": render.artifact_configmap(
            cr(f"v{i}"), f"v{i}", succeeded(results, f"v{i}").metadata, b"m"
        )
        for i in range(1, 5)
    }
    obs = Observed(jobs=jobs, artifacts=cms, server=observed.server, service=observed.service)
    p = plan(cr("v5", status=status, historyLimit=2, loadRate=0), obs, {}, SETTINGS, T2)
    deleted = sorted(r.name for r in p.delete)
    # Kept: history v4, v3 (limit 2), the spec's v5 and the serving v1.
    assert deleted == ["iris-model-v2", "iris-train-v2"]


def test_load_generator_removed_at_rate_zero(results):
    status, observed = _serving_state(results)
    p = plan(cr(status=status, loadRate=0), observed, {}, SETTINGS, T2)
    assert [(r.kind, r.name) for r in p.delete] == [("Deployment", "iris-loadgen")]


def test_scale_changes_only_the_deployment(results):
    status, observed = _serving_state(results)
    p = plan(cr(status=status, replicas=3), observed, {}, SETTINGS, T2)
    assert [m["metadata"]["name"] for m in p.apply] == ["iris-server"]
    assert p.apply[0]["spec"]["replicas"] == 3
    assert p.status["ready"] == "1/3"


def test_monitoring_crds_add_monitors(results):
    status, observed = _serving_state(results)
    obs = Observed(**{**observed.__dict__, "monitoring_crds": True})
    p = plan(cr(status=status), obs, {}, SETTINGS, T2)
    assert sorted(m["kind"] for m in p.apply) == ["PodMonitor", "ServiceMonitor"]


def test_drift_detection():
    desired = render.service(
        cr(), plan.__globals__["ModelDeploymentSpec"].from_dict({"modelVersion": "v1"})
    )
    actual = copy.deepcopy(desired)
    actual["spec"]["clusterIP"] = "10.0.0.7"  # server-set field: not drift
    actual["spec"]["ports"][0]["nodePort"] = 30000
    assert not drifted(desired, actual)
    actual["spec"]["ports"][0]["port"] = 9999  # hand edit: drift
    assert drifted(desired, actual)
    assert drifted(desired, None)
    assert contains({"cpu": "500m"}, {"cpu": "0.5"}) and contains(
        {"memory": "1Gi"}, {"memory": "1024Mi"}
    )
    assert not contains({"cpu": "1"}, {"cpu": "2"})


def test_rolled_out_needs_every_replica_of_the_version(results):
    _, observed = _serving_state(results)
    server = observed.server
    assert rolled_out(server, "v1", 1)
    assert not rolled_out(server, "v2", 1)
    half = copy.deepcopy(server)
    half["status"]["replicas"] = 2  # an old pod still around
    assert not rolled_out(half, "v1", 1)
    stale = copy.deepcopy(server)
    stale["metadata"]["generation"] = 2
    assert not rolled_out(stale, "v1", 1)


def test_lost_status_is_rebuilt_from_the_children(results):
    """A resource restored without status (e.g. from Git) adopts what the Deployment serves."""
    _, observed = _serving_state(results)
    # No record of v1's digest: the engine reads v1's Job again (harvest_needed), which vouches
    # for the stored ConfigMap.
    assert harvest_needed(cr(), observed) == ["v1"]
    p = plan(cr(), observed, {"v1": succeeded(results)}, SETTINGS, T2)
    assert p.status["servingVersion"] == "v1" and p.status["phase"] == "Serving"
    assert p.status["accuracy"] == pytest.approx(0.966667)
    assert not p.create and not p.apply  # no retraining, nothing re-rolled


def test_a_model_too_big_for_a_configmap_is_a_result_not_a_retry(results, monkeypatch):
    message, log = results["rf"]
    outcome = read_outcome("v1", job(), [pod(message)], log=log)
    assert isinstance(outcome, Succeeded)
    size = render.artifact_bytes(outcome.metadata, outcome.model)
    monkeypatch.setattr(harvest, "CONFIGMAP_MAX_BYTES", size - 1)
    too_big = read_outcome("v1", job(), [pod(message)], log=log)
    assert isinstance(too_big, Failed) and too_big.reason == "ArtifactTooLarge"
    assert "ConfigMap" in too_big.message and "set a new modelVersion" in too_big.message
    monkeypatch.setattr(harvest, "CONFIGMAP_MAX_BYTES", size)
    assert isinstance(read_outcome("v1", job(), [pod(message)], log=log), Succeeded)
