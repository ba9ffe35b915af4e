"""Where the control-plane binaries built by ``hack/build-k8s.sh`` live."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

# Must match hack/k8s/go.mod and hack/build-k8s.sh (a test checks both).
K8S_VERSION = "v1.36.3"
ETCD_VERSION = "v3.6.8"
KWOK_VERSION = "v0.8.0"

BIN_DIR_ENV = "MODELOPS_K8S_BIN_DIR"
CACHE_ENV = "MODELOPS_K8S_CACHE"


class BinariesNotFound(FileNotFoundError):
    """The pinned binaries have not been built on this machine."""


@dataclass(frozen=True)
class Binaries:
    etcd: Path
    kube_apiserver: Path
    kube_controller_manager: Path
    kube_scheduler: Path
    kwok: Path


def default_bin_dir() -> Path:
    """``$MODELOPS_K8S_BIN_DIR``, else ``<cache>/<K8S_VERSION>`` as hack/build-k8s.sh writes it."""
    if explicit := os.environ.get(BIN_DIR_ENV):
        return Path(explicit)
    if cache := os.environ.get(CACHE_ENV):
        root = Path(cache)
    else:
        xdg = os.environ.get("XDG_CACHE_HOME")
        root = (Path(xdg) if xdg else Path.home() / ".cache") / "modelops" / "k8s"
    return root / K8S_VERSION


def find_binaries(bin_dir: Path | None = None) -> Binaries:
    """The binaries in ``bin_dir`` (default: :func:`default_bin_dir`); raise if any is missing."""
    d = bin_dir or default_bin_dir()
    bins = Binaries(
        etcd=d / "etcd",
        kube_apiserver=d / "kube-apiserver",
        kube_controller_manager=d / "kube-controller-manager",
        kube_scheduler=d / "kube-scheduler",
        kwok=d / "kwok",
    )
    missing = [p.name for p in vars(bins).values() if not os.access(p, os.X_OK)]
    if missing:
        raise BinariesNotFound(
            f"missing in {d}: {', '.join(missing)}. Build them with hack/build-k8s.sh "
            f"(`make install` does), or point {BIN_DIR_ENV} at a folder that has them."
        )
    return bins
