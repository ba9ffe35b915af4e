"""Argo CD (the real one, as processes) syncing this repository's GitOps trees from a test Git
repository, on a control plane of its own. See modelops_testenv.argocd and docs/argocd-local.md."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from modelops_testenv import ControlPlane, terminate_as_interrupt
from modelops_testenv.argocd import GitOps, gitops, new_workdir

ROOT = Path(__file__).resolve().parents[2]


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
def gitops_cp(
    gitops_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GitOps]:
    with (
        terminate_as_interrupt(),
        gitops(gitops_plane, new_workdir(tmp_path_factory.mktemp("gitops")), ROOT) as run,
    ):
        yield run
