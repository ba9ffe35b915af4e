"""Shared pytest configuration for every component's tests."""

# Kubernetes control-plane fixtures (control_plane, kwok_nodes, namespace, kubectl, kubeconfig);
# a control plane only starts when a test asks for one of them.
pytest_plugins = ["modelops_testenv.pytest_plugin"]

import subprocess  # noqa: E402
from collections.abc import Callable, Iterator  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import pytest  # noqa: E402
import yaml  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
_OPERATOR_RBAC_KINDS = {
    "ServiceAccount",
    "ClusterRole",
    "ClusterRoleBinding",
    "Role",
    "RoleBinding",
}


def _kustomize(path: str) -> list[dict[str, Any]]:
    out = subprocess.run(
        ["kubectl", "kustomize", str(ROOT / path)], check=True, capture_output=True, text=True
    ).stdout
    return [d for d in yaml.safe_load_all(out) if d]


@pytest.fixture(scope="session")
def kustomize() -> Callable[[str], list[dict[str, Any]]]:
    """The documents `kubectl kustomize` builds from a directory of this repository."""
    return _kustomize


@pytest.fixture(scope="session")
def operator_rbac() -> Callable[[str, str, str, dict[str, str]], str]:
    """The operator's shipped RBAC objects of an overlay, under a test's own identity: names
    suffixed, the ServiceAccount in `system_ns`, RoleBindings moved by `watched` (old → new
    namespace). Other tests' session-wide RBAC stays untouched."""

    def build(path: str, suffix: str, system_ns: str, watched: dict[str, str]) -> str:
        docs = []
        for doc in _kustomize(path):
            meta = doc["metadata"]
            if doc["kind"] not in _OPERATOR_RBAC_KINDS:
                continue
            if not meta["name"].startswith("modelops-operator"):
                continue
            if doc["kind"] == "ServiceAccount":
                meta["namespace"] = system_ns
            else:
                meta["name"] = f"{meta['name']}-{suffix}"
            if "roleRef" in doc:
                doc["roleRef"]["name"] = f"{doc['roleRef']['name']}-{suffix}"
                for subject in doc["subjects"]:
                    subject["namespace"] = system_ns
            if doc["kind"] in ("Role", "RoleBinding"):
                # The leader election's in the operator's own namespace, the others in the
                # watched ones.
                ns = meta["namespace"]
                meta["namespace"] = system_ns if ns == "modelops-system" else watched[ns]
            docs.append(doc)
        return yaml.safe_dump_all(docs)

    return build


# Fixtures that hold the machine's one real node (modelops_testenv.pytest_plugin, tests/e2e).
_REAL_NODE_FIXTURES = {
    "_real_node_session", "real_node", "no_real_node", "node_namespace", "node_kubectl",
    "product_images", "deployed_product", "e2e_namespace",
}  # fmt: skip
REAL_NODE_GROUP = "real-node"
# Where the tests that need the real node live (checked at collection).
REAL_NODE_DIRS = ("tests/e2e/", "tests/node/")


def _needs_real_node(item: pytest.Item) -> bool:
    return bool(item.get_closest_marker("e2e")) or bool(
        _REAL_NODE_FIXTURES & set(getattr(item, "fixturenames", ()))
    )


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    """After the last test that needs the real node (they run in a row), stop it: it is one
    per machine, and the rest of the session (or a worker's share of it) has no use for it."""
    result = yield
    if _needs_real_node(item) and (nextitem is None or not _needs_real_node(nextitem)):
        # (Not imported: pytest registers, and rewrites, the plugin itself.)
        plugin = item.config.pluginmanager.get_plugin("modelops_testenv.pytest_plugin")
        plugin.release_real_node(item.config)
    return result


def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """Under pytest-xdist (`make test`): each module runs in one worker (its module fixtures
    are set up once, its tests keep their order), and every test under REAL_NODE_DIRS in one
    worker, in collection order. By path: the controller only sees node ids (pytest 9's
    node ids cannot carry xdist's `@group` suffix, so `--dist loadgroup` would not group)."""
    from xdist.scheduler import LoadScopeScheduling

    class Scheduling(LoadScopeScheduling):  # type: ignore[misc]
        def _split_scope(self, nodeid: str) -> str:
            module = nodeid.split("::")[0]
            return REAL_NODE_GROUP if module.startswith(REAL_NODE_DIRS) else module

    return Scheduling(config, log)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests not marked integration or e2e are unit tests, so `-m unit` selects them.

    Order: the real-node tests first, then the modules with integration tests, then the others
    (stable within each), so that under pytest-xdist (pytest_xdist_make_scheduler) the longest
    work starts first.
    """
    for item in items:
        if not any(item.get_closest_marker(tier) for tier in ("integration", "e2e")):
            item.add_marker(pytest.mark.unit)
        if _needs_real_node(item) and not item.nodeid.startswith(REAL_NODE_DIRS):
            raise pytest.UsageError(
                f"{item.nodeid} needs the real node: move it under one of {REAL_NODE_DIRS} "
                "(tests/conftest.py runs those in one pytest-xdist worker: one node per machine)"
            )
    modules: dict[str, tuple[bool, bool]] = {}
    for item in items:
        module = item.nodeid.split("::")[0]
        real, integration = modules.get(module, (False, False))
        modules[module] = (
            real or _needs_real_node(item),
            integration or bool(item.get_closest_marker("integration")),
        )
    # Whole modules move (their module fixtures stay set up once); real-node tests first.
    items.sort(
        key=lambda i: (
            not _needs_real_node(i),
            *(not flag for flag in modules[i.nodeid.split("::")[0]]),
        )
    )
