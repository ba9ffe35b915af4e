"""The operator process: thin kopf handlers → a coalescing work queue → one reconcile pass
(:mod:`modelops.engine`) with the cluster driver (:mod:`modelops.kube`).

Every watch event (of a ModelDeployment or of a child it owns) only *schedules* a reconcile of
that ModelDeployment; at most one pass per resource runs at a time, and events arriving during
a pass coalesce into one more pass. A kopf timer schedules every resource again each
``MODELOPS_RESYNC_SECONDS``: the periodic level-based resync. kopf's only write to a resource is
the finalizer its timers need (added once); no change-tracking handler is used, so it keeps no
annotations there.

Run: ``modelops-operator`` (or ``python -m modelops.operator``); settings from ``MODELOPS_*``.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import logging
import sys
import time
from collections.abc import Mapping
from typing import Any

import kopf
from prometheus_client import start_http_server

from modelops_contract.logs import JsonFormatter

from . import metrics
from .kube import RECONCILE_THREADS, URGENT_THREADS, ApiError, Kube
from .names import (
    COMPONENT_MODEL,
    GROUP,
    LABEL_COMPONENT,
    LABEL_MANAGED_BY,
    LABEL_NAME,
    MANAGED_BY,
    PLURAL,
    VERSION,
)
from .settings import Settings, SettingsError

log = logging.getLogger("modelops.operator")
MAX_BACKOFF_SECONDS = 60.0


def configure_logging(settings: Settings) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if settings.log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level)
    # kopf logs every handled event at INFO ("Handler ... succeeded"); only its problems matter.
    logging.getLogger("kopf").setLevel(max(logging.WARNING, root.level))
    # kopf's health endpoint (aiohttp) would log every kubelet probe: 3 lines every 10 s.
    logging.getLogger("aiohttp.access").setLevel(max(logging.WARNING, root.level))


class Queue:
    """Per-resource coalescing work queue; reconciles run in threads (blocking client).

    A change of the resource itself is reconciled at once, and in threads of its own
    (``urgent``): a new resource is not queued behind resyncs and follow-ups. Events of children
    (mostly the echo of the operator's own writes) wait ``CHILD_DELAY`` seconds so that a burst
    of them becomes one pass.
    """

    CHILD_DELAY = 0.5

    def __init__(self, kube: Kube, urgent_pool: concurrent.futures.Executor | None = None) -> None:
        self.kube = kube
        self._urgent_pool = urgent_pool
        self._urgent: set[tuple[str, str]] = set()
        self._running: dict[tuple[str, str], asyncio.Task[None]] = {}
        self._dirty: set[tuple[str, str]] = set()
        self._wake: dict[tuple[str, str], asyncio.Event] = {}
        self._failures: dict[tuple[str, str], int] = {}
        # One pending "pass again later" per resource (a rollout's pause), the latest asked.
        self._later: dict[tuple[str, str], asyncio.TimerHandle] = {}

    def schedule(self, namespace: str, name: str, delay: float = 0.0, urgent: bool = False) -> None:
        key = (namespace, name)
        if urgent:
            self._urgent.add(key)
        if key in self._running:
            self._dirty.add(key)
            if delay == 0.0 and key in self._wake:
                self._wake[key].set()  # cut a pending child delay short
            return
        task = asyncio.get_running_loop().create_task(self._run(key, delay))
        self._running[key] = task

    async def _run(self, key: tuple[str, str], delay: float) -> None:
        try:
            if delay > 0:
                wake = self._wake[key] = asyncio.Event()
                try:
                    await asyncio.wait_for(wake.wait(), delay)
                except TimeoutError:
                    pass
                finally:
                    self._wake.pop(key, None)
            while True:
                self._dirty.discard(key)
                try:
                    retry = await self._once(key)
                except Exception:  # never lose the resource's queue entry
                    log.exception("reconcile loop failed", extra={"key": "/".join(key)})
                    retry = MAX_BACKOFF_SECONDS
                if retry is not None:
                    await asyncio.sleep(retry)
                    continue
                if key not in self._dirty:
                    return
        finally:
            self._running.pop(key, None)

    async def _once(self, key: tuple[str, str]) -> float | None:
        """One pass; the delay before a retry when it failed, else None."""
        namespace, name = key
        started = time.perf_counter()
        # "name" is a LogRecord attribute: the resource goes under its own key.
        extra = {"modeldeployment": f"{namespace}/{name}"}
        try:
            pool = self._urgent_pool if key in self._urgent else None
            self._urgent.discard(key)
            loop = asyncio.get_running_loop()
            result = await loop.run_in_executor(pool, self.kube.reconcile, namespace, name)
        except ApiError as exc:
            failures = self._failures[key] = self._failures.get(key, 0) + 1
            delay = min(MAX_BACKOFF_SECONDS, 2.0 ** min(failures, 6))
            metrics.RECONCILES.labels("error").inc()
            level = logging.INFO if exc.status == 409 else logging.WARNING
            log.log(level, "reconcile failed, retrying in %.0fs: %s", delay, exc, extra=extra)
            return delay
        except Exception:
            failures = self._failures[key] = self._failures.get(key, 0) + 1
            metrics.RECONCILES.labels("error").inc()
            log.exception("reconcile crashed", extra=extra)
            return min(MAX_BACKOFF_SECONDS, 2.0 ** min(failures, 6))
        finally:
            metrics.RECONCILE_SECONDS.observe(time.perf_counter() - started)
        self._failures.pop(key, None)
        if result is None:
            metrics.forget(namespace, name)
            metrics.RECONCILES.labels("ok").inc()
            return None
        self._requeue(key, result.requeue_after)
        changed = result.writes > 0
        metrics.RECONCILES.labels("changed" if changed else "ok").inc()
        if changed:
            log.info(
                "reconciled: phase %s",
                result.status.get("phase"),
                extra={
                    **extra,
                    "createdObjects": [m["metadata"]["name"] for m in result.create],
                    "appliedObjects": [m["metadata"]["name"] for m in result.apply],
                    "deletedObjects": [r.name for r in result.delete],
                    "events": [e.reason for e in result.events],
                    "statusChanged": result.status_changed,
                },
            )
        return None

    def _requeue(self, key: tuple[str, str], delay: float | None) -> None:
        old = self._later.pop(key, None)
        if old is not None:
            old.cancel()
        if delay is not None:
            self._later[key] = asyncio.get_running_loop().call_later(delay, self._fire_later, key)

    def _fire_later(self, key: tuple[str, str]) -> None:
        self._later.pop(key, None)
        self.schedule(*key)

    async def drain(self) -> None:
        for handle in self._later.values():
            handle.cancel()
        self._later.clear()
        tasks = list(self._running.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _owner(labels: Mapping[str, str] | None) -> str | None:
    labels = labels or {}
    if labels.get(LABEL_MANAGED_BY) != MANAGED_BY:
        return None
    return labels.get(LABEL_NAME)


def register(registry: kopf.OperatorRegistry, queue: Queue, settings: Settings) -> None:
    """Attach the handlers to ``registry`` (thin: they only schedule reconciles)."""

    @kopf.on.login(registry=registry)
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        # In a pod: the ServiceAccount token; elsewhere: $KUBECONFIG (set from --kubeconfig).
        return kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)

    @kopf.on.startup(registry=registry)
    def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
        # Only explicit Events; kopf would otherwise post log lines as Events (API writes).
        settings.posting.enabled = False
        # Periodic full re-list = the level-based resync; the inactivity timeout restarts a
        # watch that silently stopped delivering.
        settings.watching.server_timeout = 300
        settings.watching.client_timeout = 310
        settings.watching.inactivity_timeout = 600
        # kopf's timers need a finalizer on the resource (added once, removed on deletion).
        settings.persistence.finalizer = "modelops.dev/operator"
        # Peering is used when its object exists (config/manager ships it); without one kopf
        # warns and runs alone rather than refusing to start.
        settings.peering.mandatory = False
        settings.peering.standalone = standalone
        settings.peering.name = peering
        settings.peering.priority = priority
        # Watching listed namespaces: kopf takes them as given instead of listing namespaces
        # and CRDs cluster-wide, which the namespaced RBAC (config/rbac/namespaced) denies.
        settings.scanning.disabled = namespaced
        for group, version, plural in CHILD_WATCHES:
            settings.watching.label_selectors[group, version, plural] = child_selector(plural)

    resync = settings.resync_seconds
    namespaced = bool(settings.namespaces)
    peering = settings.peering_name
    standalone = settings.standalone
    priority = settings.priority

    @kopf.on.event(GROUP, VERSION, PLURAL, registry=registry)
    async def modeldeployment(
        type: str, namespace: str | None, name: str, body: Mapping[str, Any], **_: Any
    ) -> None:
        if namespace is None:
            return
        if type == "DELETED":
            metrics.forget(namespace, name)
            return
        generation = body.get("metadata", {}).get("generation")
        observed = (body.get("status") or {}).get("observedGeneration")
        if type == "MODIFIED" and generation == observed:
            # The echo of a status write (or metadata edit): the spec did not change.
            return
        queue.schedule(namespace, name, urgent=True)

    @kopf.timer(GROUP, VERSION, PLURAL, interval=resync, initial_delay=resync, registry=registry)
    async def resync_timer(namespace: str | None, name: str, **_: Any) -> None:
        # Level-based safety net: kopf only re-lists after a watch error, so every resource is
        # reconciled again each interval (a no-change pass writes nothing). A kopf timer (not a
        # free-running task) so that a paused peer does not act.
        if namespace:
            queue.schedule(namespace, name)

    async def child(namespace: str | None, labels: Mapping[str, str], **_: Any) -> None:
        owner = _owner(labels)
        if owner and namespace:
            queue.schedule(namespace, owner, delay=Queue.CHILD_DELAY)

    selector = {LABEL_MANAGED_BY: MANAGED_BY}
    for group, version, plural in CHILD_WATCHES:
        kopf.on.event(
            group, version, plural, labels=selector, registry=registry, id=f"child-{plural}"
        )(child)


# What the operator owns, watched with a server-side label selector: the API server streams
# only these objects (not every ConfigMap or Deployment of the cluster), and of ConfigMaps
# only the artifacts.
CHILD_WATCHES = (
    ("batch", "v1", "jobs"),
    ("apps", "v1", "deployments"),
    ("", "v1", "services"),
    ("", "v1", "configmaps"),
)


def child_selector(plural: str) -> str:
    selector = f"{LABEL_MANAGED_BY}={MANAGED_BY}"
    if plural == "configmaps":
        selector += f",{LABEL_COMPONENT}={COMPONENT_MODEL}"
    return selector


async def run(settings: Settings, kubeconfig: str | None = None) -> None:
    # Reconcile passes run in threads and mostly wait on the API server: the default pool
    # (cores + 4 threads) queues a burst of new resources behind each other.
    asyncio.get_running_loop().set_default_executor(
        concurrent.futures.ThreadPoolExecutor(max_workers=RECONCILE_THREADS)
    )
    kube = Kube.connect(settings, kubeconfig)
    urgent = concurrent.futures.ThreadPoolExecutor(URGENT_THREADS, thread_name_prefix="changed")
    queue = Queue(kube, urgent)
    registry = kopf.OperatorRegistry()
    register(registry, queue, settings)
    if settings.metrics_port:
        start_http_server(settings.metrics_port)
    if kubeconfig:
        # kopf logs in on its own; point it at the same kubeconfig as the client.
        import os

        os.environ["KUBECONFIG"] = kubeconfig
    liveness = f"http://0.0.0.0:{settings.health_port}/healthz" if settings.health_port else None
    log.info(
        "modelops operator starting",
        extra={
            "namespaces": ",".join(settings.namespaces) or "*",
            "peering": "standalone" if settings.standalone else settings.peering_name,
            "resyncSeconds": settings.resync_seconds,
        },
    )
    try:
        await kopf.operator(
            registry=registry,
            clusterwide=not settings.namespaces,
            namespaces=list(settings.namespaces),
            standalone=settings.standalone,
            priority=settings.priority,
            peering_name=settings.peering_name,
            liveness_endpoint=liveness,
        )
    finally:
        await queue.drain()
        urgent.shutdown(wait=False, cancel_futures=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="modelops-operator",
        description="Run the ModelDeployment operator (settings: MODELOPS_* environment).",
    )
    parser.add_argument("--kubeconfig", default=None, help="kubeconfig (default: in-cluster)")
    args = parser.parse_args(argv)
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        sys.stderr.write(f"modelops-operator: {exc}\n")
        return 2
    configure_logging(settings)
    try:
        asyncio.run(run(settings, args.kubeconfig))
    except KeyboardInterrupt:
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
