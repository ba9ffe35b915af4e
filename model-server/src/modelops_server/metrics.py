"""Prometheus metrics of one server process (names and labels are a contract: see README).

Label sets are bounded: ``endpoint`` is the route template (``/v2/models/{name}/infer``, never
the raw path; ``unmatched`` for unknown paths), ``code`` an HTTP status, ``kind`` an error kind
from errors.py, ``species`` a class of the served model. Label children are created once and
cached, so the per-request cost is a dict lookup and an increment.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)

if TYPE_CHECKING:
    from .model import LoadedModel

# From 100 µs (a vectorised one-row predict) to 10 s.
LATENCY_BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
UNMATCHED = "unmatched"


class Metrics:
    """The server's metrics in their own registry (one per app, so tests can build many)."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self, enabled: bool = True) -> None:
        # *_created series double the exposition size and no dashboard here uses them.
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.enabled = enabled
        self.registry = CollectorRegistry(auto_describe=True)
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        r = self.registry
        self.predictions = Counter(
            "api_predictions_total",
            "Predictions served, by predicted species and model version.",
            ["species", "model_version"],
            registry=r,
        )
        self.latency = Histogram(
            "api_prediction_latency_seconds",
            "Time to validate and predict one prediction request (any prediction endpoint).",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.requests = Counter(
            "api_requests_total",
            "HTTP requests answered, by route template and status code.",
            ["endpoint", "code"],
            registry=r,
        )
        self.errors = Counter(
            "api_errors_total",
            "Error responses, by route template and error kind.",
            ["endpoint", "kind"],
            registry=r,
        )
        self.batch_rows = Histogram(
            "api_prediction_rows",
            "Rows per prediction request.",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096),
            registry=r,
        )
        self.model_info = Gauge(
            "model_info",
            "The served model (always 1); its identity is in the labels.",
            ["model", "version", "algorithm", "predictor"],
            registry=r,
        )
        self.model_accuracy = Gauge(
            "model_accuracy",
            "Held-out test accuracy of the served model, from its artifact.",
            ["model", "version"],
            registry=r,
        )
        self.model_ready = Gauge(
            "model_ready",
            "1 once the model is loaded and warmed (the /readyz state), else 0.",
            ["model", "version"],
            registry=r,
        )
        self.model_load_seconds = Gauge(
            "model_load_seconds",
            "Seconds spent verifying and loading the artifact.",
            ["model", "version"],
            registry=r,
        )
        self._species: list[Any] = []
        self._requests: dict[tuple[str, int], Any] = {}
        self._errors: dict[tuple[str, str], Any] = {}

    def set_model(self, model: LoadedModel) -> None:
        self.model_info.labels(
            model.name, model.version, model.algorithm, model.predictor.kind
        ).set(1)
        self.model_accuracy.labels(model.name, model.version).set(model.accuracy)
        self.model_load_seconds.labels(model.name, model.version).set(model.load_seconds)
        self._species = [self.predictions.labels(c, model.version) for c in model.classes]
        for child in self._species:
            child.inc(0)  # publish every species at 0 so rate() sees the first prediction

    def set_ready(self, model: LoadedModel, ready: bool) -> None:
        self.model_ready.labels(model.name, model.version).set(1 if ready else 0)

    def observe_predictions(self, class_indices: Sequence[int], seconds: float) -> None:
        if not self.enabled:
            return
        species = self._species
        rows = len(class_indices)
        if rows == 1:
            species[class_indices[0]].inc()
        else:
            for index, count in enumerate(np.bincount(class_indices, minlength=len(species))):
                if count:
                    species[index].inc(int(count))
        self.latency.observe(seconds)
        self.batch_rows.observe(rows)

    def count_request(self, endpoint: str, code: int) -> None:
        if not self.enabled:
            return
        child = self._requests.get((endpoint, code))
        if child is None:
            child = self._requests[(endpoint, code)] = self.requests.labels(endpoint, str(code))
        child.inc()

    def count_error(self, endpoint: str, kind: str) -> None:
        if not self.enabled:
            return
        child = self._errors.get((endpoint, kind))
        if child is None:
            child = self._errors[(endpoint, kind)] = self.errors.labels(endpoint, kind)
        child.inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
