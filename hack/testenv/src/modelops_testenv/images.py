"""The container images ``hack/build-images.sh`` builds on this machine, as OCI archives.

Each image has a record ``<cache>/<image>.json`` (name, archive, input key) written after its
archive is complete. Import an archive into a node's containerd with
``ctr -n k8s.io images import --all-platforms ARCHIVE``: the archive's index names the image
(``org.opencontainers.image.ref.name``), always ``localhost/...`` so a missing import fails
loudly instead of trying a registry.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CACHE_ENV = "MODELOPS_IMAGES_CACHE"
# The product's images (hack/images/Dockerfile targets), then the cluster's own.
COMPONENTS = ("operator", "trainer", "server", "loadgen")
IMAGES = ("pause", *COMPONENTS, "prometheus")
# containerd's sandbox image (pinned_images.sandbox); the tag is build/pause's TAG of the pinned
# k8s.io/kubernetes (hack/build-images.sh reads it there; a test checks both agree).
PAUSE_IMAGE = "localhost/modelops-pause:3.10.2"
# The product images' user (hack/images/Dockerfile: USER 65532:65532).
IMAGE_UID = 65532


class ImagesNotFound(FileNotFoundError):
    """An image has not been built on this machine (or its archive went missing)."""


@dataclass(frozen=True)
class Image:
    image: str  # one of IMAGES
    name: str  # e.g. localhost/modelops-server:0123456789abcdef
    archive: Path  # OCI archive for `ctr images import`
    key: str  # hash of the inputs it was built from


def default_cache_dir() -> Path:
    """``$MODELOPS_IMAGES_CACHE``, else ``~/.cache/modelops/images`` as the script writes it."""
    if explicit := os.environ.get(CACHE_ENV):
        return Path(explicit)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "modelops" / "images"


def find_image(image: str, cache_dir: Path | None = None) -> Image:
    """The last build of ``image``; raise :class:`ImagesNotFound` if there is none."""
    if image not in IMAGES:
        raise ValueError(f"unknown image {image!r} (known: {', '.join(IMAGES)})")
    d = cache_dir or default_cache_dir()
    record = d / f"{image}.json"
    hint = "Build it with hack/build-images.sh (`make test-tools` does)."
    try:
        data = json.loads(record.read_text())
    except FileNotFoundError:
        raise ImagesNotFound(f"image {image!r} not built: {record} missing. {hint}") from None
    found = Image(image=image, name=data["name"], archive=d / data["archive"], key=data["key"])
    if not found.archive.is_file():
        raise ImagesNotFound(f"image {image!r}: archive {found.archive} missing. {hint}")
    return found


def find_images(cache_dir: Path | None = None) -> dict[str, Image]:
    """Every image in :data:`IMAGES`, by image; raise if any is missing."""
    return {image: find_image(image, cache_dir) for image in IMAGES}


def build_images(repo: Path, *images: str, timeout: float = 1800) -> dict[str, Image]:
    """Run ``repo/hack/build-images.sh`` (a few seconds when nothing changed), then find them.

    Tests call this so an image never lags behind the sources it was built from.
    """
    cache_dir = default_cache_dir()
    subprocess.run(
        [str(repo / "hack" / "build-images.sh"), *images],
        check=True,
        timeout=timeout,
        env={**os.environ, CACHE_ENV: str(cache_dir)},
    )
    wanted = images or IMAGES
    return {image: find_image(image, cache_dir) for image in wanted}


def wheelhouse(repo: Path, timeout: float = 900) -> Path:
    """The locked wheels of every component (``hack/build-images.sh --wheelhouse``: downloads
    only what the cache lacks), for ``hack/images/install.sh`` with ``MODELOPS_WHEELHOUSE``."""
    out = subprocess.run(
        [str(repo / "hack" / "build-images.sh"), "--wheelhouse"],
        check=True,
        timeout=timeout,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, CACHE_ENV: str(default_cache_dir())},
    )
    return Path(out.stdout.strip())


def pause_binary(cache_dir: Path | None = None) -> Path:
    """The static pause binary inside the pause image (for a node that needs it on the host)."""
    path = (cache_dir or default_cache_dir()) / "pause" / "pause"
    if not os.access(path, os.X_OK):
        raise ImagesNotFound(f"{path} missing: run hack/build-images.sh pause")
    return path


# Reading an OCI archive (what `buildah push ... oci-archive:` writes) -------------------------


def _member(tar: tarfile.TarFile, path: str, archive: Path) -> bytes:
    member = tar.extractfile(path)
    if member is None:
        raise ValueError(f"{path} missing from {archive}")
    return member.read()


def _blob_path(digest: str) -> str:
    algorithm, hexdigest = digest.split(":", 1)
    return f"blobs/{algorithm}/{hexdigest}"


def read_manifest(archive: Path) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """``(name, manifest, config)`` of the one image in an OCI archive.

    ``name`` is the index's ``org.opencontainers.image.ref.name``; ``config`` the image
    configuration (``config["config"]`` holds User, Env, Entrypoint, Cmd).
    """
    with tarfile.open(archive) as tar:
        index = json.loads(_member(tar, "index.json", archive))
        (entry,) = index["manifests"]
        manifest = json.loads(_member(tar, _blob_path(entry["digest"]), archive))
        config = json.loads(_member(tar, _blob_path(manifest["config"]["digest"]), archive))
    name = entry.get("annotations", {}).get("org.opencontainers.image.ref.name", "")
    return name, manifest, config


def extract_rootfs(archive: Path, dest: Path) -> Path:
    """Unpack the image's layers in order into ``dest`` (as root: owners and modes kept).

    OCI whiteouts (``.wh.<name>``, ``.wh..wh..opq``) delete what lower layers put there.
    """
    _, manifest, _ = read_manifest(archive)
    dest.mkdir(parents=True, exist_ok=True)
    dest.chmod(0o755)  # an image's / (layers rarely carry an entry for it)
    with tarfile.open(archive) as tar:
        for layer in manifest["layers"]:
            blob = tar.extractfile(_blob_path(layer["digest"]))
            if blob is None:
                raise ValueError(f"layer {layer['digest']} missing from {archive}")
            with tarfile.open(fileobj=blob, mode="r|*") as layer_tar:
                for member in layer_tar:
                    _apply(layer_tar, member, dest)
    return dest


def _apply(layer: tarfile.TarFile, member: tarfile.TarInfo, dest: Path) -> None:
    path = Path(member.name)
    if path.name == ".wh..wh..opq":
        for child in (dest / path.parent).glob("*"):
            _remove(child)
        return
    if path.name.startswith(".wh."):
        _remove(dest / path.parent / path.name.removeprefix(".wh."))
        return
    target = dest / path
    if target.exists() and not (target.is_dir() and member.isdir()):
        _remove(target)
    # "fully_trusted": device nodes, owners and absolute symlinks of a root file system.
    layer.extract(member, dest, set_attrs=True, numeric_owner=True, filter="fully_trusted")


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()
