"""A throw-away Kubernetes control plane for modelops' tests (and people: ``make cluster``)."""

from .binaries import ETCD_VERSION, K8S_VERSION, KWOK_VERSION, BinariesNotFound, find_binaries
from .controlplane import KWOK_TOLERATION, ControlPlane, terminate_as_interrupt
from .process import ComponentExited

__all__ = [
    "ETCD_VERSION",
    "K8S_VERSION",
    "KWOK_TOLERATION",
    "KWOK_VERSION",
    "BinariesNotFound",
    "ComponentExited",
    "ControlPlane",
    "find_binaries",
    "terminate_as_interrupt",
]
