"""The images hack/build-images.sh builds, checked without a node.

The archives come from hack/images/Dockerfile itself (buildah, offline), so their configuration
must be exactly what the Dockerfile says, and each entrypoint must work inside the image's own
root file system: unpacked from the archive, mounted read-only with a tmpfs /tmp (as the
operator's pods run it), entered as the image's user, with no network for the batch tools.
The tests on a real node (tests/node/) run the same archives under a kubelet.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from modelops_testenv import images

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "hack/images/Dockerfile"
# python:3.11-slim's PATH, which the Debian stand-in base copies (the duplicate is upstream's).
BASE_PATH = "/usr/local/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# Mount the root read-only (tmpfs /tmp, /proc, /dev), then chroot as the image's user.
ENTER = r"""
set -eu
root="$1"; user="$2"; shift 2
mount --bind "$root" "$root"
mount -t proc proc "$root/proc"
mount --rbind /dev "$root/dev"
mount -t tmpfs -o size=64m,mode=1777 tmpfs "$root/tmp"
[ -z "${MODEL_DIR:-}" ] || { mkdir -p "$root/models" 2>/dev/null || true;
  mount -t tmpfs tmpfs "$root/models"; mkdir "$root/models/v1";
  mount --bind -o ro "$MODEL_DIR" "$root/models/v1"; }
mount -o remount,bind,ro "$root"
exec chroot --userspec="$user" --groups="${user#*:}" "$root" "$@"
"""

SETOSA = {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}


def stage(target: str) -> str:
    text = DOCKERFILE.read_text()
    return text.split(f"FROM base AS {target}\n", 1)[1].split("\nFROM ", 1)[0]


def instruction(target: str, name: str) -> Any:
    """The JSON form of ENTRYPOINT/CMD in a final stage (None when the stage has none)."""
    for line in stage(target).splitlines():
        if line.startswith(f"{name} "):
            return json.loads(line.split(" ", 1)[1])
    return None


@pytest.fixture(scope="module")
def built() -> dict[str, images.Image]:
    return images.build_images(ROOT)


@pytest.fixture(scope="module")
def rootfs(
    built: dict[str, images.Image], tmp_path_factory: pytest.TempPathFactory
) -> Callable[[str], Path]:
    unpacked: dict[str, Path] = {}

    def get(image: str) -> Path:
        if image not in unpacked:
            dest = tmp_path_factory.mktemp(f"rootfs-{image}")
            unpacked[image] = images.extract_rootfs(built[image].archive, dest)
        return unpacked[image]

    return get


def config_of(built: dict[str, images.Image], image: str) -> dict[str, Any]:
    _, _, config = images.read_manifest(built[image].archive)
    return dict(config["config"])


def env_of(config: dict[str, Any]) -> dict[str, str]:
    return dict(e.split("=", 1) for e in config.get("Env", []))


def enter(root: Path, config: dict[str, Any], *argv: str) -> list[str]:
    """argv that runs ``argv`` in the image as its User, root read-only (in a mount namespace)."""
    return ["sh", "-c", ENTER, "enter", str(root), config["User"], *argv]


def run_in(
    root: Path, config: dict[str, Any], *argv: str, offline: bool = True, **env: str
) -> subprocess.CompletedProcess[str]:
    prefix = ["unshare", "--mount", "--propagation", "private"]
    if offline:
        prefix.append("--net")
    return subprocess.run(
        [*prefix, *enter(root, config, *argv)],
        env={**env_of(config), **env},
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def test_every_archive_names_a_local_image(built: dict[str, images.Image]) -> None:
    assert set(built) == set(images.IMAGES)
    for image, found in built.items():
        name, _, _ = images.read_manifest(found.archive)
        assert name == found.name
        assert name.startswith(f"localhost/modelops-{image}:"), name
    assert built["pause"].name == images.PAUSE_IMAGE
    # Prometheus is the manifests' version (built from Go modules), and says so in its tag.
    assert f":{shipped_prometheus_tag()}-" in built["prometheus"].name


@pytest.mark.parametrize("component", images.COMPONENTS)
def test_image_config_is_the_dockerfiles(built: dict[str, images.Image], component: str) -> None:
    config = config_of(built, component)
    assert config["User"] == "65532:65532" == stage(component).split("USER ", 1)[1].split()[0]
    assert config["Entrypoint"] == instruction(component, "ENTRYPOINT")
    assert config.get("Cmd") == instruction(component, "CMD")
    env = env_of(config)
    # The base stage's ENV over python:3.11-slim's; nothing of the build stages leaks in.
    assert env["PATH"] == f"/opt/venv/bin:{BASE_PATH}"
    assert env["PYTHONUNBUFFERED"] == "1"
    assert env["LANG"] == "C.UTF-8"
    assert not {"PIP_NO_CACHE_DIR", "MODELOPS_WHEELHOUSE"} & env.keys()
    if component == "server":
        assert set(config["ExposedPorts"]) == {"8000/tcp", "8001/tcp"}  # HTTP, OIP gRPC


def test_the_user_is_the_images_and_the_root_is_read_only(
    built: dict[str, images.Image], rootfs: Callable[[str], Path]
) -> None:
    config = config_of(built, "trainer")
    probe = (
        "import getpass, json, os\n"
        "try:\n    open('/opt/venv/x', 'w'); root_writable = True\n"
        "except OSError:\n    root_writable = False\n"
        "print(json.dumps([os.getuid(), os.getgid(), os.getgroups(), root_writable,"
        " os.access('/tmp', os.W_OK), getpass.getuser()]))"
    )
    out = run_in(rootfs("trainer"), config, "python3", "-c", probe)
    assert out.returncode == 0, out.stderr
    # The user has a name: kopf (peering identity) asks getpass.getuser() for it.
    assert json.loads(out.stdout) == [65532, 65532, [65532], False, True, "nonroot"]


def test_trainer_trains_in_its_image(
    built: dict[str, images.Image], rootfs: Callable[[str], Path]
) -> None:
    config = config_of(built, "trainer")
    out = run_in(
        rootfs("trainer"),
        config,
        *config["Entrypoint"],
        *("train", "--version", "v1", "--name", "iris", "--output-dir", "/tmp/models"),
        HOME="/tmp",
    )
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)
    assert summary["status"] == "Succeeded"
    assert summary["accuracy"] >= 0.85


@pytest.mark.parametrize(("component", "expect"), [("operator", "operator"), ("loadgen", "usage")])
def test_entrypoint_answers_help(
    built: dict[str, images.Image], rootfs: Callable[[str], Path], component: str, expect: str
) -> None:
    config = config_of(built, component)
    out = run_in(rootfs(component), config, *config["Entrypoint"], "--help", HOME="/tmp")
    assert out.returncode == 0, out.stderr
    assert expect in out.stdout.lower()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    """A model trained on the host, as the artifact ConfigMap would hold it."""
    trainer = str(ROOT / ".venv/bin/modelops-trainer")
    subprocess.run(
        [trainer, "train", "--version", "v1", "--name", "iris", "--output-dir", str(tmp_path)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    return tmp_path / "v1"


@pytest.fixture
def server(
    built: dict[str, images.Image], rootfs: Callable[[str], Path], model_dir: Path
) -> Iterator[str]:
    """The server image's entrypoint on 127.0.0.1, serving a read-only model folder."""
    config = config_of(built, "server")
    port = _free_port()
    env = {
        **env_of(config),
        "MODEL_DIR": str(model_dir),
        "HOME": "/tmp",
        "MODELOPS_SERVER_ARTIFACT_DIR": "/models/v1",
        "MODELOPS_SERVER_HOST": "127.0.0.1",
        "MODELOPS_SERVER_PORT": str(port),
    }
    argv = ["unshare", "--mount", "--propagation", "private"]
    argv += enter(rootfs("server"), config, *config["Entrypoint"])
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_server_serves_a_read_only_model_from_its_image(server: str) -> None:
    deadline = time.monotonic() + 90  # generous: a loaded 2-core machine
    while True:
        try:
            with urllib.request.urlopen(f"{server}/readyz", timeout=5) as resp:
                if resp.status == 200:
                    break
        except OSError:
            if time.monotonic() > deadline:
                raise
        time.sleep(0.3)
    body = json.dumps(SETOSA).encode()
    request = urllib.request.Request(
        f"{server}/predict", data=body, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10) as resp:
        assert json.load(resp)["species"] == "setosa"


def test_pause_image_is_upstreams_static_pause(
    built: dict[str, images.Image], rootfs: Callable[[str], Path]
) -> None:
    config = config_of(built, "pause")
    assert config["User"] == "65535:65535"
    assert config["Entrypoint"] == ["/pause"]
    binary = rootfs("pause") / "pause"
    assert b"/lib64/ld-linux" not in binary.read_bytes()  # static: no interpreter
    # The binary a node may run on the host is the image's.
    assert images.pause_binary().read_bytes() == binary.read_bytes()
    proc = subprocess.Popen([str(binary)], stderr=subprocess.PIPE)
    time.sleep(0.3)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=10) == 0


def shipped_prometheus_tag() -> str:
    """The tag of the Prometheus image config/prometheus ships (e.g. v2.53.3)."""
    deployment = yaml.safe_load((ROOT / "config/prometheus/deployment.yaml").read_text())
    image: str = deployment["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image.startswith("prom/prometheus:v"), image
    return image.rsplit(":", 1)[1]


def test_prometheus_image_is_the_shipped_version_with_kubernetes_discovery(
    built: dict[str, images.Image], rootfs: Callable[[str], Path]
) -> None:
    config = config_of(built, "prometheus")
    # As upstream's prom/prometheus image.
    assert config["User"] == "65534:65534"
    assert config["Entrypoint"] == ["/bin/prometheus"]
    assert config["WorkingDir"] == "/prometheus"
    root = rootfs("prometheus")
    assert (root / "prometheus").stat().st_uid == 65534
    binary = root / "bin/prometheus"
    assert b"/lib64/ld-linux" not in binary.read_bytes()  # static: the image has nothing else
    out = subprocess.run(
        [str(binary), "--version"], capture_output=True, text=True, timeout=60, check=True
    )
    # Debian's 2.42 lacks the Kubernetes discovery the shipped config uses (tests/e2e run it).
    version = shipped_prometheus_tag().removeprefix("v")
    assert f"prometheus, version {version}" in out.stdout + out.stderr


def test_a_second_build_reuses_every_image(built: dict[str, images.Image]) -> None:
    """Nothing changed since the fixture's build: every image is reused, archives untouched."""
    before = {k: (v.archive.stat().st_mtime_ns, v.key) for k, v in built.items()}
    out = subprocess.run(
        [str(ROOT / "hack/build-images.sh")],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    for image in images.IMAGES:
        assert f"] {image}: up to date" in out.stderr, out.stderr
    again = images.find_images()
    assert {k: (v.archive.stat().st_mtime_ns, v.key) for k, v in again.items()} == before
