"""The shipped Argo CD objects under the real Argo CD, on a control plane without nodes.

Argo CD (application controller, repo server, redis) syncs the app of apps from a test Git
repository seeded with this repository's trees. Without a node nothing runs, but everything
Argo CD does is real: rendering with kustomize, server-side apply, the health it computes with
the shipped Lua from what the API server holds, self-heal and pruning. The operator's part
(status written by it) is played by the test through the status subresource; the loop with the
operator and serving models runs on the real node (test_gitops_e2e.py).
"""

from __future__ import annotations

import copy
import time
from typing import Any

import pytest
import yaml

from modelops_testenv.argocd import (
    IN_CLUSTER,
    health_status,
    resource_health,
    summary,
    sync_status,
    synced_revision,
)

from .conftest import MODELS_APP, MODELS_NS, PLATFORM_APP, ROOT, ROOT_APP, GitOps

pytestmark = pytest.mark.integration

MODEL = "iris"
MODEL_FILE = "config/gitops/models/iris.yaml"
SYNC_TIMEOUT = 120.0  # a busy 2-core machine; a quiet one takes a few seconds
TESTDATA = ROOT / "argocd" / "health" / "modelops.dev" / "ModelDeployment" / "testdata"


def _synced_at(sha: str):  # type: ignore[no-untyped-def]
    return lambda app: sync_status(app) == "Synced" and synced_revision(app) == sha


def _operator_status(gitops: GitOps, testdata: str) -> None:
    """Write a status from the health check's testdata, as the operator would."""
    md = gitops.model(MODEL)
    status = copy.deepcopy(yaml.safe_load((TESTDATA / testdata).read_text())["status"])
    status["observedGeneration"] = md["metadata"]["generation"]
    body = {"status": status}
    gitops.kubectl(
        "-n", MODELS_NS, "patch", f"modeldeployment/{MODEL}", "--subresource=status",
        "--type=merge", "-p", yaml.safe_dump(body),
    )  # fmt: skip


def _model_health(app: dict[str, Any]) -> dict[str, str]:
    return resource_health(app, "ModelDeployment", MODEL)


def test_bootstrap_syncs_the_app_of_apps(gitops: GitOps) -> None:
    head = gitops.repo.head()
    root = gitops.argocd.wait_app(ROOT_APP, _synced_at(head), SYNC_TIMEOUT, "Synced")
    assert health_status(root) == "Healthy", summary(root)
    for name, path in (
        (PLATFORM_APP, "config/gitops/platform"),
        (MODELS_APP, "config/gitops/models"),
    ):
        app = gitops.argocd.wait_app(name, _synced_at(head), SYNC_TIMEOUT, "Synced")
        # The root Application's patch pointed the child at the test repository.
        assert app["spec"]["source"] == {
            "repoURL": gitops.repo.url, "targetRevision": "main", "path": path,
        }  # fmt: skip
        assert app["spec"]["destination"]["server"] == IN_CLUSTER
    # What Argo CD applied is in the cluster.
    assert gitops.get(
        "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/modeldeployments.modelops.dev"
    )
    assert gitops.get("/apis/apps/v1/namespaces/modelops-system/deployments/modelops-operator")
    assert gitops.model(MODEL)["spec"]["modelVersion"] == "v1"


def test_argocd_computes_the_models_health_with_the_shipped_lua(gitops: GitOps) -> None:
    waiting = "Waiting for the modelops operator to report the status of v1"
    app = gitops.argocd.wait_app(
        MODELS_APP, lambda a: _model_health(a).get("message") == waiting, SYNC_TIMEOUT, "waiting"
    )
    assert _model_health(app)["status"] == "Progressing"
    assert health_status(app) == "Progressing"

    _operator_status(gitops, "serving.yaml")
    app = gitops.argocd.wait_app(
        MODELS_APP, lambda a: health_status(a) == "Healthy", SYNC_TIMEOUT, "Healthy"
    )
    assert _model_health(app)["status"] == "Healthy"

    _operator_status(gitops, "gate-rejected-regression.yaml")
    app = gitops.argocd.wait_app(
        MODELS_APP, lambda a: health_status(a) == "Degraded", SYNC_TIMEOUT, "Degraded"
    )
    message = _model_health(app)["message"]
    gate_message = gitops.model(MODEL)["status"]["gate"]["message"]
    assert gate_message in message, message
    _operator_status(gitops, "serving.yaml")


def test_a_pushed_commit_is_synced(gitops: GitOps) -> None:
    gitops.edit_yaml(MODEL_FILE, lambda d: d["spec"].update(loadRate=3))
    pushed = time.monotonic()
    sha = gitops.push("models: iris at 3 requests/s")
    gitops.argocd.wait_app(MODELS_APP, _synced_at(sha), SYNC_TIMEOUT, f"Synced at {sha[:8]}")
    print(f"push -> Synced: {time.monotonic() - pushed:.1f} s")
    assert gitops.model(MODEL)["spec"]["loadRate"] == 3


def test_self_heal_reverts_a_hand_edit_but_keeps_the_autoscalers_replicas(gitops: GitOps) -> None:
    gitops.kubectl(
        "-n", MODELS_NS, "patch", f"modeldeployment/{MODEL}", "--type=merge",
        "-p", '{"spec": {"loadRate": 9, "replicas": 4}}',
    )  # fmt: skip
    deadline = time.monotonic() + SYNC_TIMEOUT
    while gitops.model(MODEL)["spec"]["loadRate"] != 3:
        assert time.monotonic() < deadline, summary(gitops.argocd.application(MODELS_APP))
        time.sleep(0.5)
    # spec.replicas is in ignoreDifferences (an HPA's): self-heal left it alone.
    assert gitops.model(MODEL)["spec"]["replicas"] == 4


def test_a_deleted_model_comes_back(gitops: GitOps) -> None:
    uid = gitops.model(MODEL)["metadata"]["uid"]
    gitops.kubectl("-n", MODELS_NS, "delete", f"modeldeployment/{MODEL}", "--wait=true")
    deadline = time.monotonic() + SYNC_TIMEOUT
    while gitops.model(MODEL).get("metadata", {}).get("uid", uid) == uid:
        assert time.monotonic() < deadline, summary(gitops.argocd.application(MODELS_APP))
        time.sleep(0.5)
    assert gitops.model(MODEL)["spec"]["loadRate"] == 3


def test_prune_removes_a_model_deleted_from_git(gitops: GitOps) -> None:
    models = gitops.repo.checkout / "config" / "gitops" / "models"
    second = yaml.safe_load((models / "iris.yaml").read_text())
    second["metadata"]["name"] = "iris-canary"
    (models / "iris-canary.yaml").write_text(yaml.safe_dump(second, sort_keys=False))
    gitops.edit_yaml(
        "config/gitops/models/kustomization.yaml",
        lambda d: d["resources"].append("iris-canary.yaml"),
    )
    sha = gitops.push("models: add iris-canary")
    gitops.argocd.wait_app(MODELS_APP, _synced_at(sha), SYNC_TIMEOUT, f"Synced at {sha[:8]}")
    assert gitops.model("iris-canary")

    gitops.repo.git("revert", "--no-edit", "HEAD")
    sha = gitops.push()
    gitops.argocd.wait_app(MODELS_APP, _synced_at(sha), SYNC_TIMEOUT, f"Synced at {sha[:8]}")
    deadline = time.monotonic() + SYNC_TIMEOUT
    while gitops.model("iris-canary"):
        assert time.monotonic() < deadline, "iris-canary was not pruned"
        time.sleep(0.5)
    assert gitops.model(MODEL)
