"""ModelDeployment lifecycle against a real kube-apiserver + controller-manager, the operator
running as its own ServiceAccount (issue 6, tests 1-4)."""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.integration


def test_create_trains_gates_and_serves(cluster, operator, trained, wait):
    cluster.create_md("iris", {"modelVersion": "v1", "replicas": 2})
    job = wait(lambda: cluster.job("iris", "v1"), 30, "trainer Job")
    # 1. The Job: image, args, security context, owner reference.
    pod = job["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["image"] == "modelops-trainer:test"
    assert container["command"] == ["modelops-trainer"]
    args = container["args"]
    assert args[:3] == ["train", "--version", "v1"]
    assert args[args.index("--result-file") + 1] == "/dev/termination-log"
    assert "--emit-artifact" in args and args[args.index("--algorithm") + 1] == "knn"
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container["resources"]["limits"]["memory"] == "1Gi"
    owner = job["metadata"]["ownerReferences"][0]
    assert owner["kind"] == "ModelDeployment" and owner["name"] == "iris" and owner["controller"]
    assert job["spec"]["podFailurePolicy"]["rules"][1]["action"] == "FailJob"
    # The operator writes the status right after it creates the Job.
    wait(
        lambda: cluster.status("iris").get("phase") in ("Pending", "Training"), 15, "phase Training"
    )

    # 2. The Job completes with the trainer's real output.
    message = trained("v1")
    cluster.finish_trainer("iris", "v1", message)
    wait(lambda: cluster.deployment("iris-server"), 30, "server Deployment")
    status = cluster.serve("iris", "v1")
    summary = json.loads(message)
    assert status["accuracy"] == pytest.approx(summary["accuracy"])
    assert status["phase"] == "Serving"
    assert status["gate"]["result"] == "Accepted" and status["gate"]["reason"] == "FirstVersion"
    assert status["history"][0]["version"] == "v1"
    assert status["history"][0]["outcome"] == "Accepted"
    assert status["history"][0]["servedAt"]
    assert status["observedGeneration"] == cluster.md("iris")["metadata"]["generation"]
    conditions = {c["type"]: c for c in status["conditions"]}
    assert conditions["Trained"]["status"] == "True"
    assert conditions["Accepted"]["status"] == "True"
    assert conditions["Degraded"]["status"] == "False"
    deployment = cluster.deployment("iris-server")
    template = deployment["spec"]["template"]
    assert template["metadata"]["labels"]["modelops.dev/version"] == "v1"
    assert template["spec"]["volumes"][1]["configMap"]["name"] == "iris-model-v1"
    cm = cluster.get(f"/api/v1/namespaces/{cluster.ns}/configmaps/iris-model-v1")
    assert cm["immutable"] is True and "model.params" in cm["binaryData"]
    # kubectl's own columns.
    wait(lambda: cluster.status("iris").get("ready") == "2/2", 30, "ready 2/2")
    out = cluster.kubectl("get", "md", "iris", "-n", cluster.ns)
    header, row = out.strip().splitlines()
    assert header.split() == [
        "NAME",
        "VERSION",
        "SERVING",
        "ACCURACY",
        "GATE",
        "READY",
        "PHASE",
        "STEP",
        "WEIGHT",
        "ANALYSIS",
        "AGE",
    ]
    cells = row.split()
    assert len(cells) == 8  # STEP, WEIGHT, ANALYSIS empty: no Shadow or Canary rollout
    assert cells[:7] == ["iris", "v1", "v1", str(summary["accuracy"]), "Accepted", "2/2", "Serving"]


def _serve_v1(cluster, trained, wait, name="iris", **spec):
    cluster.create_md(name, {"modelVersion": "v1", **spec})
    cluster.finish_trainer(name, "v1", trained("v1"))
    return cluster.serve(name, "v1")


def _warnings(cluster, name, reason):
    return [e for e in cluster.events(name) if e["type"] == "Warning" and e["reason"] == reason]


def test_rejected_versions_keep_the_old_model_then_a_good_one_serves(
    cluster, operator, trained, wait
):
    _serve_v1(cluster, trained, wait)
    server_before = cluster.deployment("iris-server")

    # Worse than the serving model (0.90 < 0.9667) but above minAccuracy: regression.
    cluster.patch_md(
        "iris", {"modelVersion": "v2", "training": {"hyperparameters": {"n_neighbors": 40}}}
    )
    job = wait(lambda: cluster.job("iris", "v2"), 30, "Job v2")
    args = job["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--params-json") + 1] == '{"n_neighbors":40}'
    cluster.finish_trainer("iris", "v2", trained("v2", "--param", "n_neighbors=40"))
    status = wait(
        lambda: (s := cluster.status("iris")).get("phase") == "Degraded" and s, 30, "Degraded"
    )
    assert status["servingVersion"] == "v1"
    assert status["gate"]["result"] == "Rejected"
    assert status["gate"]["reason"] == "RegressionDetected"
    assert "worse than the serving model" in status["gate"]["message"]
    degraded = {c["type"]: c for c in status["conditions"]}["Degraded"]
    assert degraded["status"] == "True" and "still serving v1" in degraded["message"]
    wait(lambda: _warnings(cluster, "iris", "GateRejected"), 15, "Warning event GateRejected")
    server = cluster.deployment("iris-server")
    assert server["spec"]["template"]["metadata"]["labels"]["modelops.dev/version"] == "v1"
    assert server["metadata"]["generation"] == server_before["metadata"]["generation"]

    # Below minAccuracy (0.7667 < 0.85).
    cluster.patch_md(
        "iris",
        {
            "modelVersion": "v3",
            "training": {"algorithm": "logistic_regression", "hyperparameters": {"C": 0.05}},
        },
    )
    cluster.finish_trainer(
        "iris", "v3", trained("v3", "--algorithm", "logistic_regression", "--param", "C=0.05")
    )
    status = wait(
        lambda: (
            (s := cluster.status("iris")).get("gate", {}).get("version") == "v3"
            and s["gate"]["result"] == "Rejected"
            and s
        ),
        30,
        "v3 rejected",
    )
    assert status["gate"]["reason"] == "AccuracyBelowMinimum"
    assert "accuracy 0.7667 is below minAccuracy 0.8500" in status["gate"]["message"]
    assert status["phase"] == "Degraded" and status["servingVersion"] == "v1"
    assert [h["outcome"] for h in status["history"]] == ["Rejected", "Rejected", "Accepted"]

    # A good version serves again (equal accuracy: accepted with a warning).
    cluster.patch_md(
        "iris",
        {
            "modelVersion": "v4",
            "training": {"algorithm": "knn", "hyperparameters": {"n_neighbors": 3}},
        },
    )
    cluster.finish_trainer("iris", "v4", trained("v4", "--param", "n_neighbors=3"))
    status = cluster.serve("iris", "v4")
    assert status["phase"] == "Serving"
    assert status["gate"]["reason"] == "InsignificantImprovement"
    conditions = {c["type"]: c for c in status["conditions"]}
    assert conditions["Degraded"]["status"] == "False"
    server = cluster.deployment("iris-server")
    assert server["spec"]["template"]["metadata"]["labels"]["modelops.dev/version"] == "v4"
    assert server["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 1, "maxUnavailable": 0}


def test_failed_training_is_reported_once_and_not_retried(cluster, operator, trained, wait):
    cluster.create_md(
        "bad", {"modelVersion": "v1", "training": {"hyperparameters": {"n_neighbors": -3}}}
    )
    message = trained("v1", "--params-json", '{"n_neighbors":-3}')
    assert '"status":"Failed"' in message
    cluster.finish_trainer("bad", "v1", message, exit_code=1)
    status = wait(
        lambda: (s := cluster.status("bad")).get("phase") == "Failed" and s, 60, "phase Failed"
    )
    trained_condition = {c["type"]: c for c in status["conditions"]}["Trained"]
    assert trained_condition["status"] == "False"
    assert trained_condition["reason"] == "InvalidParameters"
    assert "n_neighbors" in trained_condition["message"]
    assert status["history"][0]["outcome"] == "Failed"
    wait(lambda: _warnings(cluster, "bad", "TrainingFailed"), 15, "Warning event TrainingFailed")
    assert cluster.deployment("bad-server") is None
    # No retry: one Job, one pod, and the status stays put.
    resource_version = cluster.md("bad")["metadata"]["resourceVersion"]
    import time

    time.sleep(5)
    assert [j["metadata"]["name"] for j in cluster.jobs("bad")] == ["bad-train-v1"]
    assert len(cluster.pods("modelops.dev/name=bad,app.kubernetes.io/component=trainer")) == 1
    assert cluster.md("bad")["metadata"]["resourceVersion"] == resource_version
    assert len(_warnings(cluster, "bad", "TrainingFailed")) == 1


def test_operator_metrics_liveness_and_json_logs(cluster, operator, trained, wait):
    import urllib.request

    cluster.create_md("iris", {"modelVersion": "v1", "minAccuracy": 0.9})
    cluster.finish_trainer("iris", "v1", trained("v1"))
    cluster.serve("iris", "v1")
    labels = f'modeldeployment="iris",namespace="{cluster.ns}"'  # exposition sorts labels

    def exported():
        text = operator.metrics()
        return (f'modelops_modeldeployment_phase{{{labels},phase="Serving"}} 1.0' in text) and text

    text = wait(exported, 30, "phase gauge")
    assert f'modelops_modeldeployment_accuracy{{{labels},version="v1"}} 0.966667' in text
    assert f"modelops_modeldeployment_min_accuracy{{{labels}}} 0.9" in text
    assert 'modelops_reconcile_total{result="changed"}' in text
    assert "modelops_reconcile_duration_seconds_bucket" in text
    url = f"http://127.0.0.1:{operator.health_port}/healthz"
    with urllib.request.urlopen(url, timeout=5) as resp:
        assert resp.status == 200
    lines = [line for line in operator.logs().splitlines() if line.strip()]
    records = [json.loads(line) for line in lines]
    reconciled = [r for r in records if r.get("msg", "").startswith("reconciled")]
    assert reconciled and reconciled[0]["modeldeployment"] == f"{cluster.ns}/iris"
    # Deleting the resource drops its series (bounded label sets).
    cluster.kubectl("delete", "-n", cluster.ns, "md", "iris", "--wait=false")
    wait(lambda: labels not in operator.metrics(), 30, "series removed")


def test_no_finalizer_and_the_one_of_earlier_builds_is_removed(cluster, operator, wait):
    """Deleting a ModelDeployment never waits for the operator: it adds no finalizer, and
    removes modelops.dev/operator, which builds with kopf timers added, from a resource made
    then (an upgrade)."""
    cluster.create_md("fresh", {"modelVersion": "v1"})
    wait(lambda: cluster.job("fresh", "v1"), 30, "trainer Job of fresh")
    assert not cluster.md("fresh")["metadata"].get("finalizers")
    cluster.apply(
        {
            "apiVersion": "modelops.dev/v1alpha1",
            "kind": "ModelDeployment",
            "metadata": {"name": "older", "finalizers": ["modelops.dev/operator"]},
            "spec": {"modelVersion": "v1"},
        }
    )
    wait(lambda: not cluster.md("older")["metadata"].get("finalizers"), 30, "finalizer removed")
    for name in ("fresh", "older"):
        cluster.kubectl("delete", "-n", cluster.ns, "md", name, "--wait=true", "--timeout=30s")
