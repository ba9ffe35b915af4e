"""Argo CD (the real one, as processes) syncing this repository's GitOps trees from a test Git
repository. See modelops_testenv.argocd and docs/argocd-local.md."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from modelops_testenv import ControlPlane, terminate_as_interrupt
from modelops_testenv.argocd import ArgoCD, GitRepo, new_workdir

ROOT = Path(__file__).resolve().parents[2]
# What the Applications read: argocd/ (the app of apps), config/ (platform and models), and
# crds/ (config/crd takes the ModelDeployment CRD from there).
GITOPS_TREES = ("argocd", "config", "crds")
ROOT_APP, PLATFORM_APP, MODELS_APP = "modelops", "modelops-platform", "modelops-models"
MODELS_NS = "mlops-puj"


@dataclass
class GitOps:
    """Argo CD, the Git repository it follows, and the cluster it syncs into."""

    argocd: ArgoCD
    repo: GitRepo
    plane: ControlPlane

    def kubectl(self, *args: str, input: str | None = None) -> str:
        return self.plane.kubectl(*args, input=input).stdout

    def get(self, path: str) -> dict[str, Any]:
        """An object as the API server holds it ({} if absent)."""
        status, body = self.plane.request("GET", path)
        return body if status == 200 and isinstance(body, dict) else {}

    def model(self, name: str) -> dict[str, Any]:
        return self.get(
            f"/apis/modelops.dev/v1alpha1/namespaces/{MODELS_NS}/modeldeployments/{name}"
        )

    def edit_yaml(self, rel: str, change: Any) -> None:
        """Load a YAML file of the clone, let ``change`` mutate it in place, write it back."""
        path = self.repo.checkout / rel
        doc = yaml.safe_load(path.read_text())
        change(doc)
        path.write_text(yaml.safe_dump(doc, sort_keys=False))

    def push(self, message: str | None = None) -> str:
        """Commit the clone's changes (none: push what is committed already) and push; tell
        Argo CD (as a webhook would). The pushed commit's SHA."""
        sha = self.repo.commit_all(message) if message else self.repo.push()
        self.argocd.refresh(ROOT_APP, PLATFORM_APP, MODELS_APP)
        return sha


def bootstrap(plane: ControlPlane, workdir: Path) -> Iterator[GitOps]:
    """Seed a repository with this one's GitOps trees, start Argo CD, apply what install.sh
    applies (argocd/ rendered, the repository filled in); stop Argo CD afterwards."""
    repo = GitRepo(workdir)
    repo.seed(ROOT, GITOPS_TREES)
    rendered = subprocess.run(
        ["kubectl", "kustomize", str(repo.checkout / "argocd")],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout  # fmt: skip
    argocd = ArgoCD(plane, workdir / "argocd")
    argocd.install()
    argocd.apply_shipped(rendered, repo.url, repo.branch)
    with terminate_as_interrupt(), argocd:
        yield GitOps(argocd=argocd, repo=repo, plane=plane)


@pytest.fixture(scope="module")
def gitops_plane() -> Iterator[ControlPlane]:
    """A control plane of its own: the shipped objects are cluster-wide (the ModelDeployment
    CRD, ClusterRoles) and Argo CD prunes, so they stay away from the session's cluster."""
    plane = ControlPlane()
    with terminate_as_interrupt():
        try:
            plane.start()
            yield plane
        finally:
            plane.stop()


@pytest.fixture(scope="module")
def gitops(
    gitops_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GitOps]:
    yield from bootstrap(gitops_plane, new_workdir(tmp_path_factory.mktemp("gitops")))
