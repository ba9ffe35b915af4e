"""Fixtures of the real-node tests (the node itself: modelops_testenv.pytest_plugin)."""

from __future__ import annotations

from pathlib import Path

import pytest

from modelops_testenv import images
from modelops_testenv.node import RealNode

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def built_images() -> dict[str, images.Image]:
    """Every image, rebuilt first if its inputs changed (a few seconds when none did)."""
    return images.build_images(ROOT)


@pytest.fixture
def product_images(real_node: RealNode, built_images: dict[str, images.Image]) -> dict[str, str]:
    """Image names by image (operator, trainer, server, loadgen, prometheus), imported into the
    real node's containerd unless it holds them already; pods use them with pullPolicy Never."""
    have = set(real_node.images())
    wanted = {k: v for k, v in built_images.items() if k != "pause"}  # the node imports pause
    missing = [image.archive for image in wanted.values() if image.name not in have]
    if missing:
        real_node.import_images(missing)
    return {k: v.name for k, v in wanted.items()}
