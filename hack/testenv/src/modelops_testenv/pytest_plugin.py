"""pytest fixtures: one control plane per test session, one namespace per test.

Enable with ``pytest_plugins = ["modelops_testenv.pytest_plugin"]`` in a conftest.py.

- ``control_plane`` (session): etcd + kube-apiserver + kube-controller-manager, started once.
- ``kwok_nodes`` (session): adds kube-scheduler + kwok and ``$MODELOPS_TESTENV_NODES`` (default 1)
  fake nodes to that control plane, on first use only; returns the node names.
- ``kubeconfig`` (session): path of the admin kubeconfig.
- ``namespace`` (function): a fresh namespace for the test (its ``default`` service account
  exists), deleted afterwards without waiting.
- ``kubectl`` (function): ``kubectl(*args, input=None, check=True)`` as admin.

A real node (its own control plane in real-node mode; see docs/real-node.md), root only:

- ``real_node`` (function): the session's :class:`~modelops_testenv.node.RealNode`, started on
  first use and kept for the session. Images it imported are imported again if it restarts.
- ``node_namespace`` / ``node_kubectl`` (function): as ``namespace``/``kubectl``, on that cluster.
- ``no_real_node`` (function): stops the session's real node first, for tests that start one
  themselves (one real node per machine). These tests run first to spare a restart.

Every kubectl a test runs by name is the one built at the API server's version: the session
puts it first on ``PATH``.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from .binaries import BinariesNotFound, find_kubectl
from .controlplane import ControlPlane, terminate_as_interrupt
from .node import RealNode, leftovers_if_alone, wait_machine_free
from .process import wait_until

NODES_ENV = "MODELOPS_TESTENV_NODES"
KEEP_ENV = "MODELOPS_TESTENV_KEEP"
_kubectl_dir: Path | None = None
REAL_NODE_SESSION = pytest.StashKey["RealNodeSession"]()


def pytest_configure(config: pytest.Config) -> None:
    """Put the kubectl built at the API server's version first on PATH (if it is built)."""
    global _kubectl_dir
    try:
        kubectl = find_kubectl()
    except BinariesNotFound:
        return  # `make test-unit` without test-tools: the cluster tests fail on their own
    _kubectl_dir = Path(tempfile.mkdtemp(prefix="modelops-kubectl-"))
    (_kubectl_dir / "kubectl").symlink_to(kubectl)
    os.environ["PATH"] = f"{_kubectl_dir}{os.pathsep}{os.environ.get('PATH', '')}"


def pytest_unconfigure(config: pytest.Config) -> None:
    if _kubectl_dir is not None:
        shutil.rmtree(_kubectl_dir, ignore_errors=True)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests that need the machine's real node slot first: the session node starts later."""
    items.sort(key=lambda item: "no_real_node" not in getattr(item, "fixturenames", ()))


@pytest.fixture(scope="session")
def control_plane() -> Iterator[ControlPlane]:
    plane = ControlPlane(keep_workdir=os.environ.get(KEEP_ENV) == "1")
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


@contextlib.contextmanager
def _namespace(plane: ControlPlane, request: pytest.FixtureRequest) -> Iterator[str]:
    base = re.sub(r"[^a-z0-9-]+", "-", request.node.name.lower()).strip("-")[:40].strip("-")
    name = f"{base or 'test'}-{uuid.uuid4().hex[:6]}"
    body = {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": name, "labels": {"modelops.dev/testenv": "true"}},
    }
    status, resp = plane.request("POST", "/api/v1/namespaces", body)
    if status != 201:
        raise RuntimeError(f"creating namespace {name}: HTTP {status}: {resp}")
    if plane.controller_manager:
        # Pods are only admitted once the service-account controller made "default".
        wait_until(
            functools.partial(plane.exists, f"/api/v1/namespaces/{name}/serviceaccounts/default"),
            30,
            f"service account {name}/default",
        )
    yield name
    plane.request("DELETE", f"/api/v1/namespaces/{name}")


@pytest.fixture
def namespace(control_plane: ControlPlane, request: pytest.FixtureRequest) -> Iterator[str]:
    with _namespace(control_plane, request) as name:
        yield name


class Kubectl:
    """``kubectl`` bound to the session's control plane."""

    def __init__(self, plane: ControlPlane) -> None:
        self.plane = plane

    def __call__(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 120.0
    ) -> str:
        """Run kubectl; return stdout (raise CalledProcessError on failure when ``check``)."""
        return self.plane.kubectl(*args, input=input, check=check, timeout=timeout).stdout

    def run(
        self, *args: str, input: str | None = None, timeout: float = 120.0
    ) -> subprocess.CompletedProcess[str]:
        """Run kubectl and return the completed process, whatever its exit code."""
        return self.plane.kubectl(*args, input=input, check=False, timeout=timeout)


@pytest.fixture
def kubectl(control_plane: ControlPlane) -> Kubectl:
    return Kubectl(control_plane)


def release_real_node(config: pytest.Config) -> None:
    """Stop the session's real node now (it is one per machine: others wait for it), e.g. once
    the last test that needs it ran; what uses it is undone first. A later test that asks for
    it starts it again."""
    session = config.stash.get(REAL_NODE_SESSION, None)
    if session is not None:
        session.stop()


class RealNodeSession:
    """The session's real node: started on demand, stoppable, restarted with its images."""

    def __init__(self) -> None:
        self.node: RealNode | None = None
        self.images: list[Path] = []  # imported by tests; imported again after a restart
        self.started = False
        # What uses the node undoes itself first (e.g. the deployed product), newest first.
        self.on_stop: list[Callable[[], None]] = []

    def get(self) -> RealNode:
        if self.node is None:
            self.started = True
            # Another session's node (a parallel test run on this machine) is waited for.
            node = RealNode(keep_workdir=os.environ.get(KEEP_ENV) == "1", lock_timeout=900)
            node.start()
            self.node = node
            if self.images:
                node.import_images(self.images)
        return self.node

    def stop(self) -> None:
        while self.on_stop:
            self.on_stop.pop()()
        if self.node is not None:
            self.images = list(dict.fromkeys([*self.images, *self.node.imported]))
            self.node.stop()
            self.node = None


@pytest.fixture(scope="session")
def _real_node_session(request: pytest.FixtureRequest) -> Iterator[RealNodeSession]:
    session = RealNodeSession()
    request.config.stash[REAL_NODE_SESSION] = session
    with terminate_as_interrupt():
        try:
            yield session
        finally:
            session.stop()
    if session.started and (left := leftovers_if_alone()):
        raise RuntimeError("the real node left traces behind:\n" + "\n".join(left))


@pytest.fixture
def real_node(_real_node_session: RealNodeSession) -> RealNode:
    return _real_node_session.get()


@pytest.fixture
def no_real_node(_real_node_session: RealNodeSession) -> None:
    """No real node runs on this machine: the session's is stopped, another launcher's awaited."""
    _real_node_session.stop()
    wait_machine_free(600)


@pytest.fixture
def node_namespace(real_node: RealNode, request: pytest.FixtureRequest) -> Iterator[str]:
    with _namespace(real_node.plane, request) as name:
        yield name


@pytest.fixture
def node_kubectl(real_node: RealNode) -> Kubectl:
    return Kubectl(real_node.plane)
