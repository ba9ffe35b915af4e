"""The real node's configuration files, as pure functions of its paths and ports.

Everything points into the node's work folder, binds to loopback or to the node's bridge
address, and leaves the machine's settings alone where a component lets us choose (see
``docs/real-node.md`` for why each setting is there).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BRIDGE = "mo0"
NODE_IP = "10.0.2.1"
POD_SUBNET = "10.0.2.0/24"
CLUSTER_DOMAIN = "cluster.local"
NODE_NAME = "modelops-node"
CNI_NETWORK = "modelops-node"
# Taint of the real node: only pods that tolerate it (REAL_NODE_TOLERATION) land there.
REAL_NODE_TAINT = {"key": "modelops.dev/real-node", "value": "true", "effect": "NoSchedule"}
REAL_NODE_TOLERATION = {
    "key": "modelops.dev/real-node",
    "operator": "Exists",
    "effect": "NoSchedule",
}
REAL_NODE_LABEL = "modelops.dev/real-node"


@dataclass(frozen=True)
class NodePorts:
    kubelet: int
    kubelet_healthz: int
    proxy_healthz: int
    proxy_metrics: int
    dns_health: int
    dns_ready: int


@dataclass(frozen=True)
class NodePaths:
    """Where every component of one node keeps its files (all under ``root``)."""

    root: Path

    @property
    def containerd_config(self) -> Path:
        return self.root / "containerd.toml"

    @property
    def containerd_socket(self) -> Path:
        return self.root / "containerd.sock"

    @property
    def containerd_root(self) -> Path:
        return self.root / "containerd"

    @property
    def containerd_state(self) -> Path:
        return self.root / "containerd-state"

    @property
    def shim_sockets(self) -> Path:
        return self.root / "s"

    @property
    def cni_conf_dir(self) -> Path:
        return self.root / "cni" / "net.d"

    @property
    def kubelet_root(self) -> Path:
        return self.root / "kubelet"

    @property
    def kubelet_config(self) -> Path:
        return self.root / "kubelet-config.json"

    @property
    def pod_logs(self) -> Path:
        return self.root / "pod-logs"

    @property
    def resolv_conf(self) -> Path:
        return self.root / "resolv.conf"

    @property
    def proxy_config(self) -> Path:
        return self.root / "kube-proxy-config.json"

    @property
    def corefile(self) -> Path:
        return self.root / "Corefile"

    @property
    def certs(self) -> Path:
        return self.root / "pki"


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return json.dumps(str(value))  # a TOML basic string is a JSON string


def _toml_tables(tables: dict[str, dict[str, Any]]) -> str:
    lines = []
    for name, keys in tables.items():
        if name:
            lines.append(f"\n[{name}]")
        lines += [f"{k} = {_toml(v)}" for k, v in keys.items()]
    return "\n".join(lines) + "\n"


def containerd_config(paths: NodePaths, runc: Path, cni_bin_dir: Path, sandbox_image: str) -> str:
    """containerd v2 (config version 4) with every path in the work folder."""
    cri_runtime = "plugins.'io.containerd.cri.v1.runtime'"
    return _toml_tables(
        {
            "": {
                "version": 4,
                "root": paths.containerd_root,
                "state": paths.containerd_state,
                "imports": [],
            },
            "plugins.'io.containerd.server.v1.grpc'": {"address": paths.containerd_socket},
            "plugins.'io.containerd.server.v1.ttrpc'": {
                "address": f"{paths.containerd_socket}.ttrpc"
            },
            "plugins.'io.containerd.cri.v1.images'": {"snapshotter": "overlayfs"},
            # Pinned, so never garbage-collected; a local name, so a missing import fails
            # loudly instead of trying a pull.
            "plugins.'io.containerd.cri.v1.images'.pinned_images": {"sandbox": sandbox_image},
            cri_runtime: {
                # Root here lacks CAP_SYS_RESOURCE: runc init could not lower oom_score_adj.
                "restrict_oom_score_adj": True,
                "netns_mounts_under_state_dir": True,
                "cdi_spec_dirs": [],
            },
            f"{cri_runtime}.containerd.runtimes.runc": {"runtime_type": "io.containerd.runc.v2"},
            f"{cri_runtime}.containerd.runtimes.runc.options": {
                "BinaryName": runc,
                "Root": paths.root / "runc",
                "SystemdCgroup": False,
            },
            f"{cri_runtime}.cni": {"bin_dirs": [cni_bin_dir], "conf_dir": paths.cni_conf_dir},
            "plugins.'io.containerd.grpc.v1.cri'": {
                "stream_server_address": "127.0.0.1",
                "stream_server_port": "0",
            },
            "plugins.'io.containerd.internal.v1.opt'": {"path": paths.root / "opt"},
            "plugins.'io.containerd.nri.v1.nri'": {"disable": True},
            "plugins.'io.containerd.shim.v1.manager'": {"socket_dir": paths.shim_sockets},
        }
    )


def cni_conflist(paths: NodePaths) -> str:
    """bridge + host-local on ``mo0`` (no masquerade: nothing leaves the machine) + portmap."""
    return json.dumps(
        {
            "cniVersion": "1.0.0",
            "name": CNI_NETWORK,
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": BRIDGE,
                    "isGateway": True,
                    "hairpinMode": True,
                    "ipMasq": False,
                    "ipam": {
                        "type": "host-local",
                        "dataDir": str(paths.root / "cni" / "ipam"),
                        "ranges": [
                            [{"subnet": POD_SUBNET, "rangeStart": "10.0.2.10", "gateway": NODE_IP}]
                        ],
                        "routes": [{"dst": "0.0.0.0/0"}],
                    },
                },
                {"type": "portmap", "capabilities": {"portMappings": True}},
            ],
        },
        indent=2,
    )


def kubelet_config(
    paths: NodePaths,
    ports: NodePorts,
    client_ca: Path,
    serving: tuple[Path, Path],
    cgroup_root: str,
) -> str:
    return json.dumps(
        {
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            "address": NODE_IP,
            "port": ports.kubelet,
            "readOnlyPort": 0,
            "healthzBindAddress": "127.0.0.1",
            "healthzPort": ports.kubelet_healthz,
            "tlsCertFile": str(serving[0]),
            "tlsPrivateKeyFile": str(serving[1]),
            "authentication": {
                "anonymous": {"enabled": False},
                "webhook": {"enabled": True},
                "x509": {"clientCAFile": str(client_ca)},
            },
            "authorization": {"mode": "Webhook"},
            "containerRuntimeEndpoint": f"unix://{paths.containerd_socket}",
            # This machine has cgroup v1 hierarchies (hybrid) and no systemd.
            "failCgroupV1": False,
            "cgroupDriver": "cgroupfs",
            "cgroupRoot": f"/{cgroup_root}",
            "failSwapOn": False,
            "protectKernelDefaults": False,
            "oomScoreAdj": 0,
            "registerWithTaints": [REAL_NODE_TAINT],
            "clusterDNS": [NODE_IP],
            "clusterDomain": CLUSTER_DOMAIN,
            "resolvConf": str(paths.resolv_conf),
            "podLogsDir": str(paths.pod_logs),
            "volumePluginDir": str(paths.root / "volume-plugins"),
            # Imported images are all there is: never collect them.
            "imageGCHighThresholdPercent": 100,
            "imageGCLowThresholdPercent": 99,
            # A busy shared disk must not evict the pods of a test midway.
            "evictionHard": {
                "memory.available": "100Mi",
                "nodefs.available": "1%",
                "nodefs.inodesFree": "1%",
                "imagefs.available": "1%",
                "imagefs.inodesFree": "1%",
            },
            "serializeImagePulls": False,
            "nodeStatusUpdateFrequency": "2s",
            "shutdownGracePeriod": "0s",
        },
        indent=2,
    )


def kube_proxy_config(kubeconfig: Path, ports: NodePorts) -> str:
    """iptables mode; no change to the machine's conntrack or route_localnet settings."""
    return json.dumps(
        {
            "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
            "kind": "KubeProxyConfiguration",
            "clientConnection": {"kubeconfig": str(kubeconfig)},
            "hostnameOverride": NODE_NAME,
            "bindAddress": "127.0.0.1",
            "healthzBindAddress": f"127.0.0.1:{ports.proxy_healthz}",
            "metricsBindAddress": f"127.0.0.1:{ports.proxy_metrics}",
            "mode": "iptables",
            "iptables": {"localhostNodePorts": False, "syncPeriod": "30s", "minSyncPeriod": "0s"},
            "clusterCIDR": POD_SUBNET,
            "nodePortAddresses": [f"{NODE_IP}/32"],
            "oomScoreAdj": 0,
            "conntrack": {
                "maxPerCore": 0,
                "min": 0,
                "tcpEstablishedTimeout": "0s",
                "tcpCloseWaitTimeout": "0s",
                "udpTimeout": "0s",
                "udpStreamTimeout": "0s",
            },
        },
        indent=2,
    )


def corefile(kubeconfig: Path, ports: NodePorts) -> str:
    """Cluster names only: no ``forward``, so no query ever leaves the machine."""
    return f"""\
.:53 {{
    bind {NODE_IP}
    errors
    health 127.0.0.1:{ports.dns_health}
    ready 127.0.0.1:{ports.dns_ready}
    kubernetes {CLUSTER_DOMAIN} in-addr.arpa ip6.arpa {{
        kubeconfig {kubeconfig}
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
        ttl 5
    }}
    cache 5
}}
"""


def resolv_conf() -> str:
    """For pods with ``dnsPolicy: Default`` too: our CoreDNS, nothing else."""
    return f"# modelops-testenv real node: cluster DNS only\nnameserver {NODE_IP}\n"
