"""A throw-away Kubernetes control plane for modelops' tests (and people: ``make cluster``),
optionally with a real node (``RealNode``: kubelet, containerd, CNI, kube-proxy, CoreDNS)."""

from .binaries import ETCD_VERSION, K8S_VERSION, KWOK_VERSION, BinariesNotFound, find_binaries
from .controlplane import KWOK_TOLERATION, ControlPlane, terminate_as_interrupt
from .node import RealNode, RealNodeError
from .nodeconfig import REAL_NODE_TOLERATION
from .process import ComponentExited

__all__ = [
    "ETCD_VERSION",
    "K8S_VERSION",
    "KWOK_TOLERATION",
    "KWOK_VERSION",
    "REAL_NODE_TOLERATION",
    "BinariesNotFound",
    "ComponentExited",
    "ControlPlane",
    "RealNode",
    "RealNodeError",
    "find_binaries",
    "terminate_as_interrupt",
]
