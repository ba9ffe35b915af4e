"""The cluster driver: the one module that talks to the Kubernetes API.

:class:`Kube` is the :class:`modelops.engine.Driver` of a cluster: it reads a ModelDeployment
and its children, the pods and logs of finished trainer Jobs, and carries out what the one
reconcile pass (:func:`modelops.engine.reconcile`) decides. Requests are raw JSON through the
official client's ``ApiClient`` (no generated models: less memory, and manifests stay dicts).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import logging
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any
from urllib.parse import quote

from kubernetes import client as k8s_client
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException

from modelops_contract.clock import now_rfc3339

from . import engine, metrics, prometheus
from .cache import KINDS, PODS, Children, Key, Resources, trimmed
from .core import render
from .core.drift import rollout_stalled, template_version
from .core.harvest import job_finished
from .core.rollout import AnalysisRequest, QueryResults
from .core.state import Event, Observed, Plan, Ref
from .names import (
    API_VERSION,
    COMPONENT_MODEL,
    GROUP,
    KIND,
    LABEL_COMPONENT,
    LABEL_MANAGED_BY,
    LABEL_NAME,
    LABEL_VERSION,
    MANAGED_BY,
    PLURAL,
    VERSION,
)
from .settings import Settings

log = logging.getLogger("modelops.kube")
# Reconcile passes run in RECONCILE_THREADS threads, plus URGENT_THREADS kept for resources
# whose spec changed (operator.py), so that a new resource does not wait behind resyncs and
# the echoes of the operator's own writes. A pass reads from the watch cache; only a pass that
# reads the API server (the resource not cached yet, a retry: the resource, four child lists,
# artifacts by name) fans its reads out at once, in the observe pool (FANOUT_THREADS; more such
# reads wait their turn). The connection pool holds one connection per thread of all three.
RECONCILE_THREADS = 16
# A new resource's pass holds its thread for five round trips (reads, Job, Service, status,
# Event): on a loaded API server (~100-250 ms each) 8 threads kept up with ~10 creations/s and
# a burst queued for seconds.
URGENT_THREADS = 32
FANOUT_THREADS = 32
# The job controller's label on a Job's pods.
JOB_UID_LABEL = "batch.kubernetes.io/controller-uid"
Objects = list[dict[str, Any]]
# Children of one resource as listed: Jobs, ConfigMaps, Deployments, Services.
ChildLists = list[Objects]

# (apiVersion, kind) → plural, for building paths.
PLURALS = {
    ("v1", "ConfigMap"): "configmaps",
    ("v1", "Service"): "services",
    ("v1", "Pod"): "pods",
    ("v1", "Event"): "events",
    ("apps/v1", "Deployment"): "deployments",
    ("batch/v1", "Job"): "jobs",
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "servicemonitors",
    ("monitoring.coreos.com/v1", "PodMonitor"): "podmonitors",
    (API_VERSION, KIND): PLURAL,
}
LEASES = "/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases"
# Objects per page when the whole of a kind is listed (the watch cache's safety net).
RELIST_PAGE = 100
MONITORING_CRD_TTL = 60.0
# Artifact ConfigMaps are listed as metadata only: the planner reads their annotations, and
# the model bytes would otherwise cross the wire (and be parsed) on every pass.
METADATA_ONLY = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1"


class ApiError(Exception):
    """An API request failed; ``status`` is the HTTP status (0: no answer); ``detail`` the
    API server's own message."""

    def __init__(self, status: int, message: str, detail: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.detail = detail or message


# Answers that the same write would get again until the spec changes: bad request, forbidden
# (quota, pod security, RBAC), too large, invalid. Anything else (conflicts, timeouts, 5xx)
# is retried with backoff.
REJECTED_STATUSES = frozenset({400, 403, 413, 422})


@contextlib.contextmanager
def _rejections(manifest_kind: str, name: str) -> Iterator[None]:
    try:
        yield
    except ApiError as exc:
        if exc.status in REJECTED_STATUSES:
            raise engine.Rejected(manifest_kind, name, exc.detail) from exc
        raise


def collection_path(api_version: str, kind: str, namespace: str) -> str:
    plural = PLURALS[(api_version, kind)]
    prefix = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
    return f"{prefix}/namespaces/{namespace}/{plural}"


def kind_path(group: str, version: str, plural: str, namespace: str | None) -> str:
    """A collection's path by group, version and plural; cluster-wide without a namespace."""
    prefix = f"/apis/{group}/{version}" if group else f"/api/{version}"
    return f"{prefix}/namespaces/{namespace}/{plural}" if namespace else f"{prefix}/{plural}"


def object_path(api_version: str, kind: str, namespace: str, name: str) -> str:
    return f"{collection_path(api_version, kind, namespace)}/{quote(name)}"


class Kube:
    """Thin JSON access to the API server (thread-safe: one ApiClient, urllib3 pool)."""

    def __init__(self, api: k8s_client.ApiClient, settings: Settings) -> None:
        self.api = api
        self.settings = settings
        self._crd_checked = 0.0
        self._monitoring = False
        self._lock = threading.Lock()
        self._fanout = concurrent.futures.ThreadPoolExecutor(
            max_workers=FANOUT_THREADS, thread_name_prefix="observe"
        )
        # uid → resourceVersion of what this operator's last write of a child returned: the
        # watch event of that very version is an echo, with nothing a pass has not seen.
        self._written: dict[str, str] = {}
        # (namespace, name) → the versions whose artifact ConfigMap the next pass reads by
        # name, known from the resource's watch event (see read()).
        self._expected: dict[tuple[str, str], set[str]] = {}
        # (namespace, name, version) → uid of the version's running trainer Job when the name
        # of its artifact was last read and nothing held it. While that Job runs, passes from
        # the watch cache skip the read (a new resource's passes read it once, not each time
        # its trainer's pod changes); the Job's end, a retry or the resync reads it again.
        self._absent: dict[tuple[str, str, str], str] = {}
        # What the watches (operator.py) and this operator's writes showed of its children.
        self.children = Children()
        self.resources = Resources()
        # Resources whose next pass reads its children from the API server, not the cache.
        self._fresh: set[Key] = set()

    @classmethod
    def connect(cls, settings: Settings, kubeconfig: str | None = None) -> Kube:
        """The given kubeconfig, else in-cluster credentials, else the default kubeconfig."""
        configuration = k8s_client.Configuration()
        load_kube = k8s_config.load_kube_config
        if kubeconfig is None:
            try:
                k8s_config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
            except k8s_config.ConfigException:
                load_kube(client_configuration=configuration)  # type: ignore[no-untyped-call]
        else:
            load_kube(config_file=kubeconfig, client_configuration=configuration)  # type: ignore[no-untyped-call]
        # The operator runs concurrent reconciles; urllib3's default pool of 4 would serialise.
        configuration.connection_pool_maxsize = RECONCILE_THREADS + URGENT_THREADS + FANOUT_THREADS
        return cls(k8s_client.ApiClient(configuration), settings)

    # Raw requests ---------------------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        query: Mapping[str, str] | None = None,
        content_type: str = "application/json",
        raw: bool = False,
        accept: str = "application/json",
    ) -> Any:
        verb = method.upper()
        started = time.perf_counter()
        try:
            _, url, headers, payload, _ = self.api.param_serialize(
                verb,
                path,
                query_params=list((query or {}).items()),
                header_params={"Content-Type": content_type, "Accept": accept},
                body=body,
                auth_settings=["BearerToken"],
            )
            response = self.api.call_api(verb, url, headers, payload, _request_timeout=30)
            data: bytes = response.read()  # type: ignore[no-untyped-call]
        except (ApiException, OSError) as exc:  # no answer (connection, TLS, timeout)
            metrics.API_REQUESTS.labels(verb, "0").inc()
            raise ApiError(0, f"{verb} {path}: {exc}") from None
        finally:
            metrics.API_LATENCY.labels(verb).observe(time.perf_counter() - started)
        metrics.API_REQUESTS.labels(verb, str(response.status)).inc()
        if response.status >= 400:
            message = data.decode(errors="replace") if data else ""
            with contextlib.suppress(ValueError, AttributeError):
                message = json.loads(message).get("message", message)
            raise ApiError(int(response.status), f"{verb} {path}: {message}", message)
        if raw:
            return data.decode(errors="replace") if data else ""
        return json.loads(data) if data else None

    def get(self, path: str) -> dict[str, Any] | None:
        try:
            result: dict[str, Any] = self.request("GET", path)
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise
        return result

    def list(
        self, path: str, selector: str, consistent: bool = False, accept: str = "application/json"
    ) -> list[dict[str, Any]]:
        # resourceVersion=0: served from the API server's watch cache instead of a quorum read
        # of etcd (several times faster). A slightly stale view is safe for what the next pass
        # corrects anyway: creates are idempotent (409 is fine) and the change that made it
        # stale triggers another pass. `consistent` is for reads that lead to a decision kept
        # for good (a trainer's result), where a stale view must not count as "no result".
        query = {"labelSelector": selector}
        if not consistent:
            query["resourceVersion"] = "0"
        data = self.request("GET", path, query=query, accept=accept)
        return list(data.get("items") or [])

    def create(self, cr: Mapping[str, Any], manifest: Mapping[str, Any]) -> None:
        meta = manifest["metadata"]
        path = collection_path(manifest["apiVersion"], manifest["kind"], meta["namespace"])
        try:
            with _rejections(manifest["kind"], meta["name"]):
                self._wrote(self.request("POST", path, body=manifest))
        except ApiError as exc:
            if exc.status != 409:  # created meanwhile (e.g. by the previous leader): fine
                raise

    def apply(self, cr: Mapping[str, Any], manifest: Mapping[str, Any]) -> None:
        """Server-side apply: creates, or puts back the fields the operator owns."""
        with _rejections(manifest["kind"], manifest["metadata"]["name"]):
            self._apply(manifest)

    def _apply(self, manifest: Mapping[str, Any]) -> None:
        meta = manifest["metadata"]
        path = object_path(
            manifest["apiVersion"], manifest["kind"], meta["namespace"], meta["name"]
        )
        try:
            written = self.request(
                "PATCH",
                path,
                body=manifest,
                query={"fieldManager": self.settings.field_manager, "force": "true"},
                content_type="application/apply-patch+yaml",
            )
            self._wrote(written)
        except ApiError as exc:
            if exc.status != 422:
                raise
            # Apply merges keyed lists: a hand-edited key (e.g. a Service port changed from
            # 8000 to 9999) stays beside ours and the result is invalid. A merge patch
            # replaces such lists wholesale with the desired ones.
            log.info("apply of %s was invalid (%s); replacing its lists", path, exc)
            self.request(
                "PATCH",
                path,
                body=manifest,
                query={"fieldManager": self.settings.field_manager},
                content_type="application/merge-patch+json",
            )

    def _wrote(self, obj: Mapping[str, Any] | None) -> None:
        meta = (obj or {}).get("metadata") or {}
        if obj and meta.get("uid") and meta.get("resourceVersion"):
            self._written[meta["uid"]] = meta["resourceVersion"]
            # The next pass sees what this one wrote, whether or not its echo has arrived.
            plural = PLURALS.get((str(obj.get("apiVersion")), str(obj.get("kind"))))
            if plural:
                self.children.put(plural, obj)

    def echo(self, body: Mapping[str, Any]) -> bool:
        """Whether a child's watch event shows just what this operator's own write left: the
        pass that wrote it knew it already, so the event needs no pass of its own."""
        meta = body.get("metadata") or {}
        uid = meta.get("uid")
        if not uid or self._written.get(uid) != meta.get("resourceVersion"):
            return False
        self._written.pop(uid, None)
        return True

    def forget(self, namespace: str, name: str) -> None:
        """A deleted resource: nothing of it stays in the cache or in the memos."""
        self.resources.drop(namespace, name)
        self._expected.pop((namespace, name), None)
        for key in [k for k in list(self._absent) if k[:2] == (namespace, name)]:
            self._absent.pop(key, None)

    def expect(self, namespace: str, name: str, cr: Mapping[str, Any]) -> None:
        """Note, from a watch event, the versions whose artifact the next pass of the
        resource will look up by name (its spec's and the serving one)."""
        versions = {(cr.get("spec") or {}).get("modelVersion")}
        versions.add((cr.get("status") or {}).get("servingVersion"))
        self._expected[namespace, name] = {str(v) for v in versions if v}

    def delete(self, cr: Mapping[str, Any], ref: Ref) -> None:
        path = object_path(ref.api_version, ref.kind, cr["metadata"]["namespace"], ref.name)
        # Background: a Job's pods (and a Deployment's ReplicaSets) go with it.
        body: dict[str, Any] = {"propagationPolicy": "Background"}
        if ref.uid:
            body["preconditions"] = {"uid": ref.uid}
        try:
            with _rejections(ref.kind, ref.name):
                self.request("DELETE", path, body=body)
        except ApiError as exc:
            # 404: gone already; 409 (with a uid): the name is another object's now.
            if not (exc.status == 404 or (exc.status == 409 and ref.uid)):
                raise

    def save_status(self, cr: Mapping[str, Any], status: Mapping[str, Any]) -> None:
        meta = cr["metadata"]
        old = cr.get("status") or {}
        body = {k: None for k in old if k not in status}
        body.update(status)
        saved = self.request(
            "PATCH",
            object_path(cr["apiVersion"], KIND, meta["namespace"], meta["name"]) + "/status",
            body={"status": body},
            content_type="application/merge-patch+json",
        )
        if saved:  # the next pass starts from what was saved, echo or not
            self.resources.put(saved)

    def emit(self, cr: Mapping[str, Any], event: Event) -> None:
        meta = cr["metadata"]
        stamp = now_rfc3339()
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
            "involvedObject": {
                "apiVersion": cr["apiVersion"],
                "kind": KIND,
                "name": meta["name"],
                "namespace": meta["namespace"],
                "uid": meta["uid"],
                "resourceVersion": meta.get("resourceVersion"),
            },
            "type": event.type,
            "reason": event.reason,
            "message": event.message[:1024],
            "source": {"component": "modelops"},
            "reportingComponent": "modelops.dev/operator",
            "reportingInstance": "modelops",
            "firstTimestamp": stamp,
            "lastTimestamp": stamp,
            "count": 1,
        }
        try:
            self.request("POST", f"/api/v1/namespaces/{meta['namespace']}/events", body=body)
        except ApiError as exc:  # an Event is informative; never fail a reconcile for it
            log.warning("could not post event %s: %s", event.reason, exc)

    def trainer_pods(
        self, cr: Mapping[str, Any], version: str, job: Mapping[str, Any]
    ) -> Sequence[Mapping[str, Any]]:
        # Pods are not watched: a cached list could still show the trainer running after
        # the Job completed, and "no result" would then be recorded for good.
        return self.list(
            collection_path("v1", "Pod", cr["metadata"]["namespace"]),
            f"batch.kubernetes.io/controller-uid={job['metadata']['uid']}",
            consistent=True,
        )

    def trainer_log(self, cr: Mapping[str, Any], version: str, pod: str) -> str:
        namespace = cr["metadata"]["namespace"]
        try:
            text: str = self.request(
                "GET",
                f"/api/v1/namespaces/{namespace}/pods/{quote(pod)}/log",
                query={"container": "trainer"},
                raw=True,
            )
        except ApiError as exc:
            log.warning("reading the trainer log of %s failed: %s", version, exc)
            return ""
        return text

    def monitoring_crds(self) -> bool:
        """Whether ServiceMonitor/PodMonitor exist (checked at most once a minute)."""
        with self._lock:
            ttl = min(MONITORING_CRD_TTL, self.settings.resync_seconds / 2)
            if time.monotonic() - self._crd_checked < ttl and self._crd_checked:
                return self._monitoring
        try:
            data = self.get("/apis/monitoring.coreos.com/v1")
        except ApiError:
            data = None
        kinds = {r.get("kind") for r in (data or {}).get("resources", [])}
        with self._lock:
            self._monitoring = {"ServiceMonitor", "PodMonitor"} <= kinds
            self._crd_checked = time.monotonic()
            return self._monitoring

    # Leader election --------------------------------------------------------------------------

    def lease(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.get(f"{LEASES.format(namespace=namespace)}/{quote(name)}")

    def write_lease(self, namespace: str, lease: Mapping[str, Any]) -> bool:
        """Create the Lease, or replace it at the resourceVersion it was read at; False when
        another replica wrote it first (the caller reads it again)."""
        path = LEASES.format(namespace=namespace)
        try:
            if lease["metadata"].get("resourceVersion"):
                self.request("PUT", f"{path}/{quote(lease['metadata']['name'])}", body=lease)
            else:
                self.request("POST", path, body=lease)
        except ApiError as exc:
            if exc.status == 409:
                return False
            raise
        return True

    # The watch cache's safety net -------------------------------------------------------------

    def relist(
        self, kinds: Sequence[tuple[str, str, str, str]], namespaces: Sequence[str]
    ) -> set[Key]:
        """List every owned child of each kind (group, version, plural, label selector) in the
        watched namespaces (none: cluster-wide), in pages, and put it in place of the cache,
        the ModelDeployments too; the resources whose children differed from what the watches
        showed (see :mod:`modelops.cache`)."""
        changed: set[Key] = set()
        scopes: Sequence[str | None] = namespaces or [None]
        for group, version, plural, selector in kinds:
            since = time.monotonic()
            listed: Objects = []
            for namespace in scopes:
                path = kind_path(group, version, plural, namespace)
                listed.extend(self._pages(path, selector, plural))
            changed |= self.children.replace_all(plural, listed, since)
        since = time.monotonic()
        resources: Objects = []
        for namespace in scopes:
            path = kind_path(GROUP, VERSION, PLURAL, namespace)
            resources.extend(self._pages(path, "", PLURAL))
        self.resources.replace_all(resources, since)
        return changed

    def _pages(self, path: str, selector: str, plural: str) -> Iterator[dict[str, Any]]:
        """A consistent list in pages of RELIST_PAGE, each trimmed as it arrives (no model
        bytes, no managedFields kept: the peak is one page, not the whole kind)."""
        query = {"limit": str(RELIST_PAGE)}
        if selector:
            query["labelSelector"] = selector
        accept = METADATA_ONLY if plural == "configmaps" else "application/json"
        while True:
            data = self.request("GET", path, query=query, accept=accept)
            yield from (trimmed(plural, item) for item in data.get("items") or [])
            token = (data.get("metadata") or {}).get("continue")
            if not token:
                return
            query["continue"] = token

    # Reconcile ------------------------------------------------------------------------------

    def _child_lists(self, namespace: str, name: str) -> ChildLists:
        """Jobs, artifact ConfigMaps, Deployments and Services labelled for `name`."""
        selector = f"{LABEL_NAME}={name},{LABEL_MANAGED_BY}={MANAGED_BY}"
        json_ = "application/json"
        # Independent lists, fetched at once: a pass waits for one round trip, not four.
        queries = [
            (collection_path("batch/v1", "Job", namespace), selector, json_),
            (
                collection_path("v1", "ConfigMap", namespace),
                f"{selector},{LABEL_COMPONENT}={COMPONENT_MODEL}",
                METADATA_ONLY,
            ),
            (collection_path("apps/v1", "Deployment", namespace), selector, json_),
            (collection_path("v1", "Service", namespace), selector, json_),
        ]
        return list(self._fanout.map(lambda q: self.list(q[0], q[1], accept=q[2]), queries))

    def observe(
        self,
        cr: Mapping[str, Any],
        lists: ChildLists | None = None,
        fetched: Mapping[str, concurrent.futures.Future[dict[str, Any] | None]] | None = None,
        lists_cached: bool = False,
    ) -> Observed:
        """What one pass sees; `lists_cached`: `lists` came from the watch cache."""
        meta = cr["metadata"]
        namespace, name, uid = meta["namespace"], meta["name"], meta["uid"]

        def owned(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
            return [
                item
                for item in items
                if any(o.get("uid") == uid for o in item["metadata"].get("ownerReferences") or [])
            ]

        def by_version(items: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
            return {
                str(item["metadata"]["labels"][LABEL_VERSION]): item
                for item in items
                if LABEL_VERSION in (item["metadata"].get("labels") or {})
            }

        if lists is None:
            lists = self._child_lists(namespace, name)
        listed = [owned(items) for items in lists]
        jobs, configmaps = listed[0], listed[1]
        deployments = {d["metadata"]["name"]: d for d in listed[2]}
        services = {s["metadata"]["name"]: s for s in listed[3]}
        monitoring = self.monitoring_crds()
        service_monitor = pod_monitor = None
        if monitoring:
            service_monitor = self.get(
                object_path(
                    "monitoring.coreos.com/v1",
                    "ServiceMonitor",
                    namespace,
                    render.monitor_name(name),
                )
            )
            pod_monitor = self.get(
                object_path(
                    "monitoring.coreos.com/v1", "PodMonitor", namespace, render.loadgen_name(name)
                )
            )
        server = deployments.get(render.server_name(name))
        jobs_by_version = by_version(jobs)
        training, serving = self._pods_of_interest(cr, jobs_by_version, server)
        return Observed(
            jobs=jobs_by_version,
            artifacts=self._artifacts(
                cr, by_version(configmaps), fetched or {}, jobs_by_version, cached=lists_cached
            ),
            server=server,
            training_pods=training,
            server_pods=serving,
            service=services.get(render.service_name(name)),
            loadgen=deployments.get(render.loadgen_name(name)),
            candidate=deployments.get(render.candidate_name(name)),
            candidate_service=services.get(render.candidate_name(name)),
            service_monitor=service_monitor,
            pod_monitor=pod_monitor,
            monitoring_crds=monitoring,
        )

    def _pods_of_interest(
        self,
        cr: Mapping[str, Any],
        jobs: Mapping[str, Mapping[str, Any]],
        server: Mapping[str, Any] | None,
    ) -> tuple[tuple[dict[str, Any], ...], tuple[dict[str, Any], ...]]:
        """Pods the status explains, read only when there is something to explain: those of
        the candidate's running trainer Job (why it may not start) and the server pods of a
        stalled rollout (why they are not ready)."""
        namespace, name = cr["metadata"]["namespace"], cr["metadata"]["name"]
        pods = collection_path("v1", "Pod", namespace)
        training: list[dict[str, Any]] = []
        job = jobs.get(cr["spec"]["modelVersion"])
        if job is not None and job_finished(job) is None:
            training = self._running_trainer_pods(namespace, name, job)
        serving: list[dict[str, Any]] = []
        if server is not None and rollout_stalled(server, template_version(server) or ""):
            # The Deployment's own selector: its pods, not a candidate's.
            own = server["spec"]["selector"].get("matchLabels") or render.server_selector(name)
            serving = self.list(pods, render.selector_string(own))
        return tuple(training), tuple(serving)

    def _running_trainer_pods(self, namespace: str, name: str, job: Mapping[str, Any]) -> Objects:
        """The pods of a running trainer Job, as the pod watch showed them (no request)."""
        uid = job["metadata"]["uid"]
        return [
            pod
            for pod in self.children.owned(PODS, (namespace, name))
            if (pod["metadata"].get("labels") or {}).get(JOB_UID_LABEL) == uid
        ]

    def _artifacts(
        self,
        cr: Mapping[str, Any],
        listed: dict[str, dict[str, Any]],
        fetched: Mapping[str, concurrent.futures.Future[dict[str, Any] | None]],
        jobs: Mapping[str, Mapping[str, Any]],
        cached: bool,
    ) -> dict[str, dict[str, Any]]:
        """The listed artifacts, plus whatever holds the name of the artifact of the spec's
        and the serving version without being listed (unlabelled, or not owned): the planner
        must see such an object to refuse it, not overwrite or mount it blindly. `fetched`:
        those reads already under way (read())."""
        namespace, name = cr["metadata"]["namespace"], cr["metadata"]["name"]
        versions = {cr["spec"]["modelVersion"], (cr.get("status") or {}).get("servingVersion")}
        found = dict(listed)
        for version in sorted(v for v in versions if v and v not in listed):
            job = jobs.get(version)
            running = job is not None and job_finished(job) is None
            uid = str(job["metadata"].get("uid")) if job is not None and running else ""
            key = (namespace, name, version)
            pending = fetched.get(version)
            if pending is None and cached and uid and self._absent.get(key) == uid:
                continue  # read while this trainer runs: nothing held the name
            existing = (
                pending.result()
                if pending is not None
                else self.get(self._artifact_path(namespace, name, version))
            )
            if existing is not None:
                found[version] = existing
                self._absent.pop(key, None)
            elif uid:
                self._absent[key] = uid
            else:
                self._absent.pop(key, None)
        return found

    @staticmethod
    def _artifact_path(namespace: str, name: str, version: str) -> str:
        return object_path("v1", "ConfigMap", namespace, render.artifact_name(name, version))

    def read(self, namespace: str, name: str) -> tuple[Mapping[str, Any], Observed] | None:
        """The resource and its children as the watches (and this operator's own writes)
        showed them; in a pass marked fresh (reconcile()), read from the API server instead
        (children listed, filtered by the resource's uid afterwards) and put in the cache."""
        key = (namespace, name)
        fresh = key in self._fresh
        self._fresh.discard(key)
        cached = None if fresh else self.resources.get(namespace, name)
        wanted: concurrent.futures.Future[dict[str, Any] | None] = concurrent.futures.Future()
        if cached is not None:
            wanted.set_result(cached)
        else:
            wanted = self._fanout.submit(self.get, object_path(API_VERSION, KIND, namespace, name))
        # A new resource (or version) has no artifact listed, so its pass looks the name up:
        # with the version known from the watch event, that read joins the resource's round
        # trip instead of adding one before the trainer Job is created. (With the resource
        # cached, the look-up is the only read: _artifacts() makes it in this thread.)
        expected = sorted(self._expected.pop((namespace, name), ()))
        fetched = {
            version: self._fanout.submit(self.get, self._artifact_path(namespace, name, version))
            for version in (expected if cached is None else ())
        }
        if fresh:
            since = time.monotonic()
            lists = self._child_lists(namespace, name)
            for plural, items in zip(KINDS, lists, strict=True):
                self.children.replace(plural, key, items, since)
        cr = wanted.result()
        if cr is None or cr["metadata"].get("deletionTimestamp"):
            return None
        if cached is None:
            self.resources.put(cr)
        if not fresh:
            # Read after the resource: whatever a watch showed until now is in this pass.
            lists = self.children.lists(key)
        return cr, self.observe(cr, lists, fetched, lists_cached=not fresh)

    def analyse(self, cr: Mapping[str, Any], request: AnalysisRequest) -> QueryResults:
        return prometheus.run(request, self.settings.prometheus_timeout_seconds)

    def reconcile(self, namespace: str, name: str, fresh: bool = True) -> Plan | None:
        """One pass for one ModelDeployment; what it did (None: the resource is gone).
        `fresh`: its children are listed from the API server (the periodic resync, retries),
        else read from what the watches showed (passes that events asked for)."""
        if fresh:
            self._fresh.add((namespace, name))
        else:
            self._fresh.discard((namespace, name))
        done = engine.reconcile(self, namespace, name)
        if done is None:
            return None
        cr, result = done
        metrics.observe_status(namespace, name, cr["spec"], result.status)
        return result
