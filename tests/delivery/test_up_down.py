"""`make up` / `make down` where they cannot deploy: clear messages, nothing half-done.

A real run needs Docker and kind (the e2e job of .github/workflows/ci.yml does it); here the
paths that stop before touching anything are tested with fake tools on PATH.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
UP = ROOT / "hack/up.sh"
DOWN = ROOT / "hack/down.sh"


def fake(bin_dir: Path, name: str, script: str = "exit 0") -> None:
    path = bin_dir / name
    path.write_text(f"#!/bin/sh\n{script}\n")
    path.chmod(0o755)


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """An environment whose PATH has only the basic tools (no docker, kind, kubectl)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("bash", "sed", "grep", "cat", "mkdir", "rm", "dirname", "printf", "env"):
        for d in ("/usr/bin", "/bin"):
            if Path(d, tool).exists():
                (bin_dir / tool).symlink_to(Path(d, tool))
                break
    return {"PATH": str(bin_dir), "HOME": str(tmp_path), "XDG_STATE_HOME": str(tmp_path / "s")}


def run(script: Path, env: dict[str, str], **extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["/bin/bash", str(script)],
        env={**env, **extra},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_without_docker_up_points_to_make_demo(env: dict[str, str], tmp_path: Path):
    out = run(UP, env)
    assert out.returncode == 3
    assert "docker is not installed" in out.stderr
    assert "make demo" in out.stderr
    assert not (tmp_path / "s/modelops/up.env").exists()  # nothing recorded, nothing created


def test_docker_client_without_engine(env: dict[str, str]):
    fake(Path(env["PATH"]), "docker", 'echo "Cannot connect to the Docker daemon" >&2; exit 1')
    out = run(UP, env)
    assert out.returncode == 3
    assert "no Docker engine answers" in out.stderr and "make demo" in out.stderr


def test_engine_but_no_kind(env: dict[str, str]):
    fake(Path(env["PATH"]), "docker")
    fake(Path(env["PATH"]), "kubectl")
    out = run(UP, env)
    assert out.returncode == 3
    assert "kind is not installed" in out.stderr


def test_minikube_not_running(env: dict[str, str]):
    for tool in ("docker", "kubectl"):
        fake(Path(env["PATH"]), tool)
    fake(Path(env["PATH"]), "minikube", "exit 7")
    out = run(UP, env, PLATFORM="minikube")
    assert out.returncode == 3
    assert "minikube is not running" in out.stderr


def test_unknown_platform(env: dict[str, str]):
    out = run(UP, env, PLATFORM="k3d")
    assert out.returncode == 1
    assert "use kind, minikube or microk8s" in out.stderr


def test_this_machine_has_no_docker_engine_and_up_says_so():
    """On the real PATH of this machine (a docker client, no daemon): the same clear stop."""
    probe = subprocess.run(["sh", "-c", "docker info"], capture_output=True, check=False)
    if probe.returncode == 0:
        pytest.skip("a Docker engine answers here: make up would really deploy")
    out = subprocess.run(["bash", str(UP)], capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 3
    assert "make demo" in out.stderr


def test_down_without_up_removes_nothing(env: dict[str, str]):
    out = run(DOWN, env)
    assert out.returncode == 0
    assert "nothing to remove" in out.stderr


def test_down_deletes_only_a_cluster_up_created(env: dict[str, str], tmp_path: Path):
    calls = tmp_path / "calls"
    fake(Path(env["PATH"]), "kind", f'echo "kind $*" >> {calls}')
    fake(Path(env["PATH"]), "kubectl", f'echo "kubectl $*" >> {calls}')
    state = tmp_path / "s/modelops"
    state.mkdir(parents=True)

    (state / "up.env").write_text(
        "PLATFORM=kind\nCLUSTER_NAME=mo\nCONTEXT=kind-mo\nCREATED_CLUSTER=1\n"
    )
    assert run(DOWN, env).returncode == 0
    assert calls.read_text() == "kind delete cluster --name mo\n"
    assert not (state / "up.env").exists()

    calls.unlink()
    (state / "up.env").write_text(
        "PLATFORM=kind\nCLUSTER_NAME=mo\nCONTEXT=kind-mo\nCREATED_CLUSTER=0\n"
    )
    assert run(DOWN, env).returncode == 0
    lines = calls.read_text().splitlines()
    assert all(
        line.startswith("kubectl --context kind-mo delete -k config/overlays/kind")
        for line in lines
    )
    assert "modelops.dev/part=models" in lines[0]  # the sample before the platform
    assert len(lines) == 2
