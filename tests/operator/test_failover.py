"""Two operator replicas electing a leader over a Lease, against a real kube-apiserver
(issue 14): exactly one acts; killing it hands over within the lease duration; a clean stop
hands over at once. The replicas watch the test's namespace (the namespaced mode); the Lease
is the same for both modes (tests/delivery/test_rbac.py checks the grants of each)."""

from __future__ import annotations

import re
import signal
import time

import pytest

pytestmark = pytest.mark.integration

DURATION = 6  # MODELOPS_LEASE_DURATION_SECONDS: short, to keep the test quick


def metric(proc, name):
    found = re.search(rf"^{name} ([0-9.e+]+)$", proc.metrics(), re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def up(proc):
    try:
        return "modelops_leader" in proc.metrics()
    except OSError:
        return False


def reconciles(proc):
    text = proc.metrics()
    return sum(
        float(v) for v in re.findall(r"^modelops_reconcile_total\{[^}]*\} ([0-9.e+]+)$", text, re.M)
    )


def test_one_replica_acts_and_a_killed_leader_is_replaced(cluster, operators, wait):
    lease = f"modelops-{cluster.ns}"
    env = {
        "MODELOPS_STANDALONE": "false",
        "MODELOPS_LEASE_NAMESPACE": "modelops-system",
        "MODELOPS_LEASE_NAME": lease,
        "MODELOPS_LEASE_DURATION_SECONDS": str(DURATION),
    }
    path = f"/apis/coordination.k8s.io/v1/namespaces/modelops-system/leases/{lease}"

    def holder():
        body = cluster.get(path)
        return (body or {}).get("spec", {}).get("holderIdentity") or None

    a = operators("a", POD_NAME="replica-a", **env)
    wait(lambda: holder() == "replica-a", 30, "replica-a leading")
    b = operators("b", POD_NAME="replica-b", **env)
    wait(lambda: up(b) and "standing by" in b.logs(), 30, "replica-b standing by")
    cluster.create_md("elected", {"modelVersion": "v1"})
    wait(lambda: cluster.job("elected", "v1"), 30, "the leader's trainer Job")
    wait(lambda: cluster.status("elected").get("phase") == "Training", 15, "phase Training")
    time.sleep(2 * DURATION * 2 / 15 + 1)  # a few renewals: the standby must stay put
    assert holder() == "replica-a"
    assert metric(a, "modelops_leader") == 1 and metric(b, "modelops_leader") == 0
    assert reconciles(a) >= 1 and reconciles(b) == 0
    assert "standing by: replica-a leads" in b.logs()

    # The leader dies without a word (SIGKILL: no release); a change waits for the new one.
    a.kill(signal.SIGKILL)
    killed = time.monotonic()
    cluster.patch_md("elected", {"modelVersion": "v2"})
    wait(lambda: cluster.job("elected", "v2"), 4 * DURATION + 30, "replica-b acting on v2")
    handover = time.monotonic() - killed
    assert holder() == "replica-b"
    # One Job per version (v1's, abandoned while training, is cleaned up), nothing twice.
    wait(
        lambda: [j["metadata"]["name"] for j in cluster.jobs("elected")] == ["elected-train-v2"],
        30,
        "only the Job of v2",
    )
    print(f"failover after SIGKILL: {handover:.1f}s (lease duration {DURATION}s)")
    # Expiry is judged from when the standby last saw the Lease change: at most one lease
    # duration after the last renewal, plus a retry period and the first pass.
    assert handover < 4 * DURATION + 20

    # A clean stop (SIGTERM, a rolling update) releases the Lease: the standby takes over at
    # once instead of waiting for it to expire.
    c = operators("c", POD_NAME="replica-c", **env)
    wait(lambda: "standing by: replica-b leads" in c.logs(), 30, "replica-c standing by")
    stopped = time.monotonic()
    b.proc.send_signal(signal.SIGTERM)
    wait(lambda: holder() == "replica-c", 30, "replica-c leading", interval=0.1)
    released = time.monotonic() - stopped
    b.kill(signal.SIGTERM)  # waits for its exit
    print(f"handover after SIGTERM: {released:.1f}s")
    assert "released the leader lease" in b.logs()  # logged only once the write went through
    assert released < DURATION  # no expiry wait
