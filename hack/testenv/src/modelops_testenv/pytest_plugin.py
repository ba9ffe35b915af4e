"""pytest fixtures: one control plane per test session, one namespace per test.

Enable with ``pytest_plugins = ["modelops_testenv.pytest_plugin"]`` in a conftest.py.

- ``control_plane`` (session): etcd + kube-apiserver + kube-controller-manager, started once.
- ``kwok_nodes`` (session): adds kube-scheduler + kwok and ``$MODELOPS_TESTENV_NODES`` (default 1)
  fake nodes to that control plane, on first use only; returns the node names.
- ``kubeconfig`` (session): path of the admin kubeconfig.
- ``namespace`` (function): a fresh namespace for the test (its ``default`` service account
  exists), deleted afterwards without waiting.
- ``kubectl`` (function): ``kubectl(*args, input=None, check=True)`` as admin.
"""

from __future__ import annotations

import functools
import os
import re
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from .controlplane import ControlPlane, terminate_as_interrupt
from .process import wait_until

NODES_ENV = "MODELOPS_TESTENV_NODES"


@pytest.fixture(scope="session")
def control_plane() -> Iterator[ControlPlane]:
    plane = ControlPlane(keep_workdir=os.environ.get("MODELOPS_TESTENV_KEEP") == "1")
    with terminate_as_interrupt():
        try:
            plane.start()
            yield plane
        finally:
            plane.stop()


@pytest.fixture(scope="session")
def kwok_nodes(control_plane: ControlPlane) -> list[str]:
    return control_plane.start_nodes(int(os.environ.get(NODES_ENV, "1")))


@pytest.fixture(scope="session")
def kubeconfig(control_plane: ControlPlane) -> Path:
    return control_plane.kubeconfig


@pytest.fixture
def namespace(control_plane: ControlPlane, request: pytest.FixtureRequest) -> Iterator[str]:
    base = re.sub(r"[^a-z0-9-]+", "-", request.node.name.lower()).strip("-")[:40].strip("-")
    name = f"{base or 'test'}-{uuid.uuid4().hex[:6]}"
    body = {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": name, "labels": {"modelops.dev/testenv": "true"}},
    }
    status, resp = control_plane.request("POST", "/api/v1/namespaces", body)
    if status != 201:
        raise RuntimeError(f"creating namespace {name}: HTTP {status}: {resp}")
    if control_plane.controller_manager:
        # Pods are only admitted once the service-account controller made "default".
        wait_until(
            functools.partial(
                control_plane.exists, f"/api/v1/namespaces/{name}/serviceaccounts/default"
            ),
            30,
            f"service account {name}/default",
        )
    yield name
    control_plane.request("DELETE", f"/api/v1/namespaces/{name}")


class Kubectl:
    """``kubectl`` bound to the session's control plane."""

    def __init__(self, plane: ControlPlane) -> None:
        self.plane = plane

    def __call__(self, *args: str, input: str | None = None, check: bool = True) -> str:
        """Run kubectl; return stdout (raise CalledProcessError on failure when ``check``)."""
        return self.plane.kubectl(*args, input=input, check=check).stdout

    def run(self, *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
        """Run kubectl and return the completed process, whatever its exit code."""
        return self.plane.kubectl(*args, input=input, check=False)


@pytest.fixture
def kubectl(control_plane: ControlPlane) -> Kubectl:
    return Kubectl(control_plane)
