"""Pods for the real node: manifests that land there, and waits on what the API holds."""

from __future__ import annotations

import functools
from typing import Any

from .controlplane import ControlPlane
from .nodeconfig import REAL_NODE_LABEL, REAL_NODE_TOLERATION
from .process import wait_until

# What the operator renders for the product's pods (restricted Pod Security).
RESTRICTED_POD = {
    "runAsNonRoot": True,
    "runAsUser": 65532,
    "runAsGroup": 65532,
    "seccompProfile": {"type": "RuntimeDefault"},
}
RESTRICTED_CONTAINER = {
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "capabilities": {"drop": ["ALL"]},
}


def node_pod(
    name: str,
    containers: list[dict[str, Any]],
    *,
    labels: dict[str, str] | None = None,
    restart_policy: str = "Never",
    service_account: str | None = None,
    volumes: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """A Pod that runs on the real node (toleration + selector), restricted, quick to delete."""
    spec: dict[str, Any] = {
        "nodeSelector": {REAL_NODE_LABEL: "true"},
        "tolerations": [REAL_NODE_TOLERATION],
        "restartPolicy": restart_policy,
        # Deleting a pod waits for its grace period when PID 1 ignores SIGTERM (python -c does).
        "terminationGracePeriodSeconds": 1,
        "securityContext": RESTRICTED_POD,
        "containers": [
            {"imagePullPolicy": "Never", "securityContext": RESTRICTED_CONTAINER, **c}
            for c in containers
        ],
        "volumes": [{"name": "tmp", "emptyDir": {}}, *(volumes or [])],
    }
    if service_account:
        spec["serviceAccountName"] = service_account
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": labels or {"app": name}},
        "spec": spec,
    }


def python_container(image: str, code: str, **extra: Any) -> dict[str, Any]:
    """A container running ``python -c code`` (every product image has python), with a
    writable ``/tmp`` under the read-only root."""
    return {
        "name": "main",
        "image": image,
        "command": ["python", "-c", code],
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
        **extra,
    }


def pod_path(namespace: str, name: str) -> str:
    return f"/api/v1/namespaces/{namespace}/pods/{name}"


def create_pod(plane: ControlPlane, namespace: str, pod: dict[str, Any]) -> None:
    status, body = plane.request("POST", f"/api/v1/namespaces/{namespace}/pods", pod)
    if status != 201:
        raise RuntimeError(f"creating pod {pod['metadata']['name']}: HTTP {status}: {body}")


def get_pod(plane: ControlPlane, namespace: str, name: str) -> dict[str, Any]:
    status, body = plane.request("GET", pod_path(namespace, name))
    if status != 200:
        raise RuntimeError(f"pod {namespace}/{name}: HTTP {status}: {body}")
    result: dict[str, Any] = body
    return result


def _phase_in(plane: ControlPlane, namespace: str, name: str, phases: tuple[str, ...]) -> bool:
    return get_pod(plane, namespace, name).get("status", {}).get("phase") in phases


def wait_finished(
    plane: ControlPlane, namespace: str, name: str, timeout: float = 120
) -> dict[str, Any]:
    """Wait until the pod Succeeded or Failed; return it."""
    check = functools.partial(_phase_in, plane, namespace, name, ("Succeeded", "Failed"))
    wait_until(check, timeout, f"pod {namespace}/{name} finished", interval=0.2)
    return get_pod(plane, namespace, name)


def _ready(plane: ControlPlane, namespace: str, name: str) -> bool:
    conditions = get_pod(plane, namespace, name).get("status", {}).get("conditions") or []
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def wait_ready(
    plane: ControlPlane, namespace: str, name: str, timeout: float = 120
) -> dict[str, Any]:
    """Wait until the pod is Ready; return it."""
    check = functools.partial(_ready, plane, namespace, name)
    wait_until(check, timeout, f"pod {namespace}/{name} Ready", interval=0.2)
    return get_pod(plane, namespace, name)


def termination_message(pod: dict[str, Any]) -> str:
    """The first container's termination message (what the kubelet read from its file)."""
    state = pod["status"]["containerStatuses"][0]["state"]
    message: str = state["terminated"].get("message", "")
    return message
