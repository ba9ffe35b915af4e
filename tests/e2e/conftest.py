"""The product on a real cluster, deployed once per session (modelops_testenv.product).

``deployed_product`` (session) applies config/overlays/e2e with the images under test and waits
for the operator and Prometheus: on the session's real node (images built and imported here),
or on the cluster ``MODELOPS_E2E_KUBECONFIG`` names (kind in CI; see modelops_testenv.product).
``e2e_namespace`` (function) is a fresh namespace of that cluster for one test.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from modelops_testenv import images
from modelops_testenv.nodeconfig import REAL_NODE_TAINT
from modelops_testenv.product import ClusterKubectl, ExistingCluster, Product

ROOT = Path(__file__).resolve().parents[2]
_TAINT = f"{REAL_NODE_TAINT['key']}={REAL_NODE_TAINT['value']}:{REAL_NODE_TAINT['effect']}"


def _on_real_node(request: pytest.FixtureRequest) -> tuple[Product, ClusterKubectl]:
    # Built first: a rebuild takes minutes, the node is one per machine and others wait for it.
    built = images.build_images(ROOT)
    node = request.getfixturevalue("_real_node_session").get()
    have = set(node.images())
    missing = [i.archive for k, i in built.items() if k != "pause" and i.name not in have]
    if missing:
        node.import_images(missing)
    kubectl = ClusterKubectl(node.kubeconfig)
    # The node is tainted so that only the harness's own test pods land there; a user's node
    # runs the operator's pods as they are rendered (no toleration): the product's session
    # lifts the taint, and puts it back afterwards.
    kubectl("taint", "node", node.name, f"{REAL_NODE_TAINT['key']}-")
    names = {k: i.name for k, i in built.items() if k != "pause"}
    return Product(ROOT, kubectl, names, cluster="real-node"), kubectl


@pytest.fixture(scope="session")
def deployed_product(request: pytest.FixtureRequest) -> Iterator[Product]:
    existing = ExistingCluster.from_env()
    node_kubectl = None
    if existing is not None:
        product = Product(ROOT, existing.kubectl, existing.images, cluster="existing")
    else:
        product, node_kubectl = _on_real_node(request)
    done = False

    def teardown() -> None:
        nonlocal done
        if done:
            return
        done = True
        try:
            product.teardown()
        finally:
            if node_kubectl is not None:
                node_kubectl.run("taint", "node", "--all", _TAINT, "--overwrite")

    if node_kubectl is not None:
        # Undone before the node stops, also when it stops before the session ends (the last
        # real-node test ran: tests/conftest.py releases the node for the machine's others).
        request.getfixturevalue("_real_node_session").on_stop.append(teardown)
    try:
        product.deploy()
        yield product
    finally:
        teardown()


@pytest.fixture
def e2e_namespace(deployed_product: Product, request: pytest.FixtureRequest) -> str:
    """A fresh namespace on the product's cluster (deleted at the end of the session)."""
    return deployed_product.create_namespace(request.node.name)
