"""What the operator reports when a version cannot proceed for reasons outside the gate
(issue 14): a rollout past its progress deadline, a trainer pod that cannot start, is
disrupted or runs out of memory, and a child the API server rejects (pure planner and the
engine with an in-memory driver; no cluster)."""

from __future__ import annotations

import copy
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from modelops import engine
from modelops.core import render
from modelops.core.harvest import Disrupted, Failed, Succeeded, read_outcome, trainer_stuck
from modelops.core.plan import plan
from modelops.core.state import Observed, Ref
from modelops.settings import Settings

pytestmark = pytest.mark.unit

SETTINGS = Settings()
T0, T1, T2, T3 = (f"2026-01-01T00:0{i}:00Z" for i in range(4))
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


def job(state="Complete", reason=None, uid="j"):
    conditions = [] if state is None else [{"type": state, "status": "True", "reason": reason}]
    return {"metadata": {"name": "iris-train-v1", "uid": uid}, "status": {"conditions": conditions}}


def trainer_pod(terminated=None, waiting=None, conditions=(), limit="1Gi", created=T0):
    state = {"terminated": terminated} if terminated else {"waiting": waiting} if waiting else {}
    return {
        "metadata": {"name": f"iris-train-v1-{created[-5:-3]}", "creationTimestamp": created},
        "spec": {"containers": [{"name": "trainer", "resources": {"limits": {"memory": limit}}}]},
        "status": {
            "conditions": list(conditions),
            "containerStatuses": [{"name": "trainer", "state": state}] if state else [],
        },
    }


@pytest.fixture(scope="module")
def knn(tmp_path_factory):
    """A real trainer result (v1)."""
    tmp = tmp_path_factory.mktemp("train")
    subprocess.run(
        [TRAINER, "train", "--version", "v1", "--output-dir", str(tmp / "m"),
         "--result-file", str(tmp / "r.json"), "--emit-artifact"],
        capture_output=True, timeout=120, check=True,
    )  # fmt: skip
    message = (tmp / "r.json").read_text()
    terminated = {"exitCode": 0, "reason": "Completed", "message": message}
    outcome = read_outcome("v1", job(), [trainer_pod(terminated)])
    assert isinstance(outcome, Succeeded)
    return outcome


def as_version(outcome, version):
    return Succeeded(
        version, outcome.accuracy, {**outcome.metadata, "version": version}, outcome.model
    )


def available(deployment):
    d = copy.deepcopy(deployment)
    n = d["spec"]["replicas"]
    d["metadata"]["generation"] = 1
    d["status"] = {
        "observedGeneration": 1, "replicas": n, "updatedReplicas": n, "readyReplicas": n,
        "availableReplicas": n,
        "conditions": [
            {"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable"}
        ],
    }  # fmt: skip
    return d


def stalled(deployment):
    """The Deployment controller's verdict on a rollout past its progress deadline."""
    d = copy.deepcopy(deployment)
    d["metadata"]["generation"] = 2
    d["status"] = {
        "observedGeneration": 2, "replicas": 2, "updatedReplicas": 1, "readyReplicas": 1,
        "availableReplicas": 1,
        "conditions": [
            {"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable"},
            {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded",
             "message": 'ReplicaSet "iris-server-5d8f" has timed out progressing.'},
        ],
    }  # fmt: skip
    return d


def conditions(status):
    return {c["type"]: c for c in status["conditions"]}


def serving_v1(knn):
    """Status and children of iris serving v1."""
    p1 = plan(cr(), Observed(jobs={"v1": job()}), {"v1": knn}, SETTINGS, T0)
    applied = {m["metadata"]["name"]: m for m in p1.apply}
    observed = Observed(
        jobs={"v1": job()},
        artifacts={"v1": p1.create[0]},
        server=available(applied["iris-server"]),
        service=applied["iris"],
    )
    p2 = plan(cr(status=p1.status), observed, {}, SETTINGS, T1)
    assert p2.status["phase"] == "Serving"
    # The load generator starts once a version serves.
    loadgen = next(m for m in p2.apply if m["metadata"]["name"] == "iris-loadgen")
    return p2.status, replace(observed, loadgen=loadgen)


# A rollout that never becomes ready ---------------------------------------------------------


def test_stalled_rollout_is_degraded_with_the_reason_and_the_old_version_serving(knn):
    status, observed = serving_v1(knn)
    v2 = as_version(knn, "v2")
    cm2 = render.artifact_configmap(cr("v2"), "v2", v2.metadata, v2.model)
    both = {"v1": job(), "v2": job()}
    rolling = plan(
        cr("v2", status, 2),
        replace(observed, jobs=both, artifacts={**observed.artifacts, "v2": cm2}),
        {"v2": v2},
        SETTINGS,
        T2,
    )  # fmt: skip
    assert rolling.status["phase"] == "RollingOut"
    server = next(m for m in rolling.apply if m["metadata"]["name"] == "iris-server")
    crashing = trainer_pod()  # the shape of a pod; made a crash-looping server of v2 below
    crashing["metadata"] = {"name": "iris-server-5d8f-x1", "labels": {"modelops.dev/version": "v2"}}
    crashing["status"] = {
        "phase": "Running",
        "conditions": [{"type": "Ready", "status": "False"}],
        "containerStatuses": [
            {
                "name": "server",
                "ready": False,
                "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 40s"}},
                "lastState": {"terminated": {"reason": "Error", "exitCode": 3}},
            }
        ],
    }
    stuck = replace(
        observed,
        jobs=both,
        artifacts={**observed.artifacts, "v2": cm2},
        server=stalled(server),
        server_pods=(crashing,),
    )
    p = plan(cr("v2", rolling.status, 2), stuck, {}, SETTINGS, T3)
    assert p.status["phase"] == "Degraded" and p.status["servingVersion"] == "v1"
    degraded = conditions(p.status)["Degraded"]
    assert degraded["status"] == "True" and degraded["reason"] == "ProgressDeadlineExceeded"
    assert "progressDeadlineSeconds (300s)" in degraded["message"]
    assert "CrashLoopBackOff" not in degraded["message"]  # said in words:
    assert "keeps exiting (Error, exit code 3)" in degraded["message"]
    assert "still serving v1" in degraded["message"]
    progressing = conditions(p.status)["Progressing"]
    assert progressing["status"] == "False" and progressing["reason"] == "ProgressDeadlineExceeded"
    assert [(e.type, e.reason) for e in p.events] == [("Warning", "RolloutStalled")]
    assert not p.apply  # the Deployment keeps the template of v2: fixing the spec rolls on
    # Reported once: the next pass writes nothing.
    again = plan(cr("v2", p.status, 2), stuck, {}, SETTINGS, T3)
    assert again.writes == 0
    # Without the pods' detail the Deployment controller's message is shown.
    bare = plan(
        cr("v2", rolling.status, 2),
        replace(stuck, server_pods=()),
        {},
        SETTINGS,
        T3,
    )
    assert "has timed out progressing" in conditions(bare.status)["Degraded"]["message"]


def test_first_version_that_never_gets_ready_is_failed(knn):
    p1 = plan(cr(), Observed(jobs={"v1": job()}), {"v1": knn}, SETTINGS, T0)
    applied = {m["metadata"]["name"]: m for m in p1.apply}
    obs = Observed(
        jobs={"v1": job()},
        artifacts={"v1": p1.create[0]},
        server=stalled(applied["iris-server"]),
        service=applied["iris"],
        loadgen=applied.get("iris-loadgen"),  # starts once a version serves
    )
    p = plan(cr(status=p1.status), obs, {}, SETTINGS, T1)
    assert p.status["phase"] == "Failed" and "servingVersion" not in p.status
    assert conditions(p.status)["Degraded"]["reason"] == "ProgressDeadlineExceeded"


# Trainer pods -------------------------------------------------------------------------------


def test_oom_killed_trainer_names_the_memory_limit():
    killed = trainer_pod(
        {"exitCode": 137, "reason": "OOMKilled", "message": "loading\n"}, limit="64Mi"
    )
    outcome = read_outcome("v1", job("Failed", "PodFailurePolicy"), [killed])
    assert isinstance(outcome, Failed) and outcome.reason == "OOMKilled"
    assert "memory limit of 64Mi" in outcome.message
    assert "spec.training.resources.limits.memory" in outcome.message


def test_trainer_deleted_until_the_retries_run_out_is_a_disruption():
    deleted = trainer_pod({"exitCode": 143, "reason": "Error", "message": ""})
    outcome = read_outcome("v1", job("Failed", "BackoffLimitExceeded"), [deleted])
    assert isinstance(outcome, Failed) and outcome.reason == "TrainerDisrupted"
    assert "deleted before training finished" in outcome.message
    # A real crash under the same Job reason is still a crash.
    crashed = trainer_pod({"exitCode": 1, "reason": "Error", "message": "Traceback\n"})
    outcome = read_outcome("v1", job("Failed", "BackoffLimitExceeded"), [crashed])
    assert isinstance(outcome, Failed) and outcome.reason == "TrainerCrashed"


def test_a_result_lost_to_a_disruption_is_not_a_failure():
    # The pod succeeded, then was evicted or deleted before the operator read it: the Job
    # completed, and its pods (but the deleted ones that did not succeed) are gone.
    deleted = trainer_pod({"exitCode": 143, "reason": "Error", "message": ""})
    for pods in ([], [deleted]):
        lost = read_outcome("v1", job(), pods)
        assert isinstance(lost, Disrupted), lost
        assert "deleted (evicted, drained or removed by hand) before" in lost.message
    # The pod that succeeded is there but said nothing: the image, not the cluster.
    mute = trainer_pod({"exitCode": 0, "reason": "Completed", "message": ""})
    empty = read_outcome("v1", job(), [deleted, mute])
    assert isinstance(empty, Failed) and empty.reason == "NoResult"


def test_a_trainer_killed_before_it_could_stop_is_a_disruption():
    """A pod deleted before its container started (the kubelet reports it as
    ContainerStatusUnknown, 137), or before the trainer installed its SIGTERM handler (killed
    at the end of the grace period): the pod failure policy fails the Job on 137, but it is
    the cluster's doing; only the OOM killer's 137 is the version's."""
    for reason in ("ContainerStatusUnknown", "Error"):
        killed = trainer_pod({"exitCode": 137, "reason": reason, "message": "x\n"})
        outcome = read_outcome("v1", job("Failed", "PodFailurePolicy"), [killed])
        assert isinstance(outcome, Disrupted), outcome
        assert f"({reason}, exit code 137; not out of memory)" in outcome.message
    oom = trainer_pod({"exitCode": 137, "reason": "OOMKilled", "message": ""})
    outcome = read_outcome("v1", job("Failed", "PodFailurePolicy"), [oom])
    assert isinstance(outcome, Failed) and outcome.reason == "OOMKilled"
    # At the deadline the kubelet kills too: that is the deadline's failure.
    late = read_outcome("v1", job("Failed", "DeadlineExceeded"), [killed])
    assert isinstance(late, Failed) and late.reason == "DeadlineExceeded"


def trained(status):
    return conditions(status)["Trained"]


def test_a_lost_result_is_trained_again_up_to_three_runs(knn):
    lost = Disrupted("v1", "the trainer pod of v1 succeeded but was deleted")
    p1 = plan(cr(), Observed(), {}, SETTINGS, T0)
    assert p1.status["trainingRuns"] == 1
    status = p1.status
    for run in (1, 2):
        finished = Observed(jobs={"v1": job(uid=f"job-{run}")})
        again = plan(cr(status=status), finished, {"v1": lost}, SETTINGS, T1)
        # Only that Job (its uid): a new one created meanwhile under its name stays.
        assert again.delete == [Ref("batch/v1", "Job", "iris-train-v1", f"job-{run}")]
        assert not again.create and not again.status.get("history")
        assert again.status["phase"] == "Training" and again.status["trainingRuns"] == run
        assert trained(again.status)["message"] == f"training v1 again: {lost.message}"
        assert [(e.type, e.reason) for e in again.events] == [("Warning", "TrainerDisrupted")]
        assert f"training v1 again (run {run + 1} of 3)" in again.events[0].message
        # The Job gone: the next pass starts the next run.
        rerun = plan(cr(status=again.status), Observed(), {}, SETTINGS, T2)
        assert [m["kind"] for m in rerun.create] == ["Job"]
        assert rerun.status["trainingRuns"] == run + 1
        why = trained(rerun.status)["message"]
        assert f"(run {run + 1} of 3: the result of the run before was lost" in why
        status = rerun.status
    # The third run lost too: the version fails, saying so; nothing is deleted or created.
    last = plan(cr(status=status), Observed(jobs={"v1": job()}), {"v1": lost}, SETTINGS, T3)
    assert not last.delete and not last.create
    entry = last.status["history"][0]
    assert entry["outcome"] == "Failed" and entry["reason"] == "TrainerDisrupted"
    assert "all 3 runs of v1 were disrupted" in entry["message"]
    assert last.status["phase"] == "Failed" and last.status["trainingRuns"] == 3
    # A new version counts its own runs.
    v2 = plan(cr("v2", status=last.status, generation=2), Observed(), {}, SETTINGS, T3)
    assert v2.status["trainingRuns"] == 1


def test_a_lost_result_of_a_decided_version_is_not_trained_again(knn):
    status, observed = serving_v1(knn)
    lost = Disrupted("v1", "gone")
    p = plan(cr(status=status), observed, {"v1": lost}, SETTINGS, T2)
    assert not p.delete and not p.create and p.status["phase"] == "Serving"


def test_a_replaced_trainer_pod_is_not_a_result(knn):
    """The Job ran a new pod after a disruption: while it runs there is no outcome, and the
    newest terminated pod is the one read once the Job completes."""
    gone = trainer_pod({"exitCode": 143, "reason": "Error", "message": ""}, created=T0)
    assert read_outcome("v1", job(None), [gone]) is None
    assert trainer_stuck([gone]) is None


def test_unschedulable_trainer_says_so_while_it_waits_and_when_the_deadline_passes():
    unscheduled = trainer_pod(
        conditions=[{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                     "message": "0/1 nodes are available: 1 Insufficient memory."}]
    )  # fmt: skip
    assert trainer_stuck([unscheduled])[0] == "Unschedulable"
    obs = Observed(jobs={"v1": job(None)}, training_pods=(unscheduled,))
    p = plan(cr(), obs, {}, SETTINGS, T0)
    trained = conditions(p.status)["Trained"]
    assert p.status["phase"] == "Training"
    assert trained["reason"] == "Unschedulable"
    assert (
        "cannot be scheduled: 0/1 nodes are available: 1 Insufficient memory;" in trained["message"]
    )
    assert "timeoutSeconds (600s)" in trained["message"]
    # At its deadline the Job deletes the pod before it reports Failed: nothing changes then.
    gone = plan(cr(status=p.status), Observed(jobs={"v1": job(None)}), {}, SETTINGS, T1)
    assert not gone.status_changed
    # The Job's deadline passes: the failure says the pod never started, not "ran longer".
    late = Failed("v1", "DeadlineExceeded", "training of v1 ran longer than ...")
    done = plan(
        cr(status=p.status),
        Observed(jobs={"v1": job("Failed", "DeadlineExceeded")}),
        {"v1": late},
        SETTINGS,
        T1,
    )
    entry = done.status["history"][0]
    assert entry["outcome"] == "Failed" and entry["reason"] == "Unschedulable"
    assert "never started within spec.training.timeoutSeconds" in entry["message"]
    assert "Insufficient memory" in entry["message"]
    assert done.status["phase"] == "Failed"
    # Read from the pod itself when the Job's pods are still there at the deadline.
    direct = read_outcome("v1", job("Failed", "DeadlineExceeded"), [unscheduled])
    assert isinstance(direct, Failed) and direct.reason == "Unschedulable"
    assert "never started" in direct.message and "Insufficient memory" in direct.message


def test_trainer_image_that_cannot_be_pulled_is_named():
    pulling = trainer_pod(
        waiting={"reason": "ImagePullBackOff", "message": 'Back-off pulling image "x"'}
    )
    reason, message = trainer_stuck([pulling])
    assert reason == "ImagePullBackOff" and 'pulling image "x"' in message
    assert trainer_stuck([trainer_pod(waiting={"reason": "ContainerCreating"})]) is None


# Children the API server rejects ------------------------------------------------------------


class Driver:
    """In-memory driver: the engine's writes, with the API server refusing some kinds."""

    def __init__(self, cr, observed, refuse=()):
        self.settings = SETTINGS
        self.cr, self.observed, self.refuse = cr, observed, set(refuse)
        self.writes: list[tuple[str, str]] = []
        self.events: list[str] = []

    def read(self, namespace, name):
        return self.cr, self.observed

    def trainer_pods(self, cr, version, job):
        return []

    def trainer_log(self, cr, version, pod):
        return ""

    def _write(self, verb, kind, name):
        if kind in self.refuse:
            raise engine.Rejected(
                kind, name, f'{kind} "{name}" is invalid: requests must be <= limits'
            )
        self.writes.append((verb, name))

    def create(self, cr, manifest):
        self._write("create", manifest["kind"], manifest["metadata"]["name"])

    def apply(self, cr, manifest):
        self._write("apply", manifest["kind"], manifest["metadata"]["name"])

    def delete(self, cr, ref):
        self._write("delete", ref.kind, ref.name)

    def save_status(self, cr, status):
        self.writes.append(("status", status["phase"]))
        self.cr = {**cr, "status": status}

    def emit(self, cr, event):
        self.events.append(event.reason)


def test_rejected_trainer_job_is_reported_at_once_and_not_retried():
    driver = Driver(cr(), Observed(), refuse={"Job"})
    engine.reconcile(driver, "ml", "iris")
    status = driver.cr["status"]
    assert status["phase"] == "Failed"
    degraded = conditions(status)["Degraded"]
    assert degraded["status"] == "True" and degraded["reason"] == "ChildRejected"
    assert (
        'the API server rejected Job iris-train-v1: Job "iris-train-v1" is invalid'
        in degraded["message"]
    )
    assert conditions(status)["Trained"]["reason"] == "ChildRejected"
    assert conditions(status)["Progressing"]["status"] == "False"
    # No "training started" for a Job that does not exist; one Warning instead.
    assert driver.events == ["ChildRejected"]
    assert ("apply", "iris") in driver.writes  # the rest of the pass went on
    # The next pass (resync) tries the Job once more and writes no status and no event.
    driver.writes.clear()
    driver.events.clear()
    engine.reconcile(driver, "ml", "iris")
    assert driver.events == [] and not any(w[0] == "status" for w in driver.writes)


def test_rejected_server_keeps_the_old_version_serving(knn):
    status, observed = serving_v1(knn)
    v2 = as_version(knn, "v2")
    driver = Driver(
        cr("v2", status, 2),
        replace(observed, jobs={"v1": job(), "v2": job()}),
        refuse={"Deployment"},
    )
    driver.trainer_pods = lambda cr, version, job: []
    outcomes = {"v2": v2}
    result = plan(driver.cr, driver.observed, outcomes, SETTINGS, T2)
    engine.carry_out(driver, driver.cr, result, T2)
    saved = driver.cr["status"]
    assert saved["phase"] == "Degraded" and saved["servingVersion"] == "v1"
    assert conditions(saved)["Degraded"]["reason"] == "ChildRejected"
    assert "Deployment iris-server" in conditions(saved)["Degraded"]["message"]
    # The gate's verdict and the stored artifact are kept and told.
    assert saved["history"][0]["version"] == "v2" and saved["history"][0]["outcome"] == "Accepted"
    assert driver.events == ["ArtifactStored", "GateAccepted", "ChildRejected"]
    # Once the spec no longer produces a rejected child, the condition clears.
    stored = next(m for m in result.create if m["kind"] == "ConfigMap")
    artifacts = {**driver.observed.artifacts, "v2": stored}
    driver.observed = replace(driver.observed, artifacts=artifacts)
    driver.refuse.clear()
    engine.reconcile(driver, "ml", "iris")
    assert driver.cr["status"]["phase"] == "RollingOut"
    assert conditions(driver.cr["status"])["Degraded"]["status"] == "False"
