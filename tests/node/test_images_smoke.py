"""The product's images on a real node (kubelet, containerd, runc): they start locked down and
their entrypoints work.

Every pod here is built from the operator's own render functions (modelops.core.render): the
trainer, server and load-generator pods are the pod templates it renders, and the locked-down
probe uses its pod and container security contexts. The images are hack/build-images.sh's
(hack/images/Dockerfile itself), imported into the node's containerd; nothing is pulled.
Assertions read what the kernel, the kubelet and the API server report, not what was sent.
"""

from __future__ import annotations

import copy
import json
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from modelops.core import render
from modelops.names import API_VERSION, KIND
from modelops.settings import Settings
from modelops.spec import ModelDeploymentSpec
from modelops_testenv.nodeconfig import REAL_NODE_LABEL, REAL_NODE_TOLERATION
from modelops_testenv.process import wait_until
from modelops_testenv.pytest_plugin import Kubectl

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

ROOT = Path(__file__).resolve().parents[2]
# Generous: the first start of an image unpacks it, and the machine has 2 busy cores.
START_TIMEOUT = 240.0
# Only our own network namespaces and loopback are reached: never through a proxy.
DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))

# Reports what the kernel says about the process, as the termination message (JSON).
PROBE = r"""
import errno, json, os
status = dict(l.split(":", 1) for l in open("/proc/self/status").read().splitlines() if ":" in l)
field = lambda name: status[name].split()
try:
    open("/opt/venv/probe", "w")
    root = "writable"
except OSError as e:
    root = errno.errorcode[e.errno]
report = {"uid": field("Uid"), "gid": field("Gid"), "groups": field("Groups"),
          "cap_eff": status["CapEff"].strip(), "cap_prm": status["CapPrm"].strip(),
          "no_new_privs": status["NoNewPrivs"].strip(), "seccomp": status["Seccomp"].strip(),
          "root": root, "tmp_writable": os.access("/tmp", os.W_OK)}
open("/dev/termination-log", "w").write(json.dumps(report))
"""

# Reads the mounted artifact as the server would, and tries to change it.
MOUNT_PROBE = r"""
import errno, hashlib, json, os, sys
d = sys.argv[1]
meta = json.load(open(os.path.join(d, "metadata.json")))
model = open(os.path.join(d, meta["model_file"]), "rb").read()
try:
    open(os.path.join(d, "metadata.json"), "a")
    write = "allowed"
except OSError as e:
    write = errno.errorcode[e.errno]
# The kubelet's atomic writer adds ..data and a timestamped folder beside the keys.
files = sorted(f for f in os.listdir(d) if not f.startswith(".."))
mount = [l.split() for l in open("/proc/self/mountinfo") if l.split()[4] == d]
report = {"uid": os.getuid(), "files": files, "mount_options": mount[-1][5].split(","),
          "sha256": hashlib.sha256(model).hexdigest(), "expected": meta["model_sha256"],
          "write": write}
open("/dev/termination-log", "w").write(json.dumps(report))
"""

SETOSA = {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}


def custom_resource(namespace: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {"name": "iris", "namespace": namespace, "uid": "smoke", "generation": 1},
        "spec": {"modelVersion": "v1", **spec},
    }


def settings(product_images: dict[str, str]) -> Settings:
    return Settings(
        trainer_image=product_images["trainer"],
        server_image=product_images["server"],
        loadgen_image=product_images["loadgen"],
        image_pull_policy="Never",
    )


def on_node(name: str, pod_spec: dict[str, Any], **labels: str) -> dict[str, Any]:
    """A bare Pod of ``pod_spec`` that lands on the (tainted) real node and stops quickly."""
    spec = copy.deepcopy(pod_spec)
    spec["tolerations"] = [*spec.get("tolerations", []), REAL_NODE_TOLERATION]
    spec["nodeSelector"] = {REAL_NODE_LABEL: "true"}
    spec["terminationGracePeriodSeconds"] = 2
    for container in spec["containers"]:
        # The rendered drain (a preStop sleep longer than this grace period, which the API
        # server refuses) is the rollout tests' subject (tests/e2e), not the images'.
        container.pop("lifecycle", None)
    spec.setdefault("restartPolicy", "Never")
    metadata = {"name": name, "labels": labels}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec}


def create(kubectl: Kubectl, namespace: str, obj: dict[str, Any]) -> None:
    kubectl("create", "-n", namespace, "-f", "-", input=json.dumps(obj))


def pod(kubectl: Kubectl, namespace: str, name: str) -> dict[str, Any]:
    return dict(json.loads(kubectl("get", "pod", "-n", namespace, name, "-o", "json")))


def wait_ready(kubectl: Kubectl, namespace: str, selector: str) -> dict[str, Any]:
    """The one pod matching ``selector`` once the kubelet reports it Ready (its probes passed);
    on time-out, fail with its status and logs."""
    last: list[dict[str, Any]] = []

    def ready() -> bool:
        out = kubectl("get", "pod", "-n", namespace, "-l", selector, "-o", "json")
        last[:] = json.loads(out)["items"]
        conditions = last[0].get("status", {}).get("conditions", []) if len(last) == 1 else []
        return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)

    try:
        wait_until(ready, START_TIMEOUT, f"pod {selector} Ready", interval=1.0)
    except TimeoutError:
        logs = kubectl.run("logs", "-n", namespace, "-l", selector, "--tail=50").stdout
        status = [p.get("status") for p in last]
        pytest.fail(f"pod {selector} not Ready: {json.dumps(status, indent=1)}\nlogs:\n{logs}")
    return last[0]


def finished(kubectl: Kubectl, namespace: str, name: str) -> dict[str, Any]:
    """The pod once it ran to completion; fails with its status and logs if it did not succeed."""
    got = wait_pod_phase(kubectl, namespace, name)
    if got["status"]["phase"] != "Succeeded":
        logs = kubectl.run("logs", "-n", namespace, name).stdout
        pytest.fail(f"pod {name}: {json.dumps(got['status'], indent=1)}\nlogs:\n{logs}")
    return got


def wait_pod_phase(kubectl: Kubectl, namespace: str, name: str) -> dict[str, Any]:
    """The pod once it reached Succeeded or Failed (what the kubelet reported)."""
    last: dict[str, Any] = {}

    def done() -> bool:
        last.update(pod(kubectl, namespace, name))
        return last.get("status", {}).get("phase") in ("Succeeded", "Failed")

    try:
        wait_until(done, START_TIMEOUT, f"pod {name} to finish", interval=1.0)
    except TimeoutError:
        pytest.fail(f"pod {name} did not finish: {json.dumps(last.get('status'), indent=1)}")
    return last


def termination_message(got: dict[str, Any]) -> Any:
    return json.loads(got["status"]["containerStatuses"][0]["state"]["terminated"]["message"])


def http(url: str, body: dict[str, Any] | None = None) -> tuple[int, bytes]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with DIRECT.open(request, timeout=20) as resp:
        return resp.status, resp.read()


# 1. Each image starts as uid 65532, read-only root, the operator's security settings ---------


@pytest.mark.parametrize("component", ["operator", "trainer", "server", "loadgen"])
def test_image_runs_locked_down_as_the_operator_renders_it(
    node_kubectl: Kubectl, node_namespace: str, product_images: dict[str, str], component: str
) -> None:
    container = {
        "name": component,
        "image": product_images[component],
        "imagePullPolicy": "Never",
        "command": ["python3", "-c", PROBE],
        "securityContext": render.container_security_context(),
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
    }
    spec = {
        "securityContext": render.pod_security_context(),
        "automountServiceAccountToken": False,
        "containers": [container],
        "volumes": [{"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}}],
    }
    create(node_kubectl, node_namespace, on_node("probe", spec))
    got = finished(node_kubectl, node_namespace, "probe")
    # What the API server holds is what the operator renders.
    held = got["spec"]
    assert held["securityContext"] == render.pod_security_context()
    assert held["containers"][0]["securityContext"] == render.container_security_context()
    report = termination_message(got)
    uid = str(render.RUN_AS)
    assert report["uid"] == [uid] * 4 and report["gid"] == [uid] * 4
    assert uid in report["groups"]  # fsGroup
    assert report["cap_eff"] == report["cap_prm"] == "0000000000000000"
    assert report["no_new_privs"] == "1"
    assert report["seccomp"] == "2"  # filter mode: RuntimeDefault is applied
    assert report["root"] == "EROFS"
    assert report["tmp_writable"] is True


def test_trainer_pod_trains_and_reports_through_its_termination_message(
    node_kubectl: Kubectl, node_namespace: str, product_images: dict[str, str]
) -> None:
    cr = custom_resource(node_namespace)
    spec = ModelDeploymentSpec.from_dict(cr["spec"])
    job = render.trainer_job(cr, spec, settings(product_images))
    create(node_kubectl, node_namespace, on_node("trainer", job["spec"]["template"]["spec"]))
    got = finished(node_kubectl, node_namespace, "trainer")
    summary = termination_message(got)
    assert summary["status"] == "Succeeded"
    assert summary["name"] == "iris" and summary["version"] == "v1"
    assert summary["accuracy"] >= 0.85


# The server and the load generator, on a model trained here -----------------------------------


@pytest.fixture
def artifact(node_kubectl: Kubectl, node_namespace: str, tmp_path: Path) -> dict[str, Any]:
    """The artifact ConfigMap the operator would create, holding a model trained here."""
    trainer = str(ROOT / ".venv/bin/modelops-trainer")
    subprocess.run(
        [trainer, "train", "--version", "v1", "--name", "iris", "--output-dir", str(tmp_path)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    metadata = json.loads((tmp_path / "v1/metadata.json").read_text())
    model = (tmp_path / "v1" / metadata["model_file"]).read_bytes()
    cr = custom_resource(node_namespace)
    configmap = render.artifact_configmap(cr, "v1", metadata, model)
    # No owner here: the garbage collector would delete a child of a missing owner.
    del configmap["metadata"]["ownerReferences"]
    create(node_kubectl, node_namespace, configmap)
    return {"cr": cr, "metadata": metadata}


def server_pod(
    kubectl: Kubectl, namespace: str, product_images: dict[str, str], artifact: dict[str, Any]
) -> dict[str, Any]:
    """The rendered server pod, once the kubelet's readiness probe (/readyz) passed."""
    cr = artifact["cr"]
    spec = ModelDeploymentSpec.from_dict(cr["spec"])
    deployment = render.server_deployment(
        cr, spec, settings(product_images), "v1", artifact["metadata"]["model_sha256"]
    )
    template = deployment["spec"]["template"]
    labels = template["metadata"]["labels"]
    create(kubectl, namespace, on_node("server", template["spec"], **labels))
    return wait_ready(kubectl, namespace, "app.kubernetes.io/component=server")


def test_server_pod_serves_the_model_of_its_configmap(
    node_kubectl: Kubectl,
    node_namespace: str,
    product_images: dict[str, str],
    artifact: dict[str, Any],
) -> None:
    got = server_pod(node_kubectl, node_namespace, product_images, artifact)
    port = got["spec"]["containers"][0]["ports"][0]["containerPort"]
    base = f"http://{got['status']['podIP']}:{port}"
    status, _ = http(f"{base}/readyz")
    assert status == 200
    status, body = http(f"{base}/predict", SETOSA)
    assert (status, json.loads(body)["species"]) == (200, "setosa")


def test_loadgen_pod_runs_a_bounded_run_against_the_server(
    node_kubectl: Kubectl,
    node_namespace: str,
    product_images: dict[str, str],
    artifact: dict[str, Any],
) -> None:
    server = server_pod(node_kubectl, node_namespace, product_images, artifact)
    cr = {**artifact["cr"], "spec": {**artifact["cr"]["spec"], "loadRate": 20}}
    spec = ModelDeploymentSpec.from_dict(cr["spec"])
    deployment = render.loadgen_deployment(cr, spec, settings(product_images))
    assert deployment is not None
    pod_spec = copy.deepcopy(deployment["spec"]["template"]["spec"])
    target = f"http://{server['status']['podIP']}:{spec.serving.port}"
    pod_spec["containers"][0]["args"] = [
        *("--target", target, "--duration", "5", "--json", "--log-level", "ERROR"),
    ]
    create(node_kubectl, node_namespace, on_node("loadgen", pod_spec))
    finished(node_kubectl, node_namespace, "loadgen")
    logs = node_kubectl("logs", "-n", node_namespace, "loadgen")
    summary = json.loads(logs[logs.index("{") :])
    assert summary["completed"] >= 20  # 5 s at 20/s: generous for a loaded machine
    assert summary["errors"] == 0


# 3. A ConfigMap mounted read-only is readable by the server image's user -----------------------


def test_configmap_mounted_read_only_is_readable_by_the_server_user(
    node_kubectl: Kubectl,
    node_namespace: str,
    product_images: dict[str, str],
    artifact: dict[str, Any],
) -> None:
    cr = artifact["cr"]
    spec = ModelDeploymentSpec.from_dict(cr["spec"])
    rendered = render.server_deployment(
        cr, spec, settings(product_images), "v1", artifact["metadata"]["model_sha256"]
    )["spec"]["template"]["spec"]
    container = rendered["containers"][0]
    mount = next(m for m in container["volumeMounts"] if m["name"] == "model")
    assert mount["readOnly"] is True
    container = {
        **container,
        "command": ["python3", "-c", MOUNT_PROBE, mount["mountPath"]],
        "ports": [],
    }
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        container.pop(probe)
    create(node_kubectl, node_namespace, on_node("reader", {**rendered, "containers": [container]}))
    report = termination_message(finished(node_kubectl, node_namespace, "reader"))
    assert report["uid"] == render.RUN_AS
    model_file = artifact["metadata"]["model_file"]
    assert report["files"] == sorted(["metadata.json", model_file])
    assert report["sha256"] == report["expected"] == artifact["metadata"]["model_sha256"]
    # Mounted read-only (and its files 0444 for good measure: the write fails on either).
    assert "ro" in report["mount_options"]
    assert report["write"] in ("EROFS", "EACCES")


# The operator image: the operator starts and answers its liveness endpoint ---------------------


def operator_manifests(image: str) -> list[dict[str, Any]]:
    """config/crd, config/rbac and config/manager as users apply them, with our image."""
    docs: list[dict[str, Any]] = []
    for folder in ("config/crd", "config/rbac", "config/manager"):
        out = subprocess.run(
            ["kubectl", "kustomize", str(ROOT / folder)],
            check=True,
            capture_output=True,
            text=True,
            timeout=60,
        ).stdout
        docs += [d for d in yaml.safe_load_all(out) if d]
    for doc in docs:
        if doc["kind"] == "Deployment":
            spec = doc["spec"]["template"]["spec"]
            spec["containers"][0].update(image=image, imagePullPolicy="Never")
            spec["tolerations"] = [REAL_NODE_TOLERATION]
            spec["nodeSelector"] = {REAL_NODE_LABEL: "true"}
            spec["terminationGracePeriodSeconds"] = 5
    return docs


@pytest.fixture
def operator_deployed(
    node_kubectl: Kubectl, product_images: dict[str, str]
) -> Iterator[list[dict[str, Any]]]:
    docs = operator_manifests(product_images["operator"])
    # CRDs and the namespace first: the rest needs them (kubectl cannot order that itself).
    first = [d for d in docs if d["kind"] in ("CustomResourceDefinition", "Namespace")]
    rest = [d for d in docs if d not in first]
    node_kubectl("apply", "--server-side", "-f", "-", input=yaml.safe_dump_all(first))
    for crd in (d for d in first if d["kind"] == "CustomResourceDefinition"):
        node_kubectl(
            "wait", "--for=condition=Established", f"crd/{crd['metadata']['name']}", "--timeout=60s"
        )
    node_kubectl("apply", "--server-side", "-f", "-", input=yaml.safe_dump_all(rest))
    try:
        yield docs
    finally:
        for group in (rest, first):
            node_kubectl.run(
                "delete", "--ignore-not-found", "--wait=false", "-f", "-",
                input=yaml.safe_dump_all(group),
            )  # fmt: skip


def test_operator_pod_starts_and_answers_its_liveness_endpoint(
    node_kubectl: Kubectl, operator_deployed: list[dict[str, Any]]
) -> None:
    deployment = next(d for d in operator_deployed if d["kind"] == "Deployment")
    namespace = deployment["metadata"]["namespace"]
    # Ready = the kubelet's startup and readiness probes got 200 from kopf's /healthz.
    got = wait_ready(node_kubectl, namespace, "app.kubernetes.io/name=modelops-operator")
    health = next(p for p in got["spec"]["containers"][0]["ports"] if p["name"] == "health")
    status, _ = http(f"http://{got['status']['podIP']}:{health['containerPort']}/healthz")
    assert status == 200
    # It runs as the image's user with the manifest's lock-down.
    assert got["spec"]["securityContext"]["runAsUser"] == render.RUN_AS
    assert got["status"]["containerStatuses"][0]["restartCount"] == 0
