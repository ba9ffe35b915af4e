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
import json
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from modelops_testenv.argocd import (
    IN_CLUSTER,
    MODELS_APP,
    PLATFORM_APP,
    ROOT_APP,
    GitOps,
    health_status,
    resource_health,
    summary,
    sync_status,
    synced_revision,
)
from modelops_testenv.argocd import MODELS_NAMESPACE as MODELS_NS

from .conftest import ROOT

pytestmark = pytest.mark.integration

MODEL = "iris"
MODEL_FILE = "config/gitops/models/iris.yaml"
SYNC_TIMEOUT = 120.0  # a busy 2-core machine; a quiet one takes a few seconds
TESTDATA = ROOT / "argocd" / "health" / "modelops.dev" / "ModelDeployment" / "testdata"


def _synced_at(sha: str):  # type: ignore[no-untyped-def]
    return lambda app: sync_status(app) == "Synced" and synced_revision(app) == sha


def _operator_status(run: GitOps, testdata: str) -> None:
    """Write a status from the health check's testdata, as the operator would."""
    md = run.model(MODEL)
    status = copy.deepcopy(yaml.safe_load((TESTDATA / testdata).read_text())["status"])
    status["observedGeneration"] = md["metadata"]["generation"]
    # The whole status, as the operator owns it (a merge patch would keep stale fields).
    patch = json.dumps([{"op": "add", "path": "/status", "value": status}])
    run.kubectl(
        "-n", MODELS_NS, "patch", f"modeldeployment/{MODEL}", "--subresource=status",
        "--type=json", "-p", patch,
    )  # fmt: skip


def _expected_health() -> dict[str, dict[str, str]]:
    """health_test.yaml's expected {status, message} by testdata file name."""
    spec = yaml.safe_load((TESTDATA.parent / "health_test.yaml").read_text())
    return {Path(c["inputPath"]).name: c["healthStatus"] for c in spec["tests"]}


def _model_health(app: dict[str, Any]) -> dict[str, str]:
    return resource_health(app, "ModelDeployment", MODEL)


def test_bootstrap_syncs_the_app_of_apps(gitops_cp: GitOps) -> None:
    head = gitops_cp.repo.head()
    root = gitops_cp.argocd.wait_app(ROOT_APP, _synced_at(head), SYNC_TIMEOUT, "Synced")
    assert health_status(root) == "Healthy", summary(root)
    for name, path in (
        (PLATFORM_APP, "config/gitops/platform"),
        (MODELS_APP, "config/gitops/models"),
    ):
        app = gitops_cp.argocd.wait_app(name, _synced_at(head), SYNC_TIMEOUT, "Synced")
        # The root Application's patch pointed the child at the test repository.
        assert app["spec"]["source"] == {
            "repoURL": gitops_cp.repo.url, "targetRevision": "main", "path": path,
        }  # fmt: skip
        assert app["spec"]["destination"]["server"] == IN_CLUSTER
    # What Argo CD applied is in the cluster.
    assert gitops_cp.get(
        "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/modeldeployments.modelops.dev"
    )
    assert gitops_cp.get("/apis/apps/v1/namespaces/modelops-system/deployments/modelops-operator")
    assert gitops_cp.model(MODEL)["spec"]["modelVersion"] == "v1"


def test_argocd_computes_the_models_health_with_the_shipped_lua(gitops_cp: GitOps) -> None:
    waiting = "Waiting for the modelops operator to report the status of v1"
    app = gitops_cp.argocd.wait_app(
        MODELS_APP, lambda a: _model_health(a).get("message") == waiting, SYNC_TIMEOUT, "waiting"
    )
    assert _model_health(app)["status"] == "Progressing"
    assert health_status(app) == "Progressing"
    # Statuses of the health check's own cases for v1 (the version in Git), as the operator
    # would write them: Argo CD's verdict on the live object is the case's expected one.
    expected = _expected_health()
    for case, app_health in (
        ("training-first.yaml", "Progressing"),
        ("rolled-back.yaml", "Healthy"),
        ("gate-rejected-first-version.yaml", "Degraded"),
    ):
        _operator_status(gitops_cp, case)
        want = expected[case]
        app = gitops_cp.argocd.wait_app(
            MODELS_APP, lambda a, w=want: _model_health(a) == w, SYNC_TIMEOUT, f"{case}: {want}"
        )
        assert health_status(app) == app_health, summary(app)
    _operator_status(gitops_cp, "rolled-back.yaml")


def test_a_pushed_commit_is_synced(gitops_cp: GitOps) -> None:
    gitops_cp.edit_yaml(MODEL_FILE, lambda d: d["spec"].update(loadRate=3))
    pushed = time.monotonic()
    sha = gitops_cp.push("models: iris at 3 requests/s")
    gitops_cp.argocd.wait_app(MODELS_APP, _synced_at(sha), SYNC_TIMEOUT, f"Synced at {sha[:8]}")
    print(f"push -> Synced: {time.monotonic() - pushed:.1f} s")
    assert gitops_cp.model(MODEL)["spec"]["loadRate"] == 3


def test_self_heal_reverts_a_hand_edit_but_keeps_the_autoscalers_replicas(
    gitops_cp: GitOps,
) -> None:
    gitops_cp.kubectl(
        "-n", MODELS_NS, "patch", f"modeldeployment/{MODEL}", "--type=merge",
        "-p", '{"spec": {"loadRate": 9, "replicas": 4}}',
    )  # fmt: skip
    deadline = time.monotonic() + SYNC_TIMEOUT
    while gitops_cp.model(MODEL)["spec"]["loadRate"] != 3:
        assert time.monotonic() < deadline, summary(gitops_cp.argocd.application(MODELS_APP))
        time.sleep(0.5)
    # spec.replicas is in ignoreDifferences (an HPA's): self-heal left it alone.
    assert gitops_cp.model(MODEL)["spec"]["replicas"] == 4


def test_a_deleted_model_comes_back(gitops_cp: GitOps) -> None:
    uid = gitops_cp.model(MODEL)["metadata"]["uid"]
    gitops_cp.kubectl("-n", MODELS_NS, "delete", f"modeldeployment/{MODEL}", "--wait=true")
    deadline = time.monotonic() + SYNC_TIMEOUT
    while gitops_cp.model(MODEL).get("metadata", {}).get("uid", uid) == uid:
        assert time.monotonic() < deadline, summary(gitops_cp.argocd.application(MODELS_APP))
        time.sleep(0.5)
    assert gitops_cp.model(MODEL)["spec"]["loadRate"] == 3


def test_prune_removes_a_model_deleted_from_git(gitops_cp: GitOps) -> None:
    models = gitops_cp.repo.checkout / "config" / "gitops" / "models"
    second = yaml.safe_load((models / "iris.yaml").read_text())
    second["metadata"]["name"] = "iris-canary"
    (models / "iris-canary.yaml").write_text(yaml.safe_dump(second, sort_keys=False))
    gitops_cp.edit_yaml(
        "config/gitops/models/kustomization.yaml",
        lambda d: d["resources"].append("iris-canary.yaml"),
    )
    sha = gitops_cp.push("models: add iris-canary")
    gitops_cp.argocd.wait_app(MODELS_APP, _synced_at(sha), SYNC_TIMEOUT, f"Synced at {sha[:8]}")
    assert gitops_cp.model("iris-canary")

    gitops_cp.repo.git("revert", "--no-edit", "HEAD")
    sha = gitops_cp.push()
    gitops_cp.argocd.wait_app(MODELS_APP, _synced_at(sha), SYNC_TIMEOUT, f"Synced at {sha[:8]}")
    deadline = time.monotonic() + SYNC_TIMEOUT
    while gitops_cp.model("iris-canary"):
        assert time.monotonic() < deadline, "iris-canary was not pruned"
        time.sleep(0.5)
    assert gitops_cp.model(MODEL)
