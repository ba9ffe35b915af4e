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
import subprocess
from dataclasses import dataclass
from pathlib import Path

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


def pause_binary(cache_dir: Path | None = None) -> Path:
    """The static pause binary inside the pause image (for a node that needs it on the host)."""
    path = (cache_dir or default_cache_dir()) / "pause" / "pause"
    if not os.access(path, os.X_OK):
        raise ImagesNotFound(f"{path} missing: run hack/build-images.sh pause")
    return path
