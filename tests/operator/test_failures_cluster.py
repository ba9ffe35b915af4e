"""Failures the API server and the controllers report, against a real kube-apiserver and
kube-controller-manager (issue 14): the Deployment controller's progress deadline, the Job
controller's pod failure policy, a child the API server rejects, a trainer pod that cannot
be scheduled. The tests play the kubelet (pod status) as the other integration tests do."""

from __future__ import annotations

import json
import re
import signal
import time
from datetime import UTC, datetime

import pytest

pytestmark = pytest.mark.integration


def stamp():
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def conditions(status):
    return {c["type"]: c for c in status.get("conditions") or []}


def trainer_pods(cluster, name, version):
    job = cluster.job(name, version)
    if job is None:
        return []
    pods = cluster.pods(f"batch.kubernetes.io/controller-uid={job['metadata']['uid']}")
    return sorted(pods, key=lambda p: p["metadata"]["creationTimestamp"] + p["metadata"]["name"])


def end_trainer(cluster, pod, exit_code, reason, message=""):
    """Terminate one trainer pod the way the kubelet reports it."""
    now = stamp()
    container = {
        "name": "trainer",
        "image": pod["spec"]["containers"][0]["image"],
        "imageID": "",
        "ready": False,
        "restartCount": 0,
        "started": False,
        "state": {
            "terminated": {
                "exitCode": exit_code,
                "reason": reason,
                "message": message,
                "startedAt": now,
                "finishedAt": now,
            }
        },
    }
    cluster.patch_pod_status(
        pod["metadata"]["name"],
        {
            "phase": "Succeeded" if exit_code == 0 else "Failed",
            "startTime": now,
            "containerStatuses": [container],
        },
    )


def job_conditions(cluster, name, version="v1"):
    job = cluster.job(name, version) or {}
    return {c["type"] for c in (job.get("status") or {}).get("conditions") or []}


def api_requests(operator, verb, code):
    pattern = rf'modelops_api_requests_total{{code="{code}",verb="{verb}"}} ([0-9.e+]+)'
    found = re.search(pattern, operator.metrics())
    return float(found.group(1)) if found else 0.0


def test_rollout_that_never_gets_ready_is_degraded_by_its_deadline(
    cluster, operator, trained, wait
):
    cluster.create_md(
        "stuck", {"modelVersion": "v1", "replicas": 1, "serving": {"progressDeadlineSeconds": 10}}
    )
    cluster.finish_trainer("stuck", "v1", trained("v1"))
    wait(lambda: cluster.deployment("stuck-server"), 30, "server Deployment")
    cluster.serve("stuck", "v1")
    cluster.patch_md("stuck", {"modelVersion": "v2"})
    cluster.finish_trainer("stuck", "v2", trained("v2"))
    # The new version's pod crash-loops (as the kubelet reports it); the old one stays ready.
    selector = "modelops.dev/name=stuck,app.kubernetes.io/component=server,modelops.dev/version=v2"
    (new,) = wait(lambda: cluster.pods(selector), 30, "a server pod of v2")
    rolled = time.monotonic()
    now = stamp()
    cluster.patch_pod_status(
        new["metadata"]["name"],
        {
            "phase": "Running",
            "conditions": [{"type": "Ready", "status": "False", "lastTransitionTime": now}],
            "containerStatuses": [
                {
                    "name": "server",
                    "image": new["spec"]["containers"][0]["image"],
                    "imageID": "",
                    "ready": False,
                    "started": False,
                    "restartCount": 4,
                    "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off"}},
                    "lastState": {
                        "terminated": {
                            "exitCode": 3,
                            "reason": "Error",
                            "startedAt": now,
                            "finishedAt": now,
                        }
                    },
                }
            ],
        },
    )

    def degraded():
        status = cluster.status("stuck")
        return status if status.get("phase") == "Degraded" else None

    status = wait(degraded, 60, "phase Degraded")
    reported = time.monotonic() - rolled
    cond = conditions(status)["Degraded"]
    assert cond["reason"] == "ProgressDeadlineExceeded"
    assert "within spec.serving.progressDeadlineSeconds (10s)" in cond["message"]
    assert "keeps exiting (Error, exit code 3)" in cond["message"]
    assert "still serving v1" in cond["message"]
    assert status["servingVersion"] == "v1"
    assert conditions(status)["Progressing"]["reason"] == "ProgressDeadlineExceeded"
    # The pods of v1 keep serving: the Deployment never took them down.
    old = cluster.pods("modelops.dev/name=stuck,modelops.dev/version=v1")
    assert [p for p in old if not p["metadata"].get("deletionTimestamp")]
    warnings = cluster.posted("stuck", "RolloutStalled")
    assert len(warnings) == 1 and warnings[0]["type"] == "Warning"
    # Deadline 10 s; the Deployment controller and the operator add little on top.
    print(f"stuck rollout reported {reported:.1f}s after the new pod appeared (deadline 10s)")
    assert reported < 45


def test_child_the_api_server_rejects_is_reported_at_once_without_retries(cluster, operator, wait):
    # The schema lets any quantities through; the API server refuses requests above limits.
    bad = {"requests": {"cpu": "100m", "memory": "2Gi"}, "limits": {"cpu": "1", "memory": "1Gi"}}
    cluster.create_md("refused", {"modelVersion": "v1", "training": {"resources": bad}})

    def reported():
        status = cluster.status("refused")
        return status if conditions(status).get("Degraded", {}).get("status") == "True" else None

    status = wait(reported, 20, "the rejection in the status")
    cond = conditions(status)["Degraded"]
    assert status["phase"] == "Failed" and cond["reason"] == "ChildRejected"
    assert cond["message"].startswith("the API server rejected Job refused-train-v1: ")
    assert "must be less than or equal to memory limit" in cond["message"]
    assert conditions(status)["Trained"]["reason"] == "ChildRejected"
    assert cluster.job("refused", "v1") is None
    # No retry storm: the rejected create is not tried again until something changes. The
    # watch events of the pass's own writes (its other children) may bring one more pass at
    # once (a fresh-clone run saw it 0.12 s later); let them settle, then nothing more.
    time.sleep(2)
    first = api_requests(operator, "POST", 422)
    assert 1 <= first <= 3
    time.sleep(5)
    assert api_requests(operator, "POST", 422) == first
    events = cluster.events("refused")
    assert [e["reason"] for e in events if e["type"] == "Warning"] == ["ChildRejected"]
    assert not [e for e in events if e["reason"] == "TrainingStarted"]
    # Fixed spec → trains, and the condition clears.
    good = {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"memory": "1Gi"}}
    cluster.patch_md("refused", {"training": {"resources": good}})
    wait(lambda: cluster.job("refused", "v1"), 30, "the trainer Job")
    wait(
        lambda: conditions(cluster.status("refused"))["Degraded"]["status"] == "False",
        20,
        "Degraded cleared",
    )


def test_deleted_trainer_pod_is_run_again_not_recorded_as_failed(cluster, operator, trained, wait):
    cluster.create_md("disrupted", {"modelVersion": "v1"})
    (first,) = wait(lambda: trainer_pods(cluster, "disrupted", "v1"), 30, "trainer pod")
    # The pod was deleted: the trainer stopped on SIGTERM with its distinct exit code.
    end_trainer(cluster, first, 143, "Error")
    pods = wait(
        lambda: (p := trainer_pods(cluster, "disrupted", "v1")) and len(p) == 2 and p,
        30,
        "the Job's replacement pod",
    )
    job = cluster.job("disrupted", "v1")
    assert not [c for c in job["status"].get("conditions") or [] if c["type"] == "Failed"]
    status = cluster.status("disrupted")
    assert status["phase"] == "Training" and not status.get("history")
    replacement = next(p for p in pods if p["metadata"]["name"] != first["metadata"]["name"])
    end_trainer(cluster, replacement, 0, "Completed", trained("v1"))
    wait(lambda: cluster.deployment("disrupted-server"), 30, "server Deployment")
    status = cluster.serve("disrupted", "v1")
    assert [h["outcome"] for h in status["history"]] == ["Accepted"]


def test_trainer_pod_deleted_after_it_succeeded_is_trained_again(cluster, operator, trained, wait):
    """The pod succeeded and was deleted (a drain, a hand) before the operator read its result:
    the Job is Complete and its pod gone. The operator runs the training again instead of
    recording a version with no result."""
    cluster.create_md("lost", {"modelVersion": "v1"})
    (pod,) = wait(lambda: trainer_pods(cluster, "lost", "v1"), 30, "trainer pod")
    first_uid = cluster.job("lost", "v1")["metadata"]["uid"]
    operator.kill(signal.SIGKILL)  # not there to read the result in time
    end_trainer(cluster, pod, 0, "Completed", trained("v1"))
    wait(lambda: "Complete" in job_conditions(cluster, "lost"), 30, "the Job Complete")
    cluster.kubectl("delete", "pod", pod["metadata"]["name"], "-n", cluster.ns, "--wait=true")
    operator.start()

    def rerun():
        job = cluster.job("lost", "v1")
        return job if job and job["metadata"]["uid"] != first_uid else None

    second_uid = wait(rerun, 30, "the trainer Job run again")["metadata"]["uid"]

    # A pass writes its children before its status: the new Job can be seen a moment before
    # the status that counts it (CI read trainingRuns 1 in that gap).
    def counted():
        status = cluster.status("lost")
        return status if status.get("trainingRuns") == 2 else None

    status = wait(counted, 20, "status.trainingRuns 2")
    assert status["phase"] == "Training" and not status.get("history"), status
    trained_message = conditions(status)["Trained"]["message"]
    assert "(run 2 of 3: the result of the run before was lost" in trained_message
    (warning,) = [e for e in cluster.events("lost") if e["type"] == "Warning"]
    assert warning["reason"] == "TrainerDisrupted"
    assert "before the operator read its result" in warning["message"]
    assert "training v1 again (run 2 of 3)" in warning["message"]
    cluster.finish_trainer("lost", "v1", trained("v1"))
    status = wait(lambda: cluster.status("lost").get("history"), 30, "the version gated")
    assert [h["outcome"] for h in status] == ["Accepted"]
    assert [j["metadata"]["uid"] for j in cluster.jobs("lost")] == [second_uid]


def test_oom_killed_trainer_fails_at_once_naming_its_memory_limit(cluster, operator, wait):
    limits = {"requests": {"memory": "64Mi"}, "limits": {"memory": "96Mi"}}
    cluster.create_md("oom", {"modelVersion": "v1", "training": {"resources": limits}})
    (pod,) = wait(lambda: trainer_pods(cluster, "oom", "v1"), 30, "trainer pod")
    end_trainer(cluster, pod, 137, "OOMKilled", "loading the data set\n")

    def failed():
        status = cluster.status("oom")
        return status if status.get("phase") == "Failed" else None

    status = wait(failed, 30, "phase Failed")
    entry = status["history"][0]
    assert entry["outcome"] == "Failed" and entry["reason"] == "OOMKilled"
    assert "memory limit of 96Mi" in entry["message"]
    assert "spec.training.resources.limits.memory" in entry["message"]
    # Not retried: the Job failed by its pod failure policy, with one pod.
    job = cluster.job("oom", "v1")
    failed_cond = next(c for c in job["status"]["conditions"] if c["type"] == "Failed")
    assert failed_cond["reason"] == "PodFailurePolicy"
    assert len(trainer_pods(cluster, "oom", "v1")) == 1


def test_unschedulable_trainer_says_so(cluster, operator, wait):
    cluster.create_md("unplaced", {"modelVersion": "v1"})
    (pod,) = wait(lambda: trainer_pods(cluster, "unplaced", "v1"), 30, "trainer pod")
    why = "0/1 nodes are available: 1 Insufficient memory. preemption: not eligible."
    cluster.patch_pod_status(
        pod["metadata"]["name"],
        {
            "phase": "Pending",
            "conditions": [
                {
                    "type": "PodScheduled",
                    "status": "False",
                    "reason": "Unschedulable",
                    "message": why,
                    "lastTransitionTime": stamp(),
                }
            ],
        },
    )

    def said():
        trained = conditions(cluster.status("unplaced")).get("Trained", {})
        return trained if trained.get("reason") == "Unschedulable" else None

    trained = wait(said, 20, "the Trained condition naming the scheduler's message")
    # The scheduler may restate the pod's condition (its own words) before the operator reads it.
    assert "cannot be scheduled: 0/1 nodes are available" in trained["message"]
    assert "timeoutSeconds (600s)" in trained["message"]
    assert cluster.status("unplaced")["phase"] == "Training"
    print(json.dumps(trained))
