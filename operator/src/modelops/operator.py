"""The operator process: thin kopf handlers → a coalescing work queue → one reconcile pass
(:mod:`modelops.engine`) with the cluster driver (:mod:`modelops.kube`).

Every watch event (of a ModelDeployment or of a child it owns) only *schedules* a reconcile of
that ModelDeployment; at most one pass per resource runs at a time, and events arriving during
a pass coalesce into one more pass. :func:`resync` schedules every resource again each
``MODELOPS_RESYNC_SECONDS``: the periodic level-based resync. kopf never writes to a resource:
no handler needs a finalizer or change tracking (no annotations).

Run: ``modelops-operator`` (or ``python -m modelops.operator``); settings from ``MODELOPS_*``.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import logging
import math
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import kopf
from aiohttp import web
from prometheus_client import start_http_server

from modelops_contract.logs import JsonFormatter

from . import metrics
from .core.harvest import job_finished
from .core.state import Plan
from .kube import RECONCILE_THREADS, URGENT_THREADS, ApiError, Kube
from .leader import LeaderElection
from .names import (
    COMPONENT_MODEL,
    COMPONENT_TRAINER,
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
    wait ``CHILD_DELAY`` seconds so that a burst of them becomes one pass.

    An event asks for one more pass only when the pass in hand cannot cover it: a pass that is
    queued (delayed, or waiting for a thread) has not read yet and will see the change; so will
    a running pass of the resource's generation for an event that changes no spec (a
    metadata write, a status echo). Only events that arrive after the pass read, and could change
    its plan, are followed by exactly one more pass.

    Passes read the children from the watch cache (:mod:`modelops.cache`); a retry after a
    failure lists them from the API server (``fresh``).
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
        self._inflight: set[asyncio.Future[Any]] = set()
        self._closed = False
        # Keys whose pass has begun reading (added by the pass's thread, removed on the loop).
        self._reading: set[tuple[str, str]] = set()
        # The newest generation a queued or running pass was scheduled for.
        self._generation: dict[tuple[str, str], int] = {}
        # One pending "pass again later" per resource (a rollout's pause), the latest asked.
        self._later: dict[tuple[str, str], asyncio.TimerHandle] = {}
        # Keys whose next pass lists the children instead of reading the cache.
        self._fresh: set[tuple[str, str]] = set()
        # Monotonic time the latest pass of each resource began (for the resync).
        self._began: dict[tuple[str, str], float] = {}

    def schedule(
        self,
        namespace: str,
        name: str,
        delay: float = 0.0,
        urgent: bool = False,
        generation: int | None = None,
        fresh: bool = False,
    ) -> None:
        """Ask for a pass of one resource; `generation` is the resource's, for its own events;
        `fresh`: the pass lists the children from the API server."""
        if self._closed:
            return
        key = (namespace, name)
        if urgent:
            self._urgent.add(key)
        if fresh:
            self._fresh.add(key)
        running = key in self._running
        if generation is not None:
            if running and generation <= self._generation.get(key, 0):
                return  # metadata or status only: the pass for this generation covers it
            self._generation[key] = generation
        if not running:
            self._running[key] = asyncio.get_running_loop().create_task(self._run(key, delay))
            return
        if delay == 0.0 and key in self._wake:
            self._wake[key].set()  # cut a pending child delay short
        if key in self._reading:
            self._dirty.add(key)  # the pass read before this event: one more after it

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
                    self._fresh.add(key)  # what failed may have been a stale cache
                    await asyncio.sleep(retry)
                    continue
                if key not in self._dirty:
                    return
        finally:
            self._running.pop(key, None)
            self._generation.pop(key, None)
            self._fresh.discard(key)

    def forget(self, namespace: str, name: str) -> None:
        """A deleted resource: nothing of it stays (its children go by owner references)."""
        self._began.pop((namespace, name), None)
        self.kube.forget(namespace, name)

    def idle_for(self, namespace: str, name: str) -> float:
        """Seconds since a pass of the resource last began (infinite: never, or it is gone)."""
        began = self._began.get((namespace, name))
        return math.inf if began is None else time.monotonic() - began

    def _pass(self, namespace: str, name: str) -> Plan | None:
        """One pass in a worker thread; from here on, later events need a pass of their own."""
        key = (namespace, name)
        self._began[key] = time.monotonic()
        self._reading.add(key)
        fresh = key in self._fresh
        self._fresh.discard(key)
        return self.kube.reconcile(namespace, name, fresh=fresh)

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
            if self._closed:
                return None
            future = loop.run_in_executor(pool, self._pass, namespace, name)
            self._inflight.add(future)
            future.add_done_callback(self._inflight.discard)
            try:
                result = await future
            finally:
                self._reading.discard(key)
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
            self._began.pop(key, None)
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

    async def drain(self, timeout: float = 10.0) -> None:
        """Stop: no new passes, the ones in flight finish (a pass in a thread cannot be
        cancelled, and a successor must not act while it still writes), the rest is dropped."""
        self._closed = True
        for handle in self._later.values():
            handle.cancel()
        self._later.clear()
        if self._inflight:
            await asyncio.wait(list(self._inflight), timeout=timeout)
        tasks = list(self._running.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _owner(labels: Mapping[str, str] | None) -> str | None:
    labels = labels or {}
    if labels.get(LABEL_MANAGED_BY) != MANAGED_BY:
        return None
    return labels.get(LABEL_NAME)


def matters(plural: str, type: str | None, body: Mapping[str, Any]) -> bool:
    """Whether a child's event can change a plan. A pass reads of a trainer Job only that it
    exists and, once finished, its result: the job controller's progress updates of a running
    Job (start time, active and ready pods) change neither, so they need no pass."""
    return not (plural == "jobs" and type == "MODIFIED" and job_finished(body) is None)


def child_handler(queue: Queue) -> Callable[..., Awaitable[None]]:
    """The handler of every owned child's events: schedule the owner, unless it is moot.
    (What the event shows is already in the cache: see :func:`cache_handler`.)"""

    async def child(
        type: str | None,
        namespace: str | None,
        labels: Mapping[str, str],
        body: Mapping[str, Any],
        resource: kopf.Resource,
        **_: Any,
    ) -> None:
        if type == "DELETED":
            queue.kube.children.drop(resource.plural, body)
        owner = _owner(labels)
        if not owner or not namespace or queue.kube.echo(body):
            return
        if matters(resource.plural, type, body):
            queue.schedule(namespace, owner, delay=Queue.CHILD_DELAY)

    return child


def cache_handler(queue: Queue) -> Callable[..., None]:
    """Puts every owned child a watch shows into the cache. A kopf index handler: kopf runs
    these before any other handler and holds every other handler back until each watched
    kind has been listed once, so no pass reads a cache that has not been filled yet.
    (kopf does not call index handlers for deletions: :func:`child_handler` drops those.)"""

    def cache(body: Mapping[str, Any], resource: kopf.Resource, **_: Any) -> None:
        queue.kube.children.put(resource.plural, body)
        # Nothing is kept in kopf's own index.

    return cache


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
        # No handler needs a finalizer; kopf removes this one (which earlier builds added
        # for their kopf timers) from the resources it sees, so that deletion never waits.
        settings.persistence.finalizer = "modelops.dev/operator"
        # Replicas are kept apart by the leader Lease (modelops.leader), not kopf's peering.
        settings.peering.standalone = True
        # Watching listed namespaces: kopf takes them as given instead of listing namespaces
        # and CRDs cluster-wide, which the namespaced RBAC (config/rbac/namespaced) denies.
        settings.scanning.disabled = namespaced
        for group, version, plural in CHILD_WATCHES:
            settings.watching.label_selectors[group, version, plural] = child_selector(plural)

    namespaced = bool(settings.namespaces)

    @kopf.on.event(GROUP, VERSION, PLURAL, registry=registry)
    async def modeldeployment(
        type: str, namespace: str | None, name: str, body: Mapping[str, Any], **_: Any
    ) -> None:
        if namespace is None:
            return
        if type == "DELETED":
            queue.forget(namespace, name)
            metrics.forget(namespace, name)
            return
        queue.kube.resources.put(body)
        generation = body.get("metadata", {}).get("generation")
        observed = (body.get("status") or {}).get("observedGeneration")
        if type == "MODIFIED" and generation == observed:
            # The echo of a status write (or metadata edit): the spec did not change.
            return
        queue.kube.expect(namespace, name, body)
        queue.schedule(namespace, name, urgent=True, generation=generation)

    child, cache = child_handler(queue), cache_handler(queue)
    selector = {LABEL_MANAGED_BY: MANAGED_BY}
    for group, version, plural in CHILD_WATCHES:
        kopf.index(
            group, version, plural, labels=selector, registry=registry, id=f"cache-{plural}"
        )(cache)
        kopf.on.event(
            group, version, plural, labels=selector, registry=registry, id=f"child-{plural}"
        )(child)


# What the operator owns, watched with a server-side label selector: the API server streams
# only these objects (not every ConfigMap or Deployment of the cluster), of ConfigMaps only
# the artifacts, and of pods only the trainers (a trainer that cannot be scheduled or pulled
# changes no Job status, only its pod's).
CHILD_WATCHES = (
    ("batch", "v1", "jobs"),
    ("apps", "v1", "deployments"),
    ("", "v1", "services"),
    ("", "v1", "configmaps"),
    ("", "v1", "pods"),
)
_COMPONENT_OF = {"configmaps": COMPONENT_MODEL, "pods": COMPONENT_TRAINER}


def child_selector(plural: str) -> str:
    selector = f"{LABEL_MANAGED_BY}={MANAGED_BY}"
    if plural in _COMPONENT_OF:
        selector += f",{LABEL_COMPONENT}={_COMPONENT_OF[plural]}"
    return selector


# A resync gives a pass to a resource whose last one began this share of the interval ago.
RESYNC_IDLE_SHARE = 0.9


async def resync(queue: Queue, settings: Settings) -> None:
    """The level-based safety net: a pass for every resource that has had none for about
    ``resync_seconds`` (a no-change pass writes nothing). Resources are visited twice an
    interval, spread evenly over it, so that a thousand resources are not a thousand passes
    at once; a quiet one gets a pass once an interval, one that events keep busy none extra
    (at most 1.5 intervals pass without one). It runs only while this replica leads (it
    starts with kopf, after the Lease is taken).

    (Not kopf timers: a timer needs kopf's finalizer on every resource, one more write and
    echo per new resource, a task per resource, and a deletion that waits for the operator.)"""
    interval = settings.resync_seconds
    half = interval / 2
    await asyncio.sleep(half)
    while True:
        keys = queue.kube.resources.keys()
        gap = half / max(len(keys), 1)
        for namespace, name in keys:
            if queue.idle_for(namespace, name) >= RESYNC_IDLE_SHARE * interval:
                queue.schedule(namespace, name)
            await asyncio.sleep(gap)
        if not keys:
            await asyncio.sleep(half)


async def relist(queue: Queue, settings: Settings) -> None:
    """The watch cache's safety net: each resync interval, list every owned child once (all
    resources in a few paged requests) and give a pass to the resources whose children the
    watches had shown otherwise (e.g. a deletion while a watch was down)."""
    kinds = [(g, v, p, child_selector(p)) for g, v, p in CHILD_WATCHES]
    loop = asyncio.get_running_loop()
    while True:
        await asyncio.sleep(settings.resync_seconds)
        try:
            changed = await loop.run_in_executor(
                None, queue.kube.relist, kinds, settings.namespaces
            )
        except ApiError as exc:
            log.warning("listing the children for the watch cache failed: %s", exc)
            continue
        if changed:
            log.info(
                "watch cache: children of %d resources differed from the API server",
                len(changed),
                extra={"modeldeployments": ",".join("/".join(k) for k in sorted(changed)[:20])},
            )
        for namespace, name in changed:
            queue.schedule(namespace, name, delay=Queue.CHILD_DELAY)


async def serve_health(port: int, elector: LeaderElection | None) -> web.AppRunner:
    """``GET /healthz``: 200 while the event loop runs, leader or standby (the probes of
    config/manager); the body says which."""

    async def healthz(request: web.Request) -> web.Response:
        role = "standalone" if elector is None else "leader" if elector.leading else "standby"
        return web.Response(text=f"ok ({role})\n")

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "0.0.0.0", port).start()  # the kubelet probes it from outside
    return runner


async def lead(elector: LeaderElection | None, stop: asyncio.Event) -> asyncio.Task[None] | None:
    """Wait for the leader Lease (or for a stop signal); then keep it, and set ``stop`` when
    it is lost, so that kopf and the queue stop acting before another replica may start."""
    if elector is None:
        return None
    acquired = asyncio.ensure_future(elector.acquire())
    stopped = asyncio.ensure_future(stop.wait())
    await asyncio.wait({acquired, stopped}, return_when=asyncio.FIRST_COMPLETED)
    if not acquired.done():
        acquired.cancel()
        return None
    stopped.cancel()

    async def keep() -> None:
        await elector.hold()
        if elector.lost:
            stop.set()

    return asyncio.create_task(keep())


async def run(settings: Settings, kubeconfig: str | None = None) -> int:
    # Reconcile passes run in threads and mostly wait on the API server: the default pool
    # (cores + 4 threads) queues a burst of new resources behind each other.
    loop = asyncio.get_running_loop()
    loop.set_default_executor(concurrent.futures.ThreadPoolExecutor(max_workers=RECONCILE_THREADS))
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
    elector = None if settings.standalone else LeaderElection(kube, settings)
    log.info(
        "modelops operator starting",
        extra={
            "namespaces": ",".join(settings.namespaces) or "*",
            "leaderElection": "off" if elector is None else f"{elector.namespace}/{elector.name}",
            "identity": "" if elector is None else elector.me,
            "resyncSeconds": settings.resync_seconds,
        },
    )
    health = await serve_health(settings.health_port, elector) if settings.health_port else None
    stop = asyncio.Event()
    # PID 1 of a container ignores SIGTERM without a handler; kopf installs its own once it runs.
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    holding = await lead(elector, stop)

    @kopf.on.cleanup(registry=registry)
    async def hand_over(**_: Any) -> None:
        # kopf's watches have stopped: finish the passes in flight, then give the Lease back
        # so that a standby takes over at once.
        # On SIGTERM kopf's own signal handler stops it, and its waiter of `stop` would be
        # left pending: kopf then waits 5 s for that "hung" task before it returns. Set, the
        # waiter ends and the process exits at once.
        stop.set()
        await queue.drain()
        if elector is not None:
            await loop.run_in_executor(None, elector.release)

    relisting = asyncio.create_task(relist(queue, settings))
    resyncing = asyncio.create_task(resync(queue, settings))
    try:
        if not stop.is_set():
            # The Lease is what keeps replicas apart: kopf's own peering stays off.
            await kopf.operator(
                registry=registry,
                clusterwide=not settings.namespaces,
                namespaces=list(settings.namespaces),
                standalone=True,
                stop_flag=stop,
            )
    finally:
        lost = elector is not None and elector.lost
        relisting.cancel()
        resyncing.cancel()
        if holding is not None:
            holding.cancel()
        await queue.drain()
        if elector is not None:
            await loop.run_in_executor(None, elector.release)
        urgent.shutdown(wait=False, cancel_futures=True)
        if health is not None:
            await health.cleanup()
    return 1 if lost else 0


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
        return asyncio.run(run(settings, args.kubeconfig))
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
