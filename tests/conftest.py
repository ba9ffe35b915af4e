"""Shared pytest configuration for every component's tests."""

# Kubernetes control-plane fixtures (control_plane, kwok_nodes, namespace, kubectl, kubeconfig);
# a control plane only starts when a test asks for one of them.
pytest_plugins = ["modelops_testenv.pytest_plugin"]


def pytest_collection_modifyitems(config: object, items: list) -> None:  # type: ignore[type-arg]
    """Tests not marked integration or e2e are unit tests, so `-m unit` selects them."""
    import pytest

    for item in items:
        if not any(item.get_closest_marker(tier) for tier in ("integration", "e2e")):
            item.add_marker(pytest.mark.unit)
