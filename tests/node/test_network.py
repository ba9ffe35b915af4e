"""The real node's network: pods reach the API server, each other, Services and DNS — and
nothing off the machine.

Test traffic goes only between pods, from pods to the node's own address, and from the host to
pod addresses (network namespaces the node made); nothing to any other address.
"""

from __future__ import annotations

import json
import socket
import urllib.request

import pytest

from modelops_testenv import workloads as w
from modelops_testenv.controlplane import KUBERNETES_SERVICE_IP
from modelops_testenv.node import RealNode
from modelops_testenv.nodeconfig import NODE_IP, POD_SUBNET

# Generous: the first test of a session starts the node and imports the images.
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

# TEST-NET-3 (RFC 5737): never a real host; routed off the machine by its default route.
OFF_MACHINE = "203.0.113.7"

ECHO_SERVER = """
import http.server, socket
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = socket.gethostname().encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer(("", 8080), Handler).serve_forever()
"""


@pytest.fixture
def python_image(product_images: dict[str, str]) -> str:
    return product_images["server"]


def run_to_end(node: RealNode, namespace: str, name: str, image: str, code: str) -> str:
    """Run ``code`` in a pod on the node until it exits 0; return its output."""
    w.create_pod(node.plane, namespace, w.node_pod(name, [w.python_container(image, code)]))
    pod = w.wait_finished(node.plane, namespace, name)
    logs = node.kubectl("logs", "-n", namespace, name).stdout
    assert pod["status"]["phase"] == "Succeeded", logs
    return logs


def test_a_pod_reaches_the_api_server_through_the_kubernetes_service(
    real_node: RealNode, node_namespace: str, python_image: str
):
    code = """
import json, socket, ssl, urllib.request, urllib.error
sa = "/var/run/secrets/kubernetes.io/serviceaccount/"
ctx = ssl.create_default_context(cafile=sa + "ca.crt")
req = urllib.request.Request(
    "https://kubernetes.default.svc/version",
    headers={"Authorization": "Bearer " + open(sa + "token").read()},
)
version = json.load(urllib.request.urlopen(req, context=ctx, timeout=10))
print(json.dumps({"ip": socket.gethostbyname("kubernetes.default.svc"),
                  "version": version["gitVersion"]}))
"""
    out = json.loads(run_to_end(real_node, node_namespace, "api", python_image, code))
    assert out["ip"] == KUBERNETES_SERVICE_IP
    _, version = real_node.plane.request("GET", "/version")
    assert out["version"] == version["gitVersion"]


def test_pods_reach_each_other_and_the_host_reaches_pods(
    real_node: RealNode, node_namespace: str, python_image: str
):
    listening = {"tcpSocket": {"port": 8080}, "periodSeconds": 1}
    container = w.python_container(python_image, ECHO_SERVER, readinessProbe=listening)
    server = w.node_pod("echo", [container])
    w.create_pod(real_node.plane, node_namespace, server)
    pod_ip = w.wait_ready(real_node.plane, node_namespace, "echo")["status"]["podIP"]
    assert pod_ip.startswith(POD_SUBNET.rsplit(".", 2)[0])
    # The host → a pod's network namespace (the node made it).
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(f"http://{pod_ip}:8080/", timeout=10) as resp:
        assert resp.read().decode() == "echo"
    # A pod → another pod, and → the node's own address (the API server listens there).
    code = f"""
import socket, urllib.request
print(urllib.request.urlopen("http://{pod_ip}:8080/", timeout=10).read().decode())
socket.create_connection(("{NODE_IP}", {real_node.plane.ports.apiserver}), timeout=10).close()
print("node ok")
"""
    out = run_to_end(real_node, node_namespace, "client", python_image, code)
    assert out.splitlines() == ["echo", "node ok"]


def test_a_pod_cannot_reach_an_address_off_the_machine(
    real_node: RealNode, node_namespace: str, python_image: str
):
    """The guard drops the packets (counted on our own rule), whatever the routing table says."""
    before = real_node.egress_drops()
    code = f"""
import socket
s = socket.socket()
s.settimeout(3)
try:
    s.connect(("{OFF_MACHINE}", 80))
    print("connected")
except OSError as err:
    print("failed", type(err).__name__)
"""
    out = run_to_end(real_node, node_namespace, "egress", python_image, code)
    assert out.split()[0] == "failed", out
    assert real_node.egress_drops() > before  # the SYN (and its retries) hit our DROP


def test_dns_answers_cluster_names_only(
    real_node: RealNode, node_namespace: str, python_image: str
):
    """No ``forward``: a name outside the cluster is not resolved (the query never leaves)."""
    code = """
import socket
print(socket.gethostbyname("kubernetes.default.svc.cluster.local"))
try:
    print(socket.gethostbyname("example.com"))
except socket.gaierror:
    print("unresolved")
"""
    out = run_to_end(real_node, node_namespace, "dns", python_image, code).split()
    assert out == [KUBERNETES_SERVICE_IP, "unresolved"]
    # CoreDNS listens on the node address only, not on every interface.
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", 53), timeout=2).close()
