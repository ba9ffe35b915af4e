"""Prometheus metrics of one server process (names and labels are a contract: see README).

Label sets are bounded: ``endpoint`` is the route template (``/v2/models/{name}/infer``, never
the raw path; ``unmatched`` for unknown paths), ``code`` an HTTP status, ``kind`` an error kind
from errors.py, ``species`` a class of the served model.

The per-request series are plain integers in :class:`_RequestSeries`, turned into metric
families only when Prometheus scrapes: prometheus_client's own Counter/Histogram take a lock
per update, which cost ~10 µs per request (over 10 % of a one-row prediction). The event loop
is the only writer and the scrape runs on it too, so no lock is needed.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING

import numpy as np
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Gauge,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

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
FEEDBACK_CORRECT = "correct"
FEEDBACK_INCORRECT = "incorrect"


class _RequestSeries(Collector):
    """api_predictions_total, api_prediction_latency_seconds, api_requests_total,
    api_errors_total, api_feedback_total, api_feedback_pending, api_shadow_total,
    api_shadow_feedback_total: counted in plain Python, exposed at scrape time."""

    def __init__(self) -> None:
        self.species: list[str] = []
        self.version = ""
        self.predictions: list[int] = []
        self.latency_buckets = [0] * (len(LATENCY_BUCKETS) + 1)  # last: above every bound
        self.latency_sum = 0.0
        self.requests: dict[tuple[str, int], int] = {}
        self.errors: dict[tuple[str, str], int] = {}
        self.feedback = {FEEDBACK_CORRECT: 0, FEEDBACK_INCORRECT: 0}  # rows, by result
        self.pending: Callable[[], int] = lambda: 0
        self.shadow: dict[tuple[str, str], int] = {}  # (shadow_version, result) → requests
        self.shadow_feedback: dict[tuple[str, str], int] = {}  # (shadow_version, result) → rows

    def collect(self) -> Iterator[Metric]:
        predictions = CounterMetricFamily(
            "api_predictions",
            "Predictions served (rows), by predicted species and model version.",
            labels=["species", "model_version"],
        )
        for species, count in zip(self.species, self.predictions, strict=True):
            predictions.add_metric([species, self.version], count)
        yield predictions

        cumulative, buckets = 0, []
        for bound, count in zip(LATENCY_BUCKETS, self.latency_buckets, strict=False):
            cumulative += count
            buckets.append((repr(bound), cumulative))
        buckets.append(("+Inf", cumulative + self.latency_buckets[-1]))
        yield HistogramMetricFamily(
            "api_prediction_latency_seconds",
            "Time to validate and predict one prediction request (any prediction endpoint).",
            buckets=buckets,
            sum_value=self.latency_sum,
        )

        requests = CounterMetricFamily(
            "api_requests",
            "HTTP requests answered, by route template and status code.",
            labels=["endpoint", "code"],
        )
        for (endpoint, code), count in sorted(self.requests.items()):
            requests.add_metric([endpoint, str(code)], count)
        yield requests

        errors = CounterMetricFamily(
            "api_errors",
            "Error responses, by route template and error kind.",
            labels=["endpoint", "kind"],
        )
        for (endpoint, kind), count in sorted(self.errors.items()):
            errors.add_metric([endpoint, kind], count)
        yield errors
        yield from self._live_accuracy()

    def _live_accuracy(self) -> Iterator[Metric]:
        feedback = CounterMetricFamily(
            "api_feedback",
            "Rows whose true species came back as feedback, by model version and whether the "
            "prediction was correct (live accuracy = correct / all).",
            labels=["model_version", "result"],
        )
        if self.version:
            for result, count in self.feedback.items():
                feedback.add_metric([self.version, result], count)
        yield feedback
        yield GaugeMetricFamily(
            "api_feedback_pending",
            "Prediction ids kept for feedback (at most FEEDBACK_CAPACITY).",
            value=self.pending(),
        )
        yield self._by_shadow(
            "api_shadow",
            "Prediction requests copied to the shadow (candidate) server, by the version it "
            "reported and result: agree/disagree with this server's answer, failed, dropped.",
            self.shadow,
        )
        yield self._by_shadow(
            "api_shadow_feedback",
            "Rows of requests copied to the shadow whose true species came back as feedback to "
            "this server, by the shadow's version and whether the shadow's answer was correct "
            "(the shadow's live accuracy, whichever of its replicas answered the copy).",
            self.shadow_feedback,
        )

    def _by_shadow(
        self, name: str, documentation: str, counts: dict[tuple[str, str], int]
    ) -> CounterMetricFamily:
        family = CounterMetricFamily(
            name, documentation, labels=["model_version", "shadow_version", "result"]
        )
        for (shadow_version, result), count in sorted(counts.items()):
            family.add_metric([self.version, shadow_version, result], count)
        return family


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
        self._series = _RequestSeries()
        self.registry.register(self._series)
        r = self.registry
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

    def set_model(self, model: LoadedModel) -> None:
        self.model_info.labels(
            model.name, model.version, model.algorithm, model.predictor.kind
        ).set(1)
        self.model_accuracy.labels(model.name, model.version).set(model.accuracy)
        self.model_load_seconds.labels(model.name, model.version).set(model.load_seconds)
        # Every species is published from 0 so rate() sees the first prediction.
        self._series.species = list(model.classes)
        self._series.version = model.version
        self._series.predictions = [0] * len(model.classes)

    def set_ready(self, model: LoadedModel, ready: bool) -> None:
        self.model_ready.labels(model.name, model.version).set(1 if ready else 0)

    def observe_predictions(self, class_indices: Sequence[int], seconds: float) -> None:
        if not self.enabled:
            return
        series = self._series
        if len(class_indices) == 1:
            series.predictions[class_indices[0]] += 1
        else:
            counts = np.bincount(class_indices, minlength=len(series.predictions))
            for index, count in enumerate(counts.tolist()):
                series.predictions[index] += count
        series.latency_buckets[bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1
        series.latency_sum += seconds

    def count_request(self, endpoint: str, code: int) -> None:
        if not self.enabled:
            return
        key = (endpoint, code)
        requests = self._series.requests
        requests[key] = requests.get(key, 0) + 1

    def count_error(self, endpoint: str, kind: str) -> None:
        if not self.enabled:
            return
        key = (endpoint, kind)
        errors = self._series.errors
        errors[key] = errors.get(key, 0) + 1

    def observe_feedback(self, rows: int, correct: int) -> None:
        feedback = self._series.feedback
        feedback[FEEDBACK_CORRECT] += correct
        feedback[FEEDBACK_INCORRECT] += rows - correct

    def observe_shadow_feedback(self, shadow_version: str, rows: int, correct: int) -> None:
        judged = self._series.shadow_feedback
        for result, count in ((FEEDBACK_CORRECT, correct), (FEEDBACK_INCORRECT, rows - correct)):
            key = (shadow_version, result)
            judged[key] = judged.get(key, 0) + count

    def count_pending(self, pending: Callable[[], int]) -> None:
        """Where api_feedback_pending is read at scrape time."""
        self._series.pending = pending

    def count_shadow(self, shadow_version: str, result: str) -> None:
        key = (shadow_version, result)
        shadow = self._series.shadow
        shadow[key] = shadow.get(key, 0) + 1

    def render(self) -> bytes:
        return generate_latest(self.registry)
