"""The container images: their install step, and the images hack/build-images.sh builds.

hack/images/Dockerfile runs ``hack/images/install.sh install <component>`` in its build stage
and copies only the resulting venv into the final image. The first tests run the same script
(same requirements exported from uv.lock, same pip --require-hashes --no-deps, same wheels) into
a fresh venv per component on this machine and start the entrypoint from it; venvs are cached
under ~/.cache/modelops/image-venvs/, keyed by a hash of everything that goes in.

The others check the real images: hack/build-images.sh builds that same Dockerfile with buildah
(no Docker engine, no network in the build) into OCI archives; their configuration must be the
Dockerfile's, and each entrypoint must work inside the image's own root file system, run as the
image's user with no network.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from modelops_testenv import images

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "modelops" / "image-venvs"
SOURCES = ["trainer", "model-server", "loadgen", "operator"]
# The Dockerfile's WHEELHOUSE build-arg, as hack/build-images.sh passes it.
WHEELHOUSE = ".image-build/wheelhouse"
BUILD_TOOLS = {"pip", "hatchling", "uv", "setuptools", "wheel"}


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A build context like the image's: .image-build/ plus the workspace packages.

    Installs read the wheelhouse hack/build-images.sh keeps, as the offline image build does
    (.image-build/wheelhouse), so the test itself reaches no package index.
    """
    ctx = tmp_path_factory.mktemp("context")
    subprocess.run(
        [str(ROOT / "hack/images/install.sh"), "export", str(ctx / ".image-build")],
        check=True,
        timeout=120,
    )
    (ctx / WHEELHOUSE).symlink_to(images.wheelhouse(ROOT))
    for name in SOURCES:
        shutil.copytree(
            ROOT / name, ctx / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
        )
    for component in ("operator", "trainer", "server", "loadgen"):
        _KEYS[(ctx, component)] = _key(ctx, component)
    return ctx


def _key(ctx: Path, component: str) -> str:
    digest = hashlib.sha256()
    files = [ROOT / "hack/images/install.sh", ctx / ".image-build/build-requirements.txt"]
    files += sorted((ctx / ".image-build" / component).iterdir())
    for name in SOURCES:
        files += sorted(p for p in (ctx / name).rglob("*") if p.is_file())
    for path in files:
        digest.update(str(path.relative_to(ctx) if ctx in path.parents else path.name).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


_KEYS: dict[tuple[Path, str], str] = {}


def image_venv(ctx: Path, component: str) -> Path:
    # Keyed once per context, before any build: pip wheel leaves files in the package dirs.
    key = _KEYS.setdefault((ctx, component), _key(ctx, component))
    venv = CACHE / f"{component}-{key}"
    if (venv / ".complete").exists():
        return venv
    for stale in CACHE.glob(f"{component}-*"):  # venvs of earlier sources: never reused
        shutil.rmtree(stale, ignore_errors=True)
    venv.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [str(ROOT / "hack/images/install.sh"), "install", component, str(ctx), str(venv)],
        check=True,
        timeout=900,
        env={**os.environ, "MODELOPS_WHEELHOUSE": WHEELHOUSE},
    )
    (venv / ".complete").touch()
    return venv


def installed(venv: Path) -> set[str]:
    code = (
        "import importlib.metadata as m, json;"
        "print(json.dumps(sorted({d.metadata['Name'].lower().replace('_', '-') "
        "for d in m.distributions()})))"
    )
    out = subprocess.run(
        [str(venv / "bin/python"), "-c", code], check=True, capture_output=True, text=True
    )
    return set(json.loads(out.stdout))


def locked(ctx: Path, component: str) -> set[str]:
    names = set()
    for line in (ctx / ".image-build" / component / "requirements.txt").read_text().splitlines():
        if line and not line[0].isspace() and not line.startswith("#"):
            names.add(line.split("==")[0].strip().lower().replace("_", "-"))
    return names


def run(venv: Path, *cmd: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {"PATH": f"{venv / 'bin'}:/usr/bin:/bin", "HOME": str(cwd or venv)}
    return subprocess.run(
        [str(venv / "bin" / cmd[0]), *cmd[1:]],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
        env=env,
        check=False,
    )


@pytest.mark.parametrize(
    ("component", "local"),
    [
        # Every image gets the contract; the operator's no longer gets the trainer (issue 13).
        ("operator", {"modelops", "modelops-contract"}),
        ("trainer", {"modelops-trainer", "modelops-contract"}),
        ("server", {"modelops-model-server", "modelops-contract"}),
        ("loadgen", {"modelops-loadgen", "modelops-contract"}),
    ],
)
def test_image_venv_holds_exactly_the_locked_packages(exported: Path, component: str, local):
    venv = image_venv(exported, component)
    have = installed(venv)
    assert not have & BUILD_TOOLS, (
        f"build tools left in the {component} image: {have & BUILD_TOOLS}"
    )
    # Markers (python version, platform) may leave a locked line out; nothing extra may come in.
    assert have - local <= locked(exported, component)
    assert local <= have


def test_operator_entrypoint(exported: Path):
    out = run(image_venv(exported, "operator"), "modelops", "--help")
    assert out.returncode == 0, out.stderr
    assert "operator" in out.stdout


def test_trainer_entrypoint_trains(exported: Path, tmp_path: Path):
    venv = image_venv(exported, "trainer")
    out = run(
        venv, "modelops-trainer", "train", "--version", "v1", "--output-dir", "m", cwd=tmp_path
    )
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)
    assert summary["status"] == "Succeeded"
    assert summary["accuracy"] >= 0.85
    assert (tmp_path / "m/v1/model.params").is_file()


def test_server_entrypoint(exported: Path):
    out = run(image_venv(exported, "server"), "modelops-server", "--help")
    assert out.returncode == 0, out.stderr
    assert "usage" in out.stdout.lower()


def test_loadgen_entrypoint(exported: Path):
    out = run(image_venv(exported, "loadgen"), "modelops-loadgen", "--help")
    assert out.returncode == 0, out.stderr
    assert "usage" in out.stdout.lower()


def test_dockerfile_targets_match_the_components():
    text = (ROOT / "hack/images/Dockerfile").read_text()
    for component, entrypoint in [
        ("operator", "modelops"),
        ("trainer", "modelops-trainer"),
        ("server", "modelops-server"),
        ("loadgen", "modelops-loadgen"),
    ]:
        stage = text.split(f"FROM base AS {component}\n", 1)[1].split("\nFROM ", 1)[0]
        assert f"RUN hack/images/install.sh install {component} /src /opt/venv" in text
        assert f'ENTRYPOINT ["{entrypoint}"]' in stage
        assert "USER 65532:65532" in stage
        assert f"COPY --from=build-{component} /opt/venv /opt/venv" in stage
    base = text.split("ARG PYTHON_BASE=", 1)[1].split("\n", 1)[0]
    assert "@sha256:" in base and len(base.split("@sha256:")[1]) == 64
    # The offline build's switch: an empty default, so Docker users install from the index.
    build = text.split("FROM base AS build\n", 1)[1].split("\nFROM ", 1)[0]
    assert 'ARG WHEELHOUSE=""' in build
    assert "MODELOPS_WHEELHOUSE=${WHEELHOUSE}" in build


def _ignored(patterns: list[tuple[bool, str]], path: str) -> bool:
    """Docker's .dockerignore rule: the last pattern matching the path or a parent decides."""
    parts = path.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    ignored = False
    for keep, pattern in patterns:
        if any(fnmatch.fnmatchcase(c, pattern) for c in candidates):
            ignored = not keep
    return ignored


def test_build_context_holds_what_the_dockerfile_copies_and_nothing_else():
    """BuildKit reads <Dockerfile>.dockerignore beside the Dockerfile (context: the repo root)."""
    ignore = ROOT / "hack/images/Dockerfile.dockerignore"
    patterns = []
    for line in ignore.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keep = line.startswith("!")
            patterns.append((keep, line.lstrip("!").replace("**/", "*")))
    sources = [
        line.split()[1]
        for line in (ROOT / "hack/images/Dockerfile").read_text().splitlines()
        if line.startswith("COPY ") and "--from=" not in line
    ]
    assert "hack/images/install.sh" in sources
    for source in sources:
        assert not _ignored(patterns, source), f"COPY {source}: excluded by {ignore.name}"
        assert (ROOT / source).exists() or source == ".image-build", source
    for private in (".venv/bin/python", ".git/config", "config/gitops/models/iris.yaml", "tests"):
        assert _ignored(patterns, private), f"{private} would be sent to the builder"
    assert _ignored(patterns, "operator/src/modelops/__pycache__/x.pyc")
    # The legacy builder ignores that file: the build script must ask for BuildKit.
    assert "export DOCKER_BUILDKIT=1" in (ROOT / "hack/images.sh").read_text()
