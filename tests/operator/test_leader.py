"""Leader election over one Lease (modelops.leader): the pure claim and the elector's rules
against an in-memory Lease store with the API server's optimistic concurrency (no cluster;
tests/operator/test_failover.py runs two operators against a real API server)."""

from __future__ import annotations

import asyncio
import copy
import threading
from typing import Any

import pytest

from modelops import leader
from modelops.leader import LeaderElection, Timing, claim
from modelops.settings import Settings

pytestmark = pytest.mark.unit

TIMING = Timing.of(15)
NOW = "2026-01-01T00:00:00.000000Z"


def test_timing_follows_client_go_defaults():
    assert (TIMING.duration, TIMING.renew_deadline, TIMING.retry) == (15, 10, 2)
    assert Timing.of(3).retry == 0.5 and Timing.of(3).renew_deadline == 2


def held_by(holder, transitions=0, rv="7"):
    return {
        "metadata": {"name": "modelops-operator", "namespace": "ops", "resourceVersion": rv},
        "spec": {
            "holderIdentity": holder,
            "leaseDurationSeconds": 15,
            "renewTime": "2025-12-31T23:59:58.000000Z",
            "acquireTime": "2025-12-31T23:00:00.000000Z",
            "leaseTransitions": transitions,
        },
    }


def test_claim_creates_renews_and_takes_over():
    new = claim(None, "a", False, TIMING, "modelops-operator", "ops", NOW)
    assert new["metadata"] == {
        "name": "modelops-operator",
        "namespace": "ops",
        "labels": {"app.kubernetes.io/name": "modelops-operator"},
    }
    assert new["spec"] == {
        "holderIdentity": "a",
        "leaseDurationSeconds": 15,
        "acquireTime": NOW,
        "renewTime": NOW,
        "leaseTransitions": 0,
    }
    # Another holder's live Lease: nothing to write.
    assert claim(held_by("b"), "a", False, TIMING, "modelops-operator", "ops", NOW) is None
    # Renewing one's own: only renewTime moves, at the resourceVersion read.
    renewed = claim(held_by("a", 2), "a", False, TIMING, "modelops-operator", "ops", NOW)
    assert renewed["metadata"]["resourceVersion"] == "7"
    assert renewed["spec"]["renewTime"] == NOW and renewed["spec"]["leaseTransitions"] == 2
    assert renewed["spec"]["acquireTime"] == "2025-12-31T23:00:00.000000Z"
    # An expired or released Lease is taken over: a transition.
    for lease, expired in ((held_by("b", 2), True), (held_by("", 2), False)):
        taken = claim(lease, "a", expired, TIMING, "modelops-operator", "ops", NOW)
        assert taken["spec"]["holderIdentity"] == "a" and taken["spec"]["leaseTransitions"] == 3
        assert taken["spec"]["acquireTime"] == NOW


class Leases:
    """Lease storage with resourceVersions: a write at a stale version loses (409)."""

    def __init__(self):
        self.stored: dict[str, Any] | None = None
        self.version = 0

    def lease(self, namespace, name):
        return copy.deepcopy(self.stored)

    def write_lease(self, namespace, lease):
        current = (self.stored or {}).get("metadata", {}).get("resourceVersion")
        if lease["metadata"].get("resourceVersion") != current:
            return False
        self.version += 1
        self.stored = copy.deepcopy(lease)
        self.stored["metadata"]["resourceVersion"] = str(self.version)
        return True


@pytest.fixture
def clock(monkeypatch):
    """The elector's monotonic clock, moved by hand."""
    now = [1000.0]
    monkeypatch.setattr(leader.time, "monotonic", lambda: now[0])
    return now


def elector(store, me):
    return LeaderElection(store, Settings(lease_namespace="ops"), me)  # type: ignore[arg-type]


def test_only_one_replica_holds_the_lease_and_a_silent_one_is_replaced(clock):
    store = Leases()
    a, b = elector(store, "a"), elector(store, "b")
    assert a.try_once() and not b.try_once()
    clock[0] += 14
    assert a.try_once()  # renewed: b sees the Lease change and waits a whole duration again
    clock[0] += 14
    assert not b.try_once()
    clock[0] += 2
    assert not b.try_once()  # 16 s since a's last renewal, but only 2 s since b saw it change
    clock[0] += 13.5
    assert b.try_once()  # a has been silent for its whole lease duration
    assert store.stored["spec"]["holderIdentity"] == "b"
    assert store.stored["spec"]["leaseTransitions"] == 1
    assert not a.try_once()  # the old leader, back, is now a standby


def test_a_clean_stop_hands_over_at_once(clock):
    store = Leases()
    a, b = elector(store, "a"), elector(store, "b")
    asyncio.run(a.acquire())
    assert a.leading
    assert not b.try_once()
    a.release()
    assert not a.leading and store.stored["spec"]["holderIdentity"] == ""
    assert b.try_once()  # no waiting for the lease to expire


def test_a_release_that_meets_a_renewal_write_still_hands_over(clock):
    # CI saw a SIGTERM'd leader log "released" while its Lease stayed held: the renewal in
    # flight wrote between the release's read and write, and the release's write lost (409).
    store = Leases()
    a, b = elector(store, "a"), elector(store, "b")
    asyncio.run(a.acquire())
    write = store.write_lease
    raced = []

    def renewal_first(namespace, lease):
        if not raced and lease["spec"]["holderIdentity"] == "":
            raced.append(True)
            renewed = copy.deepcopy(store.stored)
            renewed["spec"]["renewTime"] = NOW
            assert write(namespace, renewed)
        return write(namespace, lease)

    store.write_lease = renewal_first
    a.release()
    assert raced and store.stored["spec"]["holderIdentity"] == ""
    assert b.try_once()


def test_a_renewal_in_flight_does_not_take_a_released_lease_back(clock):
    store = Leases()
    a, b = elector(store, "a"), elector(store, "b")
    asyncio.run(a.acquire())
    read, reading, go_on = store.lease, threading.Event(), threading.Event()

    def slow_read(namespace, name):
        if threading.current_thread().name == "renewal":
            reading.set()
            assert go_on.wait(10)
        return read(namespace, name)

    store.lease = slow_read
    renewal = threading.Thread(target=a.try_once, name="renewal")
    renewal.start()
    assert reading.wait(10)
    stop = threading.Thread(target=a.release)
    stop.start()
    stop.join(0.3)  # unguarded, the release would be done by now and the renewal retake it
    go_on.set()
    renewal.join(10)
    stop.join(10)
    assert store.stored["spec"]["holderIdentity"] == ""
    assert b.try_once()


def test_a_leader_that_cannot_renew_stops_before_the_lease_expires(clock, monkeypatch):
    store = Leases()
    a = elector(store, "a")
    asyncio.run(a.acquire())
    from modelops.kube import ApiError

    def unreachable(*_):
        raise ApiError(0, "connection refused")

    monkeypatch.setattr(store, "lease", unreachable)

    async def sleep(seconds):
        clock[0] += seconds

    monkeypatch.setattr(leader.asyncio, "sleep", sleep)
    started = clock[0]
    asyncio.run(a.hold())  # returns: leadership lost
    assert not a.leading
    assert TIMING.renew_deadline <= clock[0] - started < TIMING.duration
