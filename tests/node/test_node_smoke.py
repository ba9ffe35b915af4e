"""Smoke tests of the real node with the product's images (2, 4 and 5 of issue 12):
termination messages and logs, Services with readiness and DNS, ServiceAccount RBAC.

Traffic stays between pods, and from the host to pod addresses.
"""

from __future__ import annotations

import json
import urllib.request
from typing import Any

import pytest

from modelops_testenv import workloads as w
from modelops_testenv.node import RealNode
from modelops_testenv.process import wait_until

# Generous: the first test of a session starts the node and imports the images.
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))

# Answers its host name; /ready turns 503 once /unready was asked (a readiness switch).
BACKEND = """
import http.server, os, socket
FLAG = "/tmp/unready"
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/unready":
            open(FLAG, "w").close()
        code = 503 if self.path == "/ready" and os.path.exists(FLAG) else 200
        body = socket.gethostname().encode()
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer(("", 8080), Handler).serve_forever()
"""

# Asks the Service until it saw ``want`` (a set of host names) in 20 answers in a row, or 60 s.
CLIENT = """
import json, socket, sys, time, urllib.request
url, want = sys.argv[1], set(json.loads(sys.argv[2]))
deadline, seen = time.monotonic() + 60, []
while time.monotonic() < deadline:
    seen = [urllib.request.urlopen(url, timeout=5).read().decode() for _ in range(20)]
    if set(seen) == want:
        break
    time.sleep(0.5)
host = url.split("/")[2].split(":")[0]
print(json.dumps({"seen": sorted(set(seen)), "address": socket.gethostbyname(host)}))
"""


@pytest.fixture
def python_image(product_images: dict[str, str]) -> str:
    return product_images["server"]


def kubectl_logs(node: RealNode, namespace: str, name: str) -> str:
    return node.kubectl("logs", "-n", namespace, name).stdout


# 2. Termination message through the API; kubectl logs -----------------------------------------


def test_termination_message_and_logs_come_back_through_the_api(
    real_node: RealNode, node_namespace: str, python_image: str
):
    code = """
import json
print("line one")
print("line two", flush=True)
open("/dev/termination-log", "w").write(json.dumps({"status": "Succeeded", "n": 2}))
"""
    container = w.python_container(python_image, code, terminationMessagePolicy="File")
    w.create_pod(real_node.plane, node_namespace, w.node_pod("reporter", [container]))
    pod = w.wait_finished(real_node.plane, node_namespace, "reporter")
    assert pod["status"]["phase"] == "Succeeded"
    # Written under a read-only root filesystem, read by the kubelet, held by the API server.
    assert json.loads(w.termination_message(pod)) == {"status": "Succeeded", "n": 2}
    # kubectl → API server → the kubelet (client certificate, node address).
    assert kubectl_logs(real_node, node_namespace, "reporter").splitlines() == [
        "line one",
        "line two",
    ]


def test_a_failed_container_without_a_message_falls_back_to_its_log_tail(
    real_node: RealNode, node_namespace: str, python_image: str
):
    """``FallbackToLogsOnError`` (what the operator sets on the trainer)."""
    code = "import sys; print('training failed: no data', flush=True); sys.exit(3)"
    container = w.python_container(
        python_image, code, terminationMessagePolicy="FallbackToLogsOnError"
    )
    w.create_pod(real_node.plane, node_namespace, w.node_pod("failing", [container]))
    pod = w.wait_finished(real_node.plane, node_namespace, "failing")
    assert pod["status"]["phase"] == "Failed"
    terminated = pod["status"]["containerStatuses"][0]["state"]["terminated"]
    assert terminated["exitCode"] == 3
    assert terminated["message"].strip() == "training failed: no data"


# 4. A Service routes to two ready pods; readiness removes one; DNS resolves <svc>.<ns>.svc -----


def backend(image: str, name: str) -> dict[str, Any]:
    probe = {"httpGet": {"path": "/ready", "port": 8080}, "periodSeconds": 1}
    container = w.python_container(
        image,
        BACKEND,
        ports=[{"containerPort": 8080, "name": "http"}],
        readinessProbe={**probe, "failureThreshold": 1},
    )
    return w.node_pod(name, [container], labels={"app": "backend"}, restart_policy="Always")


def service(namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "backend", "namespace": namespace},
        "spec": {"selector": {"app": "backend"}, "ports": [{"port": 80, "targetPort": "http"}]},
    }


def ready_endpoints(node: RealNode, namespace: str) -> list[str]:
    """Pods the Service's EndpointSlices list as ready (what kube-proxy routes to)."""
    path = f"/apis/discovery.k8s.io/v1/namespaces/{namespace}/endpointslices"
    status, slices = node.plane.request(
        "GET", f"{path}?labelSelector=kubernetes.io/service-name%3Dbackend"
    )
    assert status == 200, slices
    return sorted(
        e["targetRef"]["name"]
        for s in slices["items"]
        for e in s.get("endpoints") or []
        if e.get("conditions", {}).get("ready")
    )


def ask_service(node: RealNode, namespace: str, image: str, name: str, want: list[str]) -> Any:
    url = f"http://backend.{namespace}.svc/"
    container = w.python_container(image, CLIENT)
    container["command"] += [url, json.dumps(want)]
    w.create_pod(node.plane, namespace, w.node_pod(name, [container]))
    pod = w.wait_finished(node.plane, namespace, name)
    logs = kubectl_logs(node, namespace, name)
    assert pod["status"]["phase"] == "Succeeded", logs
    return json.loads(logs)


def test_a_service_routes_to_ready_pods_only_and_dns_names_it(
    real_node: RealNode, node_namespace: str, python_image: str
):
    plane, ns = real_node.plane, node_namespace
    status, svc = plane.request("POST", f"/api/v1/namespaces/{ns}/services", service(ns))
    assert status == 201, svc
    for name in ("backend-a", "backend-b"):
        w.create_pod(plane, ns, backend(python_image, name))
    ips = {
        name: w.wait_ready(plane, ns, name)["status"]["podIP"]
        for name in ("backend-a", "backend-b")
    }
    wait_until(
        lambda: ready_endpoints(real_node, ns) == ["backend-a", "backend-b"], 60, "2 endpoints"
    )

    both = ask_service(real_node, ns, python_image, "client-both", ["backend-a", "backend-b"])
    assert both == {"seen": ["backend-a", "backend-b"], "address": svc["spec"]["clusterIP"]}

    # backend-a fails its readiness probe from now on (asked from the host, into its netns).
    DIRECT.open(f"http://{ips['backend-a']}:8080/unready", timeout=10).close()
    wait_until(lambda: ready_endpoints(real_node, ns) == ["backend-b"], 60, "backend-a removed")
    one = ask_service(real_node, ns, python_image, "client-one", ["backend-b"])
    assert one["seen"] == ["backend-b"]


# 5. A pod lists objects with its ServiceAccount's RBAC, and is denied without it --------------

LIST_CONFIGMAPS = """
import json, ssl, urllib.error, urllib.request
sa = "/var/run/secrets/kubernetes.io/serviceaccount/"
namespace = open(sa + "namespace").read()
request = urllib.request.Request(
    f"https://kubernetes.default.svc/api/v1/namespaces/{namespace}/configmaps",
    headers={"Authorization": "Bearer " + open(sa + "token").read()},
)
try:
    body = json.load(urllib.request.urlopen(
        request, context=ssl.create_default_context(cafile=sa + "ca.crt"), timeout=10))
    print(json.dumps({"code": 200, "names": sorted(i["metadata"]["name"] for i in body["items"])}))
except urllib.error.HTTPError as err:
    print(json.dumps({"code": err.code, "reason": json.load(err).get("reason")}))
"""


def rbac_objects(namespace: str) -> list[tuple[str, dict[str, Any]]]:
    rbac = f"/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}"
    role = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": {"name": "configmap-reader"},
        "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["list"]}],
    }
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": "reader-reads"},
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "Role",
            "name": "configmap-reader",
        },
        "subjects": [{"kind": "ServiceAccount", "name": "reader", "namespace": namespace}],
    }
    return [(f"{rbac}/roles", role), (f"{rbac}/rolebindings", binding)]


def list_as(node: RealNode, namespace: str, image: str, name: str, account: str) -> Any:
    container = w.python_container(image, LIST_CONFIGMAPS)
    pod = w.node_pod(name, [container], service_account=account)
    w.create_pod(node.plane, namespace, pod)
    got = w.wait_finished(node.plane, namespace, name)
    logs = kubectl_logs(node, namespace, name)
    assert got["status"]["phase"] == "Succeeded", logs
    return json.loads(logs)


def test_a_pod_lists_through_the_api_with_its_service_accounts_rbac(
    real_node: RealNode, node_namespace: str, python_image: str
):
    plane, ns = real_node.plane, node_namespace
    for account in ("reader", "nobody"):
        body = {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": account}}
        assert plane.request("POST", f"/api/v1/namespaces/{ns}/serviceaccounts", body)[0] == 201
    for path, body in rbac_objects(ns):
        assert plane.request("POST", path, body)[0] == 201
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "settings"}}
    assert plane.request("POST", f"/api/v1/namespaces/{ns}/configmaps", cm)[0] == 201

    allowed = list_as(real_node, ns, python_image, "as-reader", "reader")
    assert allowed["code"] == 200
    assert "settings" in allowed["names"]
    denied = list_as(real_node, ns, python_image, "as-nobody", "nobody")
    assert denied == {"code": 403, "reason": "Forbidden"}
