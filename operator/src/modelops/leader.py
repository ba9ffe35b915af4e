"""Leader election: of the operator's replicas only the holder of one Lease acts.

The Lease (``coordination.k8s.io/v1``, ``MODELOPS_LEASE_NAME`` in the operator's namespace)
works for an operator watching the whole cluster and for one watching listed namespaces
alike. A replica that does not hold it does nothing but read it every ``retry`` seconds; it
takes the Lease over once the holder releases it (a clean stop) or stops renewing it for
``MODELOPS_LEASE_DURATION_SECONDS`` (a crash, a killed pod, a lost node). The holder renews
every ``retry`` seconds and stops acting (the process exits, its pod restarts as a standby)
when it could not renew for ``renew_deadline`` seconds, before anyone else may take over.
Whether a Lease expired is judged by this replica's own clock since it last saw the Lease
change (as client-go does), never by comparing clocks of two machines.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from . import metrics
from .kube import ApiError, Kube
from .settings import Settings

log = logging.getLogger("modelops.leader")


def identity() -> str:
    """This replica's name in the Lease: its pod (downward API), else host, pid and a nonce."""
    pod = os.environ.get("POD_NAME", "").strip()
    if pod:
        return pod
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


def micro_time(moment: datetime | None = None) -> str:
    """A Kubernetes MicroTime (RFC 3339 with microseconds)."""
    return (moment or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True)
class Timing:
    duration: float  # a Lease not renewed for this long is free
    renew_deadline: float  # the holder stops acting when it could not renew for this long
    retry: float  # how often a replica tries to take or renew the Lease

    @classmethod
    def of(cls, duration: float) -> Timing:
        # client-go's defaults (15 s, 10 s, 2 s) scaled to the configured duration.
        return cls(duration, duration * 2 / 3, max(0.5, duration * 2 / 15))


def claim(
    lease: Mapping[str, Any] | None,
    me: str,
    expired: bool,
    timing: Timing,
    name: str,
    namespace: str,
    now: str,
) -> dict[str, Any] | None:
    """The Lease to write so that ``me`` holds it, or None while another replica holds a
    live one (pure: ``expired`` is judged by the caller's own clock)."""
    spec = dict((lease or {}).get("spec") or {})
    holder = spec.get("holderIdentity") or ""
    if holder and holder != me and not expired:
        return None
    if holder != me:
        spec["acquireTime"] = now
        spec["leaseTransitions"] = int(spec.get("leaseTransitions") or 0) + (1 if lease else 0)
    spec.update(
        holderIdentity=me, renewTime=now, leaseDurationSeconds=max(1, round(timing.duration))
    )
    metadata: dict[str, Any] = {"name": name, "namespace": namespace}
    if lease is not None:
        metadata["resourceVersion"] = lease["metadata"]["resourceVersion"]
    else:
        metadata["labels"] = {"app.kubernetes.io/name": "modelops-operator"}
    return {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": metadata,
        "spec": spec,
    }


class LeaderElection:
    """Takes the Lease (:meth:`acquire`), keeps it (:meth:`hold`), gives it back
    (:meth:`release`)."""

    def __init__(self, kube: Kube, settings: Settings, me: str | None = None) -> None:
        self.kube = kube
        self.name = settings.lease_name
        self.namespace = settings.lease_namespace
        self.timing = Timing.of(settings.lease_duration_seconds)
        self.me = me or identity()
        self._seen: tuple[Any, ...] | None = None
        self._seen_at = 0.0
        self._leading = False
        self._stopped = False  # released: never claim again (this process is ending)
        # A renewal runs in a worker thread while a stop releases from another: one at a time,
        # or a renewal read before the release writes the Lease back to this replica.
        self._writing = threading.Lock()
        self.lost = False  # a renewal failed for renew_deadline

    @property
    def leading(self) -> bool:
        return self._leading

    def _expired(self, lease: Mapping[str, Any] | None) -> bool:
        spec = (lease or {}).get("spec") or {}
        record = (
            spec.get("holderIdentity"),
            spec.get("renewTime"),
            spec.get("leaseDurationSeconds"),
        )
        if record != self._seen:
            self._seen, self._seen_at = record, time.monotonic()
        duration = float(spec.get("leaseDurationSeconds") or self.timing.duration)
        return time.monotonic() - self._seen_at >= duration

    def try_once(self) -> bool:
        """One attempt to take or renew the Lease (blocking); whether this replica holds it."""
        with self._writing:
            return self._try_once()

    def _try_once(self) -> bool:
        if self._stopped:
            return False
        lease = self.kube.lease(self.namespace, self.name)
        wanted = claim(
            lease,
            self.me,
            self._expired(lease),
            self.timing,
            self.name,
            self.namespace,
            micro_time(),
        )
        if wanted is None:
            return False
        if not self.kube.write_lease(self.namespace, wanted):
            return False
        if (lease or {}).get("spec", {}).get("holderIdentity") != self.me:
            log.info(
                "took the leader lease %s/%s",
                self.namespace,
                self.name,
                extra={"identity": self.me},
            )
        return True

    async def _attempt(self) -> bool:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(None, self.try_once)
        except ApiError as exc:
            log.warning("leader lease %s/%s: %s", self.namespace, self.name, exc)
            return False

    async def acquire(self) -> None:
        """Wait until this replica holds the Lease."""
        holder = None
        while not await self._attempt():
            current = (self._seen or (None,))[0]
            if current != holder:
                holder = current
                log.info(
                    "standing by: %s leads",
                    holder,
                    extra={"lease": f"{self.namespace}/{self.name}"},
                )
            await asyncio.sleep(self.timing.retry)
        self._leading = True
        metrics.LEADER.set(1)

    async def hold(self) -> None:
        """Renew the Lease until it is released, or a renewal has failed for
        ``renew_deadline`` (then ``lost`` is set); then return."""
        renewed = time.monotonic()
        while True:
            await asyncio.sleep(self.timing.retry)
            if self._stopped:
                return
            if await self._attempt():
                renewed = time.monotonic()
            elif time.monotonic() - renewed >= self.timing.renew_deadline:
                self.lost = True
                self._leading = False
                metrics.LEADER.set(0)
                log.error(
                    "lost the leader lease %s/%s (not renewed for %.0fs): stopping",
                    self.namespace,
                    self.name,
                    self.timing.renew_deadline,
                )
                return

    def release(self) -> None:
        """Give the Lease back on a clean stop, so that a standby takes over at once."""
        with self._writing:
            self._stopped = True
            if not self._leading:
                return
            self._leading = False
            metrics.LEADER.set(0)
            try:
                released = self._give_back()
            except ApiError as exc:
                log.warning("could not release the leader lease: %s", exc)
                return
        if released:
            log.info("released the leader lease %s/%s", self.namespace, self.name)

    def _give_back(self, attempts: int = 5) -> bool:
        # Another writer (kubectl, a standby's take-over) may move the resourceVersion between
        # the read and the write: read again, and stop once the Lease is not ours any more.
        for _ in range(attempts):
            lease = self.kube.lease(self.namespace, self.name)
            spec = (lease or {}).get("spec") or {}
            if lease is None or spec.get("holderIdentity") != self.me:
                return False
            free = {**spec, "holderIdentity": "", "leaseDurationSeconds": 1}
            if self.kube.write_lease(self.namespace, {**lease, "spec": free}):
                return True
        log.warning(
            "could not release the leader lease %s/%s: it changed under %d writes; a standby "
            "takes over when it expires",
            self.namespace,
            self.name,
            attempts,
        )
        return False
