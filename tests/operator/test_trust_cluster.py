"""Artifact trust against the real API server: a ConfigMap someone else created under the next
version's artifact name never serves and never feeds the gate (issue 15)."""

from __future__ import annotations

import copy
import time

import pytest

from .test_lifecycle import _serve_v1, _warnings

pytestmark = pytest.mark.integration


def cm_path(cluster, name: str) -> str:
    return f"/api/v1/namespaces/{cluster.ns}/configmaps/{name}"


def impostor(cluster, original: dict, version: str, labelled: bool) -> dict:
    """v1's stored artifact copied under v2's name, as anyone allowed to create ConfigMaps in
    the namespace could make it: labels and owner reference included, a better accuracy."""
    cm = copy.deepcopy(original)
    meta = cm["metadata"]
    for key in ("resourceVersion", "uid", "creationTimestamp", "managedFields"):
        meta.pop(key, None)
    meta["name"] = f"iris-model-{version}"
    if labelled:
        meta["labels"]["modelops.dev/version"] = version
        meta["annotations"]["modelops.dev/accuracy"] = "0.999"
    else:
        meta.pop("labels")
        meta.pop("ownerReferences")
    return cm


def server_version(cluster) -> str:
    server = cluster.deployment("iris-server")
    return str(server["spec"]["template"]["metadata"]["labels"]["modelops.dev/version"])


# The unlabelled impostor's deletion is no event the operator watches (children are watched by
# label): the next resync is what trains v2, so it comes after 5 s instead of the fixture's 30.
@pytest.mark.operator_env(MODELOPS_RESYNC_SECONDS="5")
@pytest.mark.parametrize("labelled", [True, False], ids=["labelled-and-owned", "unlabelled"])
def test_a_precreated_artifact_never_serves_nor_gates(cluster, operator, trained, wait, labelled):
    _serve_v1(cluster, trained, wait)
    v1 = cluster.get(cm_path(cluster, "iris-model-v1"))
    cluster.apply(impostor(cluster, v1, "v2", labelled))
    generation = cluster.md("iris")["metadata"]["generation"]
    cluster.patch_md("iris", {"modelVersion": "v2"})

    def blocked():
        s = cluster.status("iris")
        degraded = {c["type"]: c for c in s.get("conditions", [])}.get("Degraded", {})
        ok = s.get("observedGeneration", 0) > generation and degraded.get("status") == "True"
        return s if ok else None

    status = wait(blocked, 30, "Degraded: ArtifactNotTrusted")
    degraded = {c["type"]: c for c in status["conditions"]}["Degraded"]
    assert degraded["reason"] == "ArtifactNotTrusted", degraded
    assert (
        "ConfigMap iris-model-v2 exists but was not stored by the operator" in degraded["message"]
    )
    assert status["servingVersion"] == "v1" and status["phase"] == "Degraded"
    assert [h["version"] for h in status["history"]] == ["v1"]  # no verdict from the impostor
    wait(lambda: _warnings(cluster, "iris", "ArtifactNotTrusted"), 15, "Warning event")
    time.sleep(2)  # a few more passes: still no Job, still v1, the impostor left alone
    assert cluster.job("iris", "v2") is None
    assert server_version(cluster) == "v1"
    assert cluster.get(cm_path(cluster, "iris-model-v2")) is not None

    # Deleting it lets the operator train v2 itself, and what serves is its own artifact.
    cluster.kubectl("delete", "configmap", "iris-model-v2", "-n", cluster.ns)
    cluster.finish_trainer("iris", "v2", trained("v2", "--param", "n_neighbors=3"))
    status = cluster.serve("iris", "v2")
    recorded = next(h for h in status["history"] if h["version"] == "v2")
    stored = cluster.get(cm_path(cluster, "iris-model-v2"))
    assert stored["metadata"]["annotations"]["modelops.dev/model-sha256"] == recorded["modelSha256"]
    assert stored["metadata"]["ownerReferences"][0]["uid"] == cluster.md("iris")["metadata"]["uid"]
    container = cluster.deployment("iris-server")["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["MODELOPS_SERVER_MODEL_SHA256"] == recorded["modelSha256"]


def test_an_image_outside_the_allowed_prefixes_is_refused(cluster, operator, trained, wait):
    _serve_v1(cluster, trained, wait)
    cluster.patch_md("iris", {"serving": {"image": "registry.invalid/someone/server:1"}})

    def refused():
        s = cluster.status("iris")
        degraded = {c["type"]: c for c in s.get("conditions", [])}.get("Degraded", {})
        return s if degraded.get("reason") == "ImageNotAllowed" else None

    status = wait(refused, 30, "Degraded: ImageNotAllowed")
    assert status["servingVersion"] == "v1"
    container = cluster.deployment("iris-server")["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] != "registry.invalid/someone/server:1"
