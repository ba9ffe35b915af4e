"""The Prometheus and Grafana manifests against a real kube-apiserver, and the Grafana admin
Secret script (random password created once, never overwritten)."""

from __future__ import annotations

import base64
import os
import re
import subprocess
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.integration
SCRIPT = Path(__file__).resolve().parents[2] / "hack" / "grafana-admin-secret.sh"


def build(obs, path, namespace: str) -> list[dict]:
    """kustomize build with the namespace moved to the test's, as an overlay would."""
    result = obs.run(obs.tool("kubectl"), "kustomize", str(path))
    assert result.returncode == 0, result.stderr
    docs = [d for d in yaml.safe_load_all(result.stdout) if d]
    for doc in docs:
        if "namespace" in doc["metadata"]:
            doc["metadata"]["namespace"] = namespace
        for subject in doc.get("subjects", []):
            subject["namespace"] = namespace
        if doc["kind"] in {"ClusterRole", "ClusterRoleBinding"}:
            doc["metadata"]["name"] += f"-{namespace}"  # cluster-scoped: one per test
        if doc["kind"] == "ClusterRoleBinding":
            doc["roleRef"]["name"] += f"-{namespace}"
    return docs


def secret_script(kubeconfig, namespace: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "KUBECTL": f"kubectl --kubeconfig={kubeconfig}"}
    return subprocess.run(
        [str(SCRIPT), namespace],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def test_manifests_are_accepted_by_the_api_server(obs, kubectl, namespace):
    docs = build(obs, obs.PROM_DIR, namespace) + build(obs, obs.GRAFANA_DIR, namespace)
    out = kubectl("apply", "--server-side", "-f", "-", input=yaml.safe_dump_all(docs))
    kinds = {d["kind"] for d in docs}
    assert {"Deployment", "Service", "ConfigMap", "ServiceAccount", "ClusterRole"} <= kinds
    assert out.count("serverside-applied") == len(docs)
    for name in ("prometheus", "grafana"):
        kubectl("-n", namespace, "get", "deployment", name)
    # The Prometheus service account may list and watch pods everywhere, and nothing more.
    sa = f"system:serviceaccount:{namespace}:prometheus"
    for verb, resource, allowed in [
        ("list", "pods", "yes"), ("watch", "pods", "yes"), ("get", "secrets", "no"),
        ("list", "services", "no"), ("create", "pods", "no"), ("list", "nodes", "no"),
    ]:  # fmt: skip
        answer = kubectl.run("auth", "can-i", verb, resource, "--all-namespaces", "--as", sa)
        assert answer.stdout.strip() == allowed, (verb, resource, answer.stdout, answer.stderr)
    for doc in docs:
        if doc["kind"] in {"ClusterRole", "ClusterRoleBinding"}:
            kubectl("delete", doc["kind"].lower(), doc["metadata"]["name"])


def test_grafana_admin_secret_is_random_and_created_once(kubeconfig, kubectl, namespace):
    first = secret_script(kubeconfig, namespace)
    assert first.returncode == 0, first.stderr
    assert "Created Secret" in first.stdout
    read = ["-n", namespace, "get", "secret", "grafana-admin", "-o", "jsonpath={.data.password}"]
    password = base64.b64decode(kubectl(*read)).decode()
    assert re.fullmatch(r"[A-Za-z0-9]{32}", password)
    assert password not in first.stdout + first.stderr, "the password is never printed"
    again = secret_script(kubeconfig, namespace)
    assert again.returncode == 0, again.stderr
    assert "exists" in again.stdout
    assert base64.b64decode(kubectl(*read)).decode() == password
    # Another namespace gets another password.
    other = f"{namespace}-b"
    kubectl("create", "namespace", other)
    try:
        assert secret_script(kubeconfig, other).returncode == 0
        assert base64.b64decode(
            kubectl("-n", other, "get", "secret", "grafana-admin",
                    "-o", "jsonpath={.data.password}")
        ).decode() != password  # fmt: skip
    finally:
        kubectl("delete", "namespace", other, "--wait=false")


def test_grafana_admin_secret_script_explains_a_missing_namespace(kubeconfig):
    result = secret_script(kubeconfig, "no-such-namespace-x1")
    assert result.returncode == 1
    assert "Does the namespace exist" in result.stderr
