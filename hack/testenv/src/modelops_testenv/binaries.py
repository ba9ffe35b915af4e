"""Where the binaries built by ``hack/build-k8s.sh``, ``hack/build-node.sh`` and
``hack/build-argocd.sh`` live."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

# Must match hack/k8s/go.mod and hack/build-k8s.sh (a test checks both).
K8S_VERSION = "v1.36.3"
ETCD_VERSION = "v3.6.8"
KWOK_VERSION = "v0.8.0"
# Must match hack/argocd/go.mod and argocd/install.sh (a test checks both).
ARGOCD_VERSION = "v3.5.3"

BIN_DIR_ENV = "MODELOPS_K8S_BIN_DIR"
CACHE_ENV = "MODELOPS_K8S_CACHE"
NODE_CACHE_ENV = "MODELOPS_NODE_CACHE"
KUBECTL_ENV = "MODELOPS_KUBECTL"
ARGOCD_CACHE_ENV = "MODELOPS_ARGOCD_CACHE"
# The real node's CNI plugins (hack/build-node.sh copies them from Debian's package).
CNI_PLUGINS = ("bridge", "host-local", "loopback", "portmap")


class BinariesNotFound(FileNotFoundError):
    """The pinned binaries have not been built on this machine."""


@dataclass(frozen=True)
class Binaries:
    etcd: Path
    kube_apiserver: Path
    kube_controller_manager: Path
    kube_scheduler: Path
    kwok: Path


def _cache_root() -> Path:
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "modelops"


def default_bin_dir() -> Path:
    """``$MODELOPS_K8S_BIN_DIR``, else ``<cache>/<K8S_VERSION>`` as hack/build-k8s.sh writes it."""
    if explicit := os.environ.get(BIN_DIR_ENV):
        return Path(explicit)
    cache = os.environ.get(CACHE_ENV)
    root = Path(cache) if cache else _cache_root() / "k8s"
    return root / K8S_VERSION


def default_node_dir() -> Path:
    """``$MODELOPS_NODE_CACHE``, else ``<cache>/node`` as hack/build-node.sh writes it."""
    cache = os.environ.get(NODE_CACHE_ENV)
    return Path(cache) if cache else _cache_root() / "node"


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


def find_kubectl() -> Path:
    """The kubectl built at the API server's version (``$MODELOPS_KUBECTL`` overrides it).

    Not the machine's kubectl: its version may be far from the API server's.
    """
    if explicit := os.environ.get(KUBECTL_ENV):
        return Path(explicit)
    path = default_bin_dir() / "kubectl"
    if not os.access(path, os.X_OK):
        raise BinariesNotFound(
            f"missing: {path}. Build it with hack/build-k8s.sh (`make test-tools` does), or "
            f"point {KUBECTL_ENV} at a kubectl {K8S_VERSION}."
        )
    return path


@dataclass(frozen=True)
class NodeBinaries:
    """What a real node runs: the kubelet and kube-proxy (hack/build-k8s.sh) and the rest."""

    kubelet: Path
    kube_proxy: Path
    containerd: Path
    containerd_shim: Path
    ctr: Path
    runc: Path
    coredns: Path
    cni_dir: Path


def find_node_binaries(bin_dir: Path | None = None, node_dir: Path | None = None) -> NodeBinaries:
    """The node's binaries; raise :class:`BinariesNotFound` naming what is missing."""
    k8s = bin_dir or default_bin_dir()
    node = node_dir or default_node_dir()
    bins = NodeBinaries(
        kubelet=k8s / "kubelet",
        kube_proxy=k8s / "kube-proxy",
        containerd=node / "bin" / "containerd",
        containerd_shim=node / "bin" / "containerd-shim-runc-v2",
        ctr=node / "bin" / "ctr",
        runc=node / "bin" / "runc",
        coredns=node / "bin" / "coredns",
        cni_dir=node / "cni",
    )
    files = [p for p in vars(bins).values() if p != bins.cni_dir]
    files += [bins.cni_dir / name for name in CNI_PLUGINS]
    missing = [str(p) for p in files if not os.access(p, os.X_OK)]
    if missing:
        raise BinariesNotFound(
            f"missing: {', '.join(missing)}. Build them with `make test-tools` "
            "(hack/build-k8s.sh and hack/build-node.sh)."
        )
    return bins


def default_argocd_dir() -> Path:
    """``$MODELOPS_ARGOCD_CACHE/<ARGOCD_VERSION>`` (default cache: ``<cache>/argocd``)."""
    cache = os.environ.get(ARGOCD_CACHE_ENV)
    root = Path(cache) if cache else _cache_root() / "argocd"
    return root / ARGOCD_VERSION


def find_argocd() -> Path:
    """The ``argocd`` binary built by hack/build-argocd.sh (with what the repo server runs from
    ``PATH`` beside it: kustomize, git-verify-wrapper.sh)."""
    d = default_argocd_dir()
    wanted = ("argocd", "kustomize", "git-verify-wrapper.sh", "gpg-wrapper.sh")
    missing = [d / b for b in wanted if not os.access(d / b, os.X_OK)]
    if missing:
        raise BinariesNotFound(
            f"missing: {', '.join(map(str, missing))}. Build them with hack/build-argocd.sh "
            "(`make test-tools` does)."
        )
    return d / "argocd"
