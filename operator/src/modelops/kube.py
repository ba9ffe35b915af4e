"""The one module that talks to the Kubernetes API.

It observes a ModelDeployment's children, hands them to the pure planner
(:func:`modelops.reconcile.plan`) and carries the plan out. Requests are raw JSON through the
official client's ``ApiClient`` (no generated models: less memory, and manifests stay dicts).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import logging
import threading
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from kubernetes import client as k8s_client
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException

from modelops_contract.clock import now_rfc3339

from . import metrics, render
from .harvest import Failed, NeedsLog, Succeeded, read_outcome
from .reconcile import Event, Observed, Plan, Ref, harvest_needed, plan
from .settings import Settings
from .spec import GROUP, KIND, PLURAL, VERSION

log = logging.getLogger("modelops.kube")
# Reconcile passes run in this many threads (operator.py); each fans its reads out to the
# observe pool. The connection pool holds one connection per thread of both.
RECONCILE_THREADS = 16
FANOUT_THREADS = 32
# Children of one resource as listed: Jobs, ConfigMaps, Deployments, Services.
ChildLists = list[list[dict[str, Any]]]

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
    (f"{GROUP}/{VERSION}", KIND): PLURAL,
}
MONITORING_CRD_TTL = 60.0
MUTATING = {"POST", "PUT", "PATCH", "DELETE"}


class ApiError(Exception):
    """An API request failed; ``status`` is the HTTP status (0: no answer)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def collection_path(api_version: str, kind: str, namespace: str) -> str:
    plural = PLURALS[(api_version, kind)]
    prefix = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
    return f"{prefix}/namespaces/{namespace}/{plural}"


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
        configuration.connection_pool_maxsize = RECONCILE_THREADS + FANOUT_THREADS
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
    ) -> Any:
        verb = method.upper()
        started = time.perf_counter()
        try:
            _, url, headers, payload, _ = self.api.param_serialize(
                verb,
                path,
                query_params=list((query or {}).items()),
                header_params={"Content-Type": content_type, "Accept": "application/json"},
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
            raise ApiError(int(response.status), f"{verb} {path}: {message}")
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

    def list(self, path: str, selector: str, consistent: bool = False) -> list[dict[str, Any]]:
        # resourceVersion=0: served from the API server's watch cache instead of a quorum read
        # of etcd (several times faster). A slightly stale view is safe for what the next pass
        # corrects anyway: creates are idempotent (409 is fine) and the change that made it
        # stale triggers another pass. `consistent` is for reads that lead to a decision kept
        # for good (a trainer's result), where a stale view must not count as "no result".
        query = {"labelSelector": selector}
        if not consistent:
            query["resourceVersion"] = "0"
        data = self.request("GET", path, query=query)
        return list(data.get("items") or [])

    def create(self, manifest: Mapping[str, Any]) -> None:
        meta = manifest["metadata"]
        path = collection_path(manifest["apiVersion"], manifest["kind"], meta["namespace"])
        try:
            self.request("POST", path, body=manifest)
        except ApiError as exc:
            if exc.status != 409:  # created meanwhile (e.g. by the previous leader): fine
                raise

    def apply(self, manifest: Mapping[str, Any]) -> None:
        """Server-side apply: creates, or puts back the fields the operator owns."""
        meta = manifest["metadata"]
        path = object_path(
            manifest["apiVersion"], manifest["kind"], meta["namespace"], meta["name"]
        )
        try:
            self.request(
                "PATCH",
                path,
                body=manifest,
                query={"fieldManager": self.settings.field_manager, "force": "true"},
                content_type="application/apply-patch+yaml",
            )
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

    def delete(self, namespace: str, ref: Ref) -> None:
        path = object_path(ref.api_version, ref.kind, namespace, ref.name)
        try:
            # Background: a Job's pods (and a Deployment's ReplicaSets) go with it.
            self.request("DELETE", path, body={"propagationPolicy": "Background"})
        except ApiError as exc:
            if exc.status != 404:
                raise

    def patch_status(self, cr: Mapping[str, Any], status: Mapping[str, Any]) -> None:
        meta = cr["metadata"]
        old = cr.get("status") or {}
        body = {k: None for k in old if k not in status}
        body.update(status)
        self.request(
            "PATCH",
            object_path(cr["apiVersion"], KIND, meta["namespace"], meta["name"]) + "/status",
            body={"status": body},
            content_type="application/merge-patch+json",
        )

    def post_event(self, cr: Mapping[str, Any], event: Event) -> None:
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

    def pod_log(self, namespace: str, pod: str) -> str:
        text: str = self.request(
            "GET",
            f"/api/v1/namespaces/{namespace}/pods/{quote(pod)}/log",
            query={"container": "trainer"},
            raw=True,
        )
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

    # Reconcile ------------------------------------------------------------------------------

    def _child_lists(self, namespace: str, name: str) -> ChildLists:
        """Jobs, artifact ConfigMaps, Deployments and Services labelled for `name`."""
        selector = f"{render.LABEL_NAME}={name},{render.LABEL_MANAGED_BY}={render.MANAGED_BY}"
        # Independent lists, fetched at once: a pass waits for one round trip, not four.
        queries = [
            (collection_path("batch/v1", "Job", namespace), selector),
            (
                collection_path("v1", "ConfigMap", namespace),
                f"{selector},{render.LABEL_COMPONENT}={render.COMPONENT_MODEL}",
            ),
            (collection_path("apps/v1", "Deployment", namespace), selector),
            (collection_path("v1", "Service", namespace), selector),
        ]
        return list(self._fanout.map(lambda query: self.list(*query), queries))

    def observe(self, cr: Mapping[str, Any], lists: ChildLists | None = None) -> Observed:
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
                str(item["metadata"]["labels"][render.LABEL_VERSION]): item
                for item in items
                if render.LABEL_VERSION in (item["metadata"].get("labels") or {})
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
        return Observed(
            jobs=by_version(jobs),
            artifacts=by_version(configmaps),
            server=deployments.get(render.server_name(name)),
            service=services.get(render.service_name(name)),
            loadgen=deployments.get(render.loadgen_name(name)),
            service_monitor=service_monitor,
            pod_monitor=pod_monitor,
            monitoring_crds=monitoring,
        )

    def harvest(self, cr: Mapping[str, Any], observed: Observed) -> dict[str, Succeeded | Failed]:
        namespace = cr["metadata"]["namespace"]
        outcomes: dict[str, Succeeded | Failed] = {}
        for version in harvest_needed(cr, observed):
            job = observed.jobs[version]
            # Pods are not watched: a cached list could still show the trainer running after
            # the Job completed, and "no result" would then be recorded for good.
            pods = self.list(
                collection_path("v1", "Pod", namespace),
                f"batch.kubernetes.io/controller-uid={job['metadata']['uid']}",
                consistent=True,
            )
            outcome = read_outcome(version, job, pods)
            if isinstance(outcome, NeedsLog):
                try:
                    text = self.pod_log(namespace, outcome.pod)
                except ApiError as exc:
                    log.warning("reading the trainer log of %s failed: %s", version, exc)
                    text = ""
                outcome = read_outcome(version, job, pods, log=text)
            if isinstance(outcome, Succeeded | Failed):
                outcomes[version] = outcome
        return outcomes

    def reconcile(self, namespace: str, name: str) -> Plan | None:
        """One level-based pass for one ModelDeployment; returns what it did (None: gone)."""
        # The resource and its children are read at once (children are filtered by the
        # resource's uid afterwards).
        wanted = self._fanout.submit(
            self.get, object_path(f"{GROUP}/{VERSION}", KIND, namespace, name)
        )
        lists = self._child_lists(namespace, name)
        cr = wanted.result()
        if cr is None or cr["metadata"].get("deletionTimestamp"):
            return None
        observed = self.observe(cr, lists)
        outcomes = self.harvest(cr, observed)
        result = plan(cr, observed, outcomes, self.settings, now_rfc3339())
        for manifest in result.create:
            self.create(manifest)
        for manifest in result.apply:
            self.apply(manifest)
        for ref in result.delete:
            self.delete(namespace, ref)
        if result.status_changed:
            self.patch_status(cr, result.status)
        for event in result.events:
            self.post_event(cr, event)
        metrics.observe_status(namespace, name, cr["spec"], result.status)
        return result
