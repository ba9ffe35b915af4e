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
    assert job["spec"]["backoffLimit"] == 0
    assert cluster.status("iris")["phase"] in ("Pending", "Training")

    # 2. The Job completes with the trainer's real output.
    message = trained("v1")
    cluster.finish_trainer("iris", "v1", message)
    wait(
        lambda: cluster.deployment("iris-server"), 30, "server Deployment"
    )
    status = cluster.serve("iris", "v1")
    summary = json.loads(message)
    assert status["accuracy"] == pytest.approx(summary["accuracy"])
    assert status["phase"] == "Serving"
    assert status["gate"]["result"] == "Passed" and status["gate"]["reason"] == "FirstVersion"
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
    assert cm["immutable"] is True and "model.joblib" in cm["binaryData"]
    # kubectl's own columns.
    wait(lambda: cluster.status("iris").get("ready") == "2/2", 30, "ready 2/2")
    out = cluster.kubectl("get", "md", "iris", "-n", cluster.ns)
    header, row = out.strip().splitlines()
    assert header.split() == ["NAME", "VERSION", "SERVING", "ACCURACY", "GATE", "READY", "PHASE", "AGE"]
    cells = row.split()
    assert cells[:7] == ["iris", "v1", "v1", str(summary["accuracy"]), "Passed", "2/2", "Serving"]
