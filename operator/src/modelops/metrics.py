"""The operator's own Prometheus metrics (documented in operator/README.md)."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

from .names import METRIC_LABEL, PHASES

RECONCILES = Counter(
    "modelops_reconcile_total",
    "Reconcile passes by result (ok: nothing to write, changed: wrote something, error).",
    ["result"],
)
RECONCILE_SECONDS = Histogram(
    "modelops_reconcile_duration_seconds",
    "Duration of one reconcile pass.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
API_REQUESTS = Counter(
    "modelops_api_requests_total", "Requests to the Kubernetes API.", ["verb", "code"]
)
API_LATENCY = Histogram(
    "modelops_api_request_duration_seconds",
    "Latency of requests to the Kubernetes API.",
    ["verb"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
LEADER = Gauge(
    "modelops_leader", "1 while this operator replica holds the leader Lease (and acts), else 0."
)
PHASE = Gauge(
    "modelops_modeldeployment_phase",
    "1 for the current phase of each ModelDeployment, 0 for the others.",
    ["namespace", METRIC_LABEL, "phase"],
)
ACCURACY = Gauge(
    "modelops_modeldeployment_accuracy",
    "Held-out accuracy of the serving model version.",
    ["namespace", METRIC_LABEL, "version"],
)
MIN_ACCURACY = Gauge(
    "modelops_modeldeployment_min_accuracy",
    "spec.minAccuracy of each ModelDeployment (alert when accuracy drops below it).",
    ["namespace", METRIC_LABEL],
)
READY_REPLICAS = Gauge(
    "modelops_modeldeployment_ready_replicas",
    "Ready model-server replicas of each ModelDeployment.",
    ["namespace", METRIC_LABEL],
)
_serving: dict[tuple[str, str], str] = {}


def observe_status(
    namespace: str, name: str, spec: Mapping[str, Any], status: Mapping[str, Any]
) -> None:
    for phase in PHASES:
        PHASE.labels(namespace, name, phase).set(1 if status.get("phase") == phase else 0)
    # The API server has applied the CRD default: minAccuracy is always there.
    MIN_ACCURACY.labels(namespace, name).set(float(spec["minAccuracy"]))
    READY_REPLICAS.labels(namespace, name).set(int(status.get("readyReplicas", 0)))
    version = status.get("servingVersion")
    previous = _serving.get((namespace, name))
    if previous is not None and previous != version:
        ACCURACY.remove(namespace, name, previous)  # one series per resource
        del _serving[(namespace, name)]
    if version and status.get("accuracy") is not None:
        ACCURACY.labels(namespace, name, version).set(float(status["accuracy"]))
        _serving[(namespace, name)] = str(version)


def forget(namespace: str, name: str) -> None:
    """Drop the series of a deleted ModelDeployment (bounded label sets)."""
    for phase in PHASES:
        with contextlib.suppress(KeyError):
            PHASE.remove(namespace, name, phase)
    for gauge in (MIN_ACCURACY, READY_REPLICAS):
        with contextlib.suppress(KeyError):
            gauge.remove(namespace, name)
    version = _serving.pop((namespace, name), None)
    if version is not None:
        with contextlib.suppress(KeyError):
            ACCURACY.remove(namespace, name, version)
