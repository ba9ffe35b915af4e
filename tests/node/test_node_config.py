"""Unit checks of the real node's configuration files (no node needed)."""

from __future__ import annotations

import itertools
import json
import tomllib
from pathlib import Path

import pytest

from modelops_testenv import nodeconfig as cfg
from modelops_testenv.host import mounts_under

pytestmark = pytest.mark.unit

WORKDIR = Path("/tmp/modelops-node-abcdefgh")
PORTS = cfg.NodePorts(20001, 20002, 20003, 20004, 20005, 20006)
PATHS = cfg.NodePaths(WORKDIR)


def paths_in(value: object) -> list[str]:
    """Every absolute path in a (nested) config value."""
    if isinstance(value, dict):
        return [p for v in value.values() for p in paths_in(v)]
    if isinstance(value, list):
        return [p for v in value for p in paths_in(v)]
    if isinstance(value, str) and value.startswith(("/", "unix:///")):
        return [value.removeprefix("unix://")]
    return []


def test_containerd_keeps_every_path_in_the_work_folder_and_restricts_oom_score_adj() -> None:
    bins = Path("/cache/node")
    text = cfg.containerd_config(PATHS, bins / "bin/runc", bins / "cni", "localhost/pause:1")
    config = tomllib.loads(text)
    assert config["version"] == 4
    assert config["imports"] == []
    plugins = config["plugins"]
    runtime = plugins["io.containerd.cri.v1.runtime"]
    assert runtime["restrict_oom_score_adj"] is True
    assert runtime["netns_mounts_under_state_dir"] is True
    assert plugins["io.containerd.nri.v1.nri"]["disable"] is True
    images = plugins["io.containerd.cri.v1.images"]
    assert images["pinned_images"]["sandbox"] == "localhost/pause:1"
    stream = plugins["io.containerd.grpc.v1.cri"]
    assert (stream["stream_server_address"], stream["stream_server_port"]) == ("127.0.0.1", "0")
    found = paths_in(config)
    assert found
    outside = [p for p in found if not p.startswith((str(WORKDIR) + "/", str(bins) + "/"))]
    assert outside == []
    # containerd refuses a longer shim socket folder.
    assert len(plugins["io.containerd.shim.v1.manager"]["socket_dir"]) <= 42


def test_cni_bridge_has_no_masquerade_and_allocates_on_the_pod_subnet() -> None:
    conf = json.loads(cfg.cni_conflist(PATHS))
    bridge, portmap = conf["plugins"]
    assert bridge["bridge"] == cfg.BRIDGE
    assert bridge["ipMasq"] is False
    assert bridge["ipam"]["ranges"][0][0]["subnet"] == cfg.POD_SUBNET
    assert bridge["ipam"]["dataDir"].startswith(str(WORKDIR))
    assert portmap["type"] == "portmap"


def test_kubelet_fits_this_machine_and_only_tolerating_pods_land_there() -> None:
    serving = (WORKDIR / "pki/k.crt", WORKDIR / "pki/k.key")
    conf = json.loads(
        cfg.kubelet_config(PATHS, PORTS, WORKDIR / "ca.crt", serving, "modelops-node-x")
    )
    assert conf["failCgroupV1"] is False
    assert conf["cgroupDriver"] == "cgroupfs"
    assert conf["cgroupRoot"] == "/modelops-node-x"
    assert conf["registerWithTaints"] == [cfg.REAL_NODE_TAINT]
    assert conf["imageGCHighThresholdPercent"] == 100
    assert conf["readOnlyPort"] == 0
    assert (conf["port"], conf["healthzPort"]) == (PORTS.kubelet, PORTS.kubelet_healthz)
    assert conf["healthzBindAddress"] == "127.0.0.1"
    assert conf["authentication"]["anonymous"]["enabled"] is False
    assert conf["clusterDNS"] == [cfg.NODE_IP]
    for threshold in conf["evictionHard"].values():
        assert threshold in ("1%", "100Mi")
    del conf["cgroupRoot"]  # a cgroup, not a file
    assert all(p.startswith(str(WORKDIR)) for p in paths_in(conf))


def test_kube_proxy_leaves_the_machines_settings_alone() -> None:
    conf = json.loads(cfg.kube_proxy_config(WORKDIR / "kp.kubeconfig", PORTS))
    assert conf["mode"] == "iptables"
    assert conf["iptables"]["localhostNodePorts"] is False  # else it sets route_localnet
    assert set(conf["conntrack"].values()) <= {0, "0s"}
    assert conf["nodePortAddresses"] == [f"{cfg.NODE_IP}/32"]
    assert conf["healthzBindAddress"].startswith("127.0.0.1:")
    assert conf["metricsBindAddress"].startswith("127.0.0.1:")


def test_coredns_answers_cluster_names_only() -> None:
    corefile = cfg.corefile(WORKDIR / "dns.kubeconfig", PORTS)
    assert f"bind {cfg.NODE_IP}" in corefile
    assert "forward" not in corefile  # nothing may leave the machine
    assert f"kubernetes {cfg.CLUSTER_DOMAIN}" in corefile
    assert cfg.resolv_conf().splitlines()[-1] == f"nameserver {cfg.NODE_IP}"


def test_mounts_under_lists_only_that_tree_deepest_first(tmp_path: Path) -> None:
    assert mounts_under(tmp_path) == []
    assert Path("/proc") in mounts_under(Path("/proc"))
    sys_mounts = mounts_under(Path("/sys"))
    assert sys_mounts[-1] == Path("/sys")
    assert all(len(a.parts) >= len(b.parts) for a, b in itertools.pairwise(sys_mounts))
