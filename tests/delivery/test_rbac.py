"""The operator's shipped RBAC, asked of the real API server with `kubectl auth can-i`.

Both ways of running it: watching every namespace (config/default) and watching a list
(config/overlays/namespaced, i.e. the component config/rbac/namespaced). The shipped objects
are applied under a per-test identity (names suffixed, the ServiceAccount in a namespace of the
test) so that the session-wide RBAC other tests use stays untouched.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
# What the operator does in a namespace it watches (kube.py and kopf).
IN_WATCHED = [
    ("create", "jobs.batch"),
    ("delete", "jobs.batch"),
    ("list", "pods"),
    ("watch", "pods"),
    ("get", "pods", "--subresource=log"),
    ("create", "configmaps"),
    ("patch", "deployments.apps"),
    ("patch", "services"),
    ("delete", "services"),  # a Shadow's candidate Service, once its rollout ends
    ("create", "events"),
    ("watch", "modeldeployments.modelops.dev"),
    ("patch", "modeldeployments.modelops.dev", "--subresource=status"),
]
# Never, anywhere.
NEVER = [
    ("create", "serviceaccounts"),
    ("get", "secrets"),
    ("create", "pods", "--subresource=exec"),
    ("create", "pods"),
    ("update", "modeldeployments.modelops.dev"),
    ("create", "roles.rbac.authorization.k8s.io"),
    ("create", "rolebindings.rbac.authorization.k8s.io"),
]


@pytest.fixture
def namespaces(kubectl: Any) -> Iterator[dict[str, str]]:
    tag = uuid.uuid4().hex[:6]
    names = {role: f"rbac-{role}-{tag}" for role in ("system", "watched", "other")}
    for name in names.values():
        kubectl("create", "namespace", name)
    yield names
    for name in names.values():
        kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture(scope="module")
def crds(control_plane: Any) -> None:
    control_plane.kubectl(
        "apply", "--server-side", "--force-conflicts", "-k", str(ROOT / "config" / "crd")
    )
    control_plane.kubectl(
        "wait", "--for=condition=Established", "--timeout=60s", "crd/modeldeployments.modelops.dev"
    )


class Asker:
    def __init__(self, kubectl: Any, system_ns: str) -> None:
        self.kubectl = kubectl
        self.who = f"--as=system:serviceaccount:{system_ns}:modelops-operator"

    def can(self, verb: str, resource: str, *extra: str, namespace: str | None = None) -> bool:
        where = ["-n", namespace] if namespace else ["--all-namespaces"]
        proc = self.kubectl.run("auth", "can-i", verb, resource, *extra, *where, self.who)
        answer = proc.stdout.strip()
        assert answer in ("yes", "no"), proc.stderr
        return answer == "yes"

    def wait_granted(self, verb: str, resource: str, namespace: str) -> None:
        deadline = time.monotonic() + 30
        while not self.can(verb, resource, namespace=namespace):
            assert time.monotonic() < deadline, "the bindings never took effect"
            time.sleep(0.3)


def assert_leader_election(ask: Asker, namespaces: dict[str, str]) -> None:
    """The Lease in the operator's own namespace, in both modes; no Lease anywhere else."""
    for verb in ("get", "create", "update"):
        assert ask.can(verb, "leases.coordination.k8s.io", namespace=namespaces["system"]), verb
    assert not ask.can("delete", "leases.coordination.k8s.io", namespace=namespaces["system"])
    for ns in (namespaces["watched"], namespaces["other"]):
        assert not ask.can("update", "leases.coordination.k8s.io", namespace=ns), ns


def apply(kubectl: Any, manifest: str) -> list[dict[str, Any]]:
    applied = kubectl("apply", "-o", "json", "-f", "-", input=manifest)
    return list(json.loads(applied).get("items", []))


def cleanup(kubectl: Any, manifest: str) -> None:
    kubectl("delete", "--ignore-not-found", "-f", "-", input=manifest, check=False)


def test_cluster_wide_mode_grants_every_namespace_but_nothing_dangerous(
    kubectl: Any, crds: None, namespaces: dict[str, str], operator_rbac: Any
) -> None:
    suffix = namespaces["system"]
    manifest = operator_rbac("config/default", suffix, namespaces["system"], {})
    try:
        apply(kubectl, manifest)
        ask = Asker(kubectl, namespaces["system"])
        ask.wait_granted("create", "jobs.batch", namespaces["other"])
        for ns in (namespaces["watched"], namespaces["other"], "default"):
            for verb, resource, *extra in IN_WATCHED:
                assert ask.can(verb, resource, *extra, namespace=ns), (verb, resource, ns)
            for verb, resource, *extra in NEVER:
                assert not ask.can(verb, resource, *extra, namespace=ns), (verb, resource, ns)
        assert ask.can("list", "modeldeployments.modelops.dev")
        assert ask.can("list", "namespaces")
        assert ask.can("list", "customresourcedefinitions.apiextensions.k8s.io")
        assert_leader_election(ask, namespaces)
    finally:
        cleanup(kubectl, manifest)


def test_namespaced_mode_grants_only_the_watched_namespaces(
    kubectl: Any, crds: None, namespaces: dict[str, str], operator_rbac: Any
) -> None:
    suffix = namespaces["system"]
    watched = {"mlops-puj": namespaces["watched"]}
    manifest = operator_rbac("config/overlays/namespaced", suffix, namespaces["system"], watched)
    kinds = sorted(d["kind"] for d in yaml.safe_load_all(manifest))
    # The namespaced role (a ClusterRole bound only by the RoleBinding), the leader election's
    # Role, and nothing cluster-wide.
    assert kinds == ["ClusterRole", "Role", "RoleBinding", "RoleBinding", "ServiceAccount"]
    try:
        apply(kubectl, manifest)
        ask = Asker(kubectl, namespaces["system"])
        ask.wait_granted("create", "jobs.batch", namespaces["watched"])
        for verb, resource, *extra in IN_WATCHED:
            assert ask.can(verb, resource, *extra, namespace=namespaces["watched"]), (
                verb,
                resource,
            )
            for ns in (namespaces["other"], namespaces["system"], "default"):
                assert not ask.can(verb, resource, *extra, namespace=ns), (verb, resource, ns)
        assert_leader_election(ask, namespaces)
        for ns in (namespaces["watched"], namespaces["other"]):
            for verb, resource, *extra in NEVER:
                assert not ask.can(verb, resource, *extra, namespace=ns), (verb, resource, ns)
        # Nothing cluster-wide.
        assert not ask.can("list", "modeldeployments.modelops.dev")
        assert not ask.can("list", "pods")
        assert not ask.can("list", "namespaces")
        assert not ask.can("list", "customresourcedefinitions.apiextensions.k8s.io")
    finally:
        cleanup(kubectl, manifest)


def bound_docs(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        d
        for d in docs
        if d["kind"] == "RoleBinding" and d["roleRef"]["name"] == "modelops-operator"
    ]


def test_namespaced_overlay_tells_the_operator_what_it_watches(kustomize: Any) -> None:
    docs = kustomize("config/overlays/namespaced")
    (deployment,) = [
        d
        for d in docs
        if d["kind"] == "Deployment" and d["metadata"]["name"] == "modelops-operator"
    ]
    env = {
        e["name"]: e.get("value")
        for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    bound = sorted(d["metadata"]["namespace"] for d in bound_docs(docs))
    assert env["MODELOPS_WATCH_NAMESPACES"].split(",") == bound
    # The leader election's grant stays in the operator's own namespace.
    (election,) = [d for d in docs if d["kind"] == "RoleBinding" and d not in bound_docs(docs)]
    assert election["metadata"]["namespace"] == deployment["metadata"]["namespace"]
    assert not [
        d
        for d in docs
        if d["kind"] == "ClusterRoleBinding" and d["roleRef"]["name"] == "modelops-operator"
    ]
