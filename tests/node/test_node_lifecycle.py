"""The real node leaves the machine as it found it: Ctrl-C, SIGTERM, even SIGKILL.

Each test starts ``python -m modelops_testenv --real-node`` (the session's own real node is
stopped first: one per machine), runs a pod so that there are shims, mounts, a pod network
namespace and iptables rules to clean up, stops the launcher, and compares the machine with
what it was before: processes, mounts, cgroups, network devices, iptables chains, nf_tables
tables, kernel settings and host folders.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from modelops_testenv import host
from modelops_testenv.binaries import find_kubectl
from modelops_testenv.images import find_image
from modelops_testenv.node import HOST_PATHS, clean_stale_nodes, leftovers
from modelops_testenv.nodeconfig import REAL_NODE_TOLERATION

# e2e: a real node (root). Generous timeout: another run's real node on this machine is waited
# for (one per machine).
pytestmark = [
    pytest.mark.e2e,
    pytest.mark.usefixtures("no_real_node"),
    pytest.mark.timeout(1500),
]

# Settings the node must not change for good, beyond those it records (host.SYSCTLS).
WATCHED_SYSCTLS = (
    *host.SYSCTLS,
    "net.ipv4.conf.all.route_localnet",
    "net.ipv4.conf.all.forwarding",
    "net.ipv6.conf.all.forwarding",
    "net.bridge.bridge-nf-call-iptables",
    "net.bridge.bridge-nf-call-ip6tables",
    "net.netfilter.nf_conntrack_max",
    "net.netfilter.nf_conntrack_tcp_timeout_established",
    "net.netfilter.nf_conntrack_tcp_timeout_close_wait",
)


def machine() -> dict[str, Any]:
    """What a real node could change on this machine."""
    return {
        "leftovers": leftovers(),
        "sysctls": host.read_sysctls(WATCHED_SYSCTLS),
        "links": sorted(p.name for p in Path("/sys/class/net").iterdir()),
        "chains": host.iptables_chains(),
        "nft tables": host.nft_tables(),
        "host paths": [p for p in HOST_PATHS if Path(p).exists()],
        "mounts": len(host.mount_points()),
    }


@contextlib.contextmanager
def launcher(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], Path]]:
    """A real-node launcher, once it printed its KUBECONFIG line; SIGKILLed if left over."""
    log = (tmp_path / "launcher.log").open("w")
    proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "modelops_testenv", "--real-node", "--nodes", "0"),
            *("--no-images", "--lock-timeout", "600"),  # a parallel run's node is waited for
        ],
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # blocks until the node is Ready (or the launcher fails)
        assert line.startswith("export KUBECONFIG="), (tmp_path / "launcher.log").read_text()
        yield proc, Path(line.strip().split("=", 1)[1])
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
            clean_stale_nodes()


def kubectl(kubeconfig: Path, *args: str, input: str | None = None) -> str:
    return subprocess.run(
        [str(find_kubectl()), "--kubeconfig", str(kubeconfig), *args],
        input=input,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout


def run_pause_pod(kubeconfig: Path) -> None:
    """A pod on the real node (the pause image as its container) until it is Running."""
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "sleeper", "namespace": "default"},
        "spec": {
            "tolerations": [REAL_NODE_TOLERATION],
            "terminationGracePeriodSeconds": 1,
            "containers": [
                {
                    "name": "pause",
                    "image": find_image("pause").name,
                    "imagePullPolicy": "Never",
                }
            ],
        },
    }
    kubectl(kubeconfig, "apply", "-f", "-", input=json.dumps(pod))
    kubectl(kubeconfig, "wait", "--for=condition=Ready", "pod/sleeper", "--timeout=90s")


def node_traces() -> list[str]:
    return [t for t in leftovers() if t.startswith(("process", "mount", "network device"))]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupt_stops_the_node_and_restores_the_machine(tmp_path: Path, sig: signal.Signals):
    before = machine()
    assert before["leftovers"] == []
    with launcher(tmp_path) as (proc, kubeconfig):
        run_pause_pod(kubeconfig)
        during = node_traces()
        assert any("containerd-shim" in t for t in during), during
        assert any(t.startswith("mount") for t in during), during
        assert host.read_sysctls(["net.ipv4.ip_forward"]) == {"net.ipv4.ip_forward": "1"}
        proc.send_signal(sig)
        assert proc.wait(timeout=120) == 0, (tmp_path / "launcher.log").read_text()
    assert machine() == before


def test_sigkill_of_the_launcher_is_cleaned_up_by_the_next_start(tmp_path: Path):
    before = machine()
    with launcher(tmp_path) as (proc, kubeconfig):
        run_pause_pod(kubeconfig)
        os.kill(proc.pid, signal.SIGKILL)  # no clean-up code runs
        proc.wait(timeout=10)
        time.sleep(1)  # PR_SET_PDEATHSIG takes the components down; the shims stay
        left = node_traces()
        assert any("containerd-shim" in t for t in left), left
        assert any(t.startswith("mount") for t in left), left
        assert "network device mo0" in left
        cleaned = clean_stale_nodes()
        assert len(cleaned) == 1
    assert machine() == before
