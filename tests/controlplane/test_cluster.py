"""The control plane is a real Kubernetes: schema validation, controllers, GC, RBAC, kwok nodes."""

from __future__ import annotations

import json
import subprocess
import time
from typing import Any

import pytest

from modelops_testenv import K8S_VERSION, KWOK_TOLERATION, ControlPlane, thirdparty
from modelops_testenv.process import wait_until
from modelops_testenv.pytest_plugin import Kubectl

pytestmark = pytest.mark.integration

IMAGE = "example.invalid/app:1"  # never pulled: there is no kubelet, kwok fakes the pods


def get_json(kubectl: Kubectl, *args: str) -> Any:
    return json.loads(kubectl("get", *args, "-o", "json"))


def wait_established(kubectl: Kubectl, crd: str) -> None:
    """``kubectl wait`` for the CRD; retried, because kubectl 1.32's wait errors out (instead of
    waiting) while a just-created CRD has no ``status.conditions`` yet."""
    wait_until(
        lambda: (
            kubectl.run(
                "wait", "--for=condition=Established", f"crd/{crd}", "--timeout=30s"
            ).returncode
            == 0
        ),
        60,
        f"CRD {crd} Established",
        interval=0.2,
    )


@pytest.fixture(scope="module")
def application_crd(control_plane: ControlPlane) -> str:
    """Argo CD's Application CRD (~400 KB: too large for client-side apply's annotation)."""
    path = thirdparty.crd("argocd-application-crd.yaml")
    control_plane.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(path))
    name = "applications.argoproj.io"
    wait_established(Kubectl(control_plane), name)
    return name


def application(name: str, **spec: Any) -> str:
    return json.dumps(
        {
            "apiVersion": "argoproj.io/v1alpha1",
            "kind": "Application",
            "metadata": {"name": name},
            "spec": spec,
        }
    )


VALID_SPEC: dict[str, Any] = {
    "project": "default",
    "destination": {"server": "https://kubernetes.default.svc", "namespace": "models"},
    "source": {"repoURL": "https://git.example.invalid/models.git", "path": "deploy"},
}


def test_api_server_reports_the_pinned_version(control_plane: ControlPlane, kubectl: Kubectl):
    status, version = control_plane.request("GET", "/version")
    assert status == 200
    assert version["gitVersion"] == K8S_VERSION
    assert kubectl("get", "--raw", "/readyz") == "ok"
    assert "[+]etcd ok" in kubectl("get", "--raw", "/readyz?verbose")


def test_third_party_crd_objects_can_be_created_and_listed(
    application_crd: str, kubectl: Kubectl, namespace: str
):
    for name in ("iris", "wine"):
        kubectl("create", "-n", namespace, "-f", "-", input=application(name, **VALID_SPEC))
    apps = get_json(kubectl, "applications.argoproj.io", "-n", namespace)
    assert sorted(a["metadata"]["name"] for a in apps["items"]) == ["iris", "wine"]
    assert apps["items"][0]["spec"]["destination"]["namespace"] == "models"

    # A second CRD, created the plain way (small enough for client-side apply too).
    crd = thirdparty.crd("monitoring.coreos.com_servicemonitors.yaml")
    kubectl("apply", "--server-side", "--force-conflicts", "-f", str(crd))
    wait_established(kubectl, "servicemonitors.monitoring.coreos.com")
    monitor = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": {"name": "server"},
        "spec": {"selector": {"matchLabels": {"app": "server"}}, "endpoints": [{"port": "http"}]},
    }
    kubectl("create", "-n", namespace, "-f", "-", input=json.dumps(monitor))
    assert get_json(kubectl, "servicemonitor", "server", "-n", namespace)["spec"]["endpoints"]


def test_schema_validation_rejects_invalid_objects(
    application_crd: str, kubectl: Kubectl, namespace: str
):
    missing_project = {k: v for k, v in VALID_SPEC.items() if k != "project"}
    cases = {
        "missing required field": (application("a", **missing_project), "spec.project"),
        "wrong type": (
            application("b", **VALID_SPEC, revisionHistoryLimit="many"),
            "must be of type integer",
        ),
        "unknown field": (application("c", **VALID_SPEC, bogus=True), 'unknown field "spec.bogus"'),
    }
    for case, (manifest, message) in cases.items():
        proc = kubectl.run("create", "-n", namespace, "-f", "-", input=manifest)
        assert proc.returncode != 0, case
        assert message in proc.stderr, (case, proc.stderr)
    # Built-in types are validated too.
    proc = kubectl.run("create", "deployment", "bad", f"--image={IMAGE}", "--replicas=-1")
    assert proc.returncode != 0
    assert get_json(kubectl, "applications.argoproj.io", "-n", namespace)["items"] == []


def test_deployment_gets_a_replicaset(
    control_plane: ControlPlane, kubectl: Kubectl, namespace: str
):
    kubectl("create", "deployment", "web", f"--image={IMAGE}", "--replicas=2", "-n", namespace)

    def owned_replicaset() -> bool:
        rs = get_json(kubectl, "replicasets", "-n", namespace, "-l", "app=web")["items"]
        return any(
            ref["kind"] == "Deployment" and ref["name"] == "web"
            for r in rs
            for ref in r["metadata"].get("ownerReferences", [])
        )

    wait_until(owned_replicaset, 30, "a ReplicaSet owned by deployment/web")
    # The ReplicaSet controller creates the pods (they stay Pending without nodes).
    wait_until(
        lambda: len(get_json(kubectl, "pods", "-n", namespace, "-l", "app=web")["items"]) == 2,
        30,
        "2 pods of deployment/web",
    )


def test_with_kwok_deployment_becomes_available_and_job_completes(
    kwok_nodes: list[str], kubectl: Kubectl, namespace: str
):
    # The fake nodes are tainted (see ControlPlane.start_nodes): these pods tolerate it.
    pod_spec = {
        "containers": [{"name": "app", "image": IMAGE}],
        "tolerations": [KWOK_TOLERATION],
    }
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": namespace},
        "spec": {
            "replicas": 3,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}}, "spec": pod_spec},
        },
    }
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "once", "namespace": namespace},
        "spec": {"template": {"spec": {**pod_spec, "restartPolicy": "Never"}}},
    }
    for manifest in (deployment, job):
        kubectl("create", "-f", "-", input=json.dumps(manifest))
    kubectl("wait", "-n", namespace, "--for=condition=Available", "deployment/web", "--timeout=90s")
    kubectl("wait", "-n", namespace, "--for=condition=Complete", "job/once", "--timeout=90s")

    pods = get_json(kubectl, "pods", "-n", namespace, "-l", "app=web")["items"]
    assert len(pods) == 3
    for pod in pods:
        assert pod["spec"]["nodeName"] in kwok_nodes
        ready = {c["type"]: c["status"] for c in pod["status"]["conditions"]}
        assert ready["Ready"] == "True"
        assert pod["status"]["phase"] == "Running"
    job = get_json(kubectl, "job", "once", "-n", namespace)
    assert job["status"]["succeeded"] == 1


def test_pods_without_the_toleration_stay_off_the_fake_nodes(
    kwok_nodes: list[str], kubectl: Kubectl, namespace: str
):
    # Tests that play the kubelet themselves (the operator's) rely on this: kwok would
    # otherwise complete their Job pods with an empty termination message.
    kubectl("create", "job", "untouched", f"--image={IMAGE}", "-n", namespace)

    def pods() -> list[dict[str, Any]]:
        return list(get_json(kubectl, "pods", "-n", namespace, "-l", "job-name=untouched")["items"])

    wait_until(lambda: bool(pods()), 30, "the Job's pod")
    time.sleep(3)  # give the scheduler and kwok time to (wrongly) act
    pod = pods()[0]
    assert not pod["spec"].get("nodeName")
    assert pod["status"]["phase"] == "Pending"


def test_deleting_an_owner_garbage_collects_dependents(
    control_plane: ControlPlane, kubectl: Kubectl, namespace: str
):
    kubectl("create", "configmap", "owner", "--from-literal=k=v", "-n", namespace)
    uid = get_json(kubectl, "configmap", "owner", "-n", namespace)["metadata"]["uid"]
    dependent = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": "dependent",
            "ownerReferences": [
                {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": uid}
            ],
        },
        "data": {"k": "v"},
    }
    kubectl("create", "-n", namespace, "-f", "-", input=json.dumps(dependent))
    kubectl("create", "deployment", "web", f"--image={IMAGE}", "-n", namespace)
    wait_until(
        lambda: bool(get_json(kubectl, "replicasets", "-n", namespace)["items"]), 30, "ReplicaSet"
    )

    kubectl("delete", "configmap", "owner", "-n", namespace)
    kubectl("delete", "deployment", "web", "-n", namespace)  # background propagation
    path = f"/api/v1/namespaces/{namespace}/configmaps/dependent"
    wait_until(lambda: not control_plane.exists(path), 60, "GC of the dependent ConfigMap")
    wait_until(
        lambda: not get_json(kubectl, "replicasets", "-n", namespace)["items"],
        60,
        "GC of the ReplicaSet",
    )


def test_namespace_deletion_completes(control_plane: ControlPlane, kubectl: Kubectl):
    kubectl("create", "namespace", "doomed")
    kubectl("create", "configmap", "c", "--from-literal=k=v", "-n", "doomed")
    kubectl("delete", "namespace", "doomed", "--wait=false")
    wait_until(
        lambda: not control_plane.exists("/api/v1/namespaces/doomed"), 60, "namespace deletion"
    )


def test_rbac_denies_what_a_role_lacks_and_allows_what_it_grants(
    control_plane: ControlPlane, kubectl: Kubectl, namespace: str
):
    ns = ["-n", namespace]
    kubectl("create", "serviceaccount", "reader", *ns)
    kubectl("create", "role", "cm-reader", "--verb=get,list", "--resource=configmaps", *ns)
    kubectl(
        "create",
        "rolebinding",
        "reader",
        "--role=cm-reader",
        f"--serviceaccount={namespace}:reader",
        *ns,
    )
    kubectl("create", "configmap", "settings", "--from-literal=k=v", *ns)
    as_reader = f"--as=system:serviceaccount:{namespace}:reader"

    def can(*what: str) -> bool:
        proc = kubectl.run("auth", "can-i", *what, as_reader, *ns)
        return proc.stdout.strip() == "yes"

    wait_until(lambda: can("list", "configmaps"), 30, "the RoleBinding to take effect")
    assert kubectl("get", "configmap", "settings", "-o", "name", as_reader, *ns).strip() == (
        "configmap/settings"
    )
    for args in (
        ("delete", "configmap", "settings"),
        ("create", "configmap", "other", "--from-literal=k=v"),
        ("get", "secrets"),
        ("get", "pods"),
    ):
        proc = kubectl.run(*args, as_reader, *ns)
        assert proc.returncode != 0, args
        assert "forbidden" in proc.stderr.lower() and "cannot" in proc.stderr, proc.stderr
    assert not can("delete", "configmaps")
    # Other namespaces are out of reach too.
    assert kubectl.run("get", "configmaps", as_reader, "-n", "default").returncode != 0

    # A certificate-authenticated user outside system:masters is subject to RBAC as well.
    user_kubeconfig = control_plane.user_kubeconfig("alice", ["modelops-devs"])
    proc = subprocess.run(
        ["kubectl", "--kubeconfig", str(user_kubeconfig), "get", "configmaps", *ns],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode != 0
    assert 'User "alice" cannot list resource "configmaps"' in proc.stderr
    kubectl("create", "rolebinding", "devs", "--role=cm-reader", "--group=modelops-devs", *ns)
    wait_until(
        lambda: (
            subprocess.run(
                ["kubectl", "--kubeconfig", str(user_kubeconfig), "get", "configmaps", *ns],
                capture_output=True,
                check=False,
            ).returncode
            == 0
        ),
        30,
        "alice's group binding",
    )
