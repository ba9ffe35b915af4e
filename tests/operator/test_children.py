"""Scaling, load rate, self-healing, deletion and scrape config (issue 6, tests 5, 6, 9)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def _serving(cluster, trained, name="iris", **spec):
    cluster.create_md(name, {"modelVersion": "v1", **spec})
    cluster.finish_trainer(name, "v1", trained("v1"))
    return cluster.serve(name, "v1")


def test_replicas_scale_and_load_rate(cluster, operator, trained, wait):
    _serving(cluster, trained, loadRate=3)
    loadgen = cluster.deployment("iris-loadgen")
    env = {
        e["name"]: e["value"] for e in loadgen["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert env["MODELOPS_LOADGEN_RATE"] == "3" and env["API_HOST"] == "iris"

    cluster.patch_md("iris", {"replicas": 2, "loadRate": 0.5})
    wait(lambda: cluster.deployment("iris-server")["spec"]["replicas"] == 2, 30, "replicas 2")

    def rate():
        d = cluster.deployment("iris-loadgen")
        env = {e["name"]: e["value"] for e in d["spec"]["template"]["spec"]["containers"][0]["env"]}
        return env["MODELOPS_LOADGEN_RATE"]

    wait(lambda: rate() == "0.5", 30, "loadRate 0.5")
    # kubectl scale goes through the scale subresource.
    cluster.kubectl("scale", "-n", cluster.ns, "md/iris", "--replicas=3")
    wait(lambda: cluster.deployment("iris-server")["spec"]["replicas"] == 3, 30, "replicas 3")

    def ready_three():
        cluster.make_servers_ready("iris")
        return cluster.status("iris").get("ready") == "3/3"

    wait(ready_three, 60, "3/3 ready", interval=0.5)
    path = f"/apis/modelops.dev/v1alpha1/namespaces/{cluster.ns}/modeldeployments/iris/scale"
    scale = json.loads(cluster.kubectl("get", "--raw", path))
    assert scale["spec"]["replicas"] == 3 and scale["status"]["replicas"] == 3
    assert (
        scale["status"]["selector"] == "app.kubernetes.io/component=server,modelops.dev/name=iris"
    )

    cluster.patch_md("iris", {"loadRate": 0})
    wait(lambda: cluster.deployment("iris-loadgen") is None, 30, "load generator removed")


def test_children_are_restored_and_deleting_the_cr_removes_everything(
    cluster, operator, trained, wait
):
    _serving(cluster, trained)
    ns = cluster.ns
    # A hand edit of an owned field is put back.
    cluster.kubectl("patch", "-n", ns, "deployment", "iris-server", "--type=merge",
                    "-p", json.dumps({"spec": {"replicas": 5}}))  # fmt: skip
    wait(
        lambda: cluster.deployment("iris-server")["spec"]["replicas"] == 1, 30, "replicas restored"
    )
    edit = '[{"op":"replace","path":"/spec/ports/0/port","value":9999}]'
    cluster.kubectl("patch", "-n", ns, "service", "iris", "--type=json", "-p", edit)

    def port():
        return cluster.get(f"/api/v1/namespaces/{ns}/services/iris")["spec"]["ports"][0]["port"]

    wait(lambda: port() == 8000, 30, "service port restored")
    # Deleted children come back; the artifact is rebuilt from the Job's termination message.
    for kind, name in [("deployment", "iris-server"), ("service", "iris"),
                       ("deployment", "iris-loadgen"), ("configmap", "iris-model-v1")]:  # fmt: skip
        cluster.kubectl("delete", "-n", ns, kind, name, "--wait=false")
    wait(lambda: cluster.deployment("iris-server"), 30, "server Deployment recreated")
    wait(lambda: cluster.get(f"/api/v1/namespaces/{ns}/services/iris"), 30, "Service recreated")
    wait(lambda: cluster.deployment("iris-loadgen"), 30, "loadgen recreated")
    cm = wait(
        lambda: cluster.get(f"/api/v1/namespaces/{ns}/configmaps/iris-model-v1"), 30, "artifact"
    )
    assert cm["immutable"] is True
    assert [j["metadata"]["name"] for j in cluster.jobs("iris")] == ["iris-train-v1"]

    # Deleting the CR: the garbage collector removes every child (owner references).
    cluster.kubectl("delete", "-n", ns, "md", "iris", "--wait=false")

    def gone():
        left = []
        for path in (f"/apis/apps/v1/namespaces/{ns}/deployments",
                     f"/apis/batch/v1/namespaces/{ns}/jobs",
                     f"/api/v1/namespaces/{ns}/services",
                     f"/api/v1/namespaces/{ns}/configmaps"):  # fmt: skip
            left += [i["metadata"]["name"] for i in cluster.items(path, "modelops.dev/name=iris")]
        return not left or None

    wait(gone, 60, "children garbage-collected", interval=0.5)


@pytest.fixture
def without_monitoring_crds(cluster, wait):
    """The control plane is shared by the whole session and other tests install the
    prometheus-operator CRDs; remove them before the operator starts so it starts without."""
    crds = cluster.items("/apis/apiextensions.k8s.io/v1/customresourcedefinitions")
    for crd in crds:
        if crd["spec"]["group"] == "monitoring.coreos.com":
            cluster.kubectl("delete", "crd", crd["metadata"]["name"], "--wait=true")
    wait(lambda: cluster.get("/apis/monitoring.coreos.com/v1") is None or None, 60,
         "monitoring.coreos.com gone from discovery", interval=0.5)  # fmt: skip


@pytest.mark.operator_env(MODELOPS_RESYNC_SECONDS="10")
def test_service_monitor_only_when_the_crd_exists(
    cluster, without_monitoring_crds, operator, trained, wait
):
    _serving(cluster, trained, name="plain")
    monitors = f"/apis/monitoring.coreos.com/v1/namespaces/{cluster.ns}/servicemonitors"
    assert cluster.get("/apis/monitoring.coreos.com/v1") is None
    pods = cluster.pods("modelops.dev/name=plain,app.kubernetes.io/component=server")
    # Without prometheus-operator: the pod contract the bundled Prometheus discovers.
    assert pods and all(p["metadata"]["labels"]["modelops.dev/scrape"] == "true" for p in pods)
    assert pods[0]["metadata"]["annotations"]["prometheus.io/port"] == "8000"

    cluster.kubectl(
        "apply", "-f", str(ROOT / "tests" / "operator" / "data" / "monitoring-crds.yaml")
    )
    for crd in ("servicemonitors", "podmonitors"):
        cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s",
                        f"crd/{crd}.monitoring.coreos.com")  # fmt: skip
    # The operator re-checks for the CRDs every resync/2 (here 5 s) and resyncs every 10 s.
    cluster.patch_md("plain", {"monitoring": {"scrapeInterval": "30s"}})
    sm = wait(lambda: cluster.get(f"{monitors}/plain"), 45, "ServiceMonitor", interval=1)
    assert sm["spec"]["endpoints"][0]["interval"] == "30s"
    assert sm["metadata"]["ownerReferences"][0]["name"] == "plain"
    # Applied in the same pass, just after the ServiceMonitor.
    wait(
        lambda: cluster.get(
            f"/apis/monitoring.coreos.com/v1/namespaces/{cluster.ns}/podmonitors/plain-loadgen"
        ),
        15,
        "PodMonitor",
    )
