"""What each image installs, read from the requirements hack/images/install.sh exports from
uv.lock (the same files the Dockerfile installs): the operator's image has no
machine-learning stack, and every image that reads artifacts or logs gets the contract."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
ML_STACK = {"scikit-learn", "numpy", "scipy", "joblib", "threadpoolctl"}


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("image-build")
    subprocess.run(
        [str(ROOT / "hack/images/install.sh"), "export", str(out)], check=True, timeout=120
    )
    return out


def packages(requirements: Path) -> set[str]:
    names = set()
    for line in requirements.read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==", line)
        if match:
            names.add(match.group(1).lower().replace("_", "-"))
    return names


def test_operator_image_has_no_machine_learning_stack(exported: Path) -> None:
    installed = packages(exported / "operator" / "requirements.txt")
    assert "kopf" in installed and "kubernetes" in installed  # the export is the real one
    assert not installed & ML_STACK, f"operator image would ship {sorted(installed & ML_STACK)}"
    local = (exported / "operator" / "local.txt").read_text().split()
    assert sorted(local) == ["operator", "operator/contract"]  # not the trainer


@pytest.mark.parametrize("component", ["trainer", "server", "loadgen"])
def test_every_component_image_gets_the_contract(exported: Path, component: str) -> None:
    assert "operator/contract" in (exported / component / "local.txt").read_text().split()


def test_trainer_and_server_images_keep_the_stack_they_need(exported: Path) -> None:
    for component in ("trainer", "server"):
        installed = packages(exported / component / "requirements.txt")
        assert {"scikit-learn", "numpy", "joblib"} <= installed, component
