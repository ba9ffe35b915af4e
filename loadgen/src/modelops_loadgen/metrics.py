"""Prometheus metrics on the generator's own port.

A custom collector reads the run statistics at scrape time, so the request hot path pays for
plain integer updates only, not for client-library locks.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from modelops_loadgen.stats import Histogram

if TYPE_CHECKING:
    from modelops_loadgen.runner import Generator


def _histogram(name: str, doc: str, h: Histogram) -> HistogramMetricFamily:
    buckets = [
        ("+Inf" if math.isinf(le) else repr(le), float(n)) for le, n in h.cumulative_buckets()
    ]
    return HistogramMetricFamily(name, doc, buckets=buckets, sum_value=h.sum)


class LoadgenCollector(Collector):
    def __init__(self, gen: Generator) -> None:
        self.gen = gen

    def collect(self) -> Iterable[Metric]:
        gen = self.gen
        st = gen.stats
        s = gen.settings
        info = GaugeMetricFamily(
            "loadgen_info",
            "Generator configuration (value 1).",
            labels=["mode", "arrival", "endpoint", "payload"],
        )
        info.add_metric([s.mode, s.arrival, s.endpoint, s.payload], 1.0)
        yield info
        req = CounterMetricFamily(
            "loadgen_requests",
            "Requests by outcome and HTTP status code ('' when there was no response).",
            labels=["outcome", "code"],
        )
        for (outcome, code), n in sorted(st.counts.copy().items()):
            req.add_metric([outcome, code], float(n))
        yield req
        yield CounterMetricFamily(
            "loadgen_requests_resent",
            "Requests sent once more on a new connection because the kept-alive one closed "
            "before any byte of the answer (counted once in loadgen_requests).",
            value=float(gen.resent),
        )
        yield _histogram(
            "loadgen_request_latency_seconds",
            "Latency from the intended send time to the full answer (open loop), for requests "
            "that got an answer or timed out.",
            st.latency,
        )
        yield _histogram(
            "loadgen_schedule_lag_seconds",
            "How late each request left compared with its intended send time.",
            st.lag,
        )
        yield GaugeMetricFamily(
            "loadgen_schedule_lag_p99_seconds",
            "Schedule-lag p99 over the last 10 s (NaN before the first request).",
            value=gen.live.lag_p99,
        )
        yield GaugeMetricFamily(
            "loadgen_target_rate",
            "Configured request rate (req/s); 0 in closed-loop mode.",
            value=s.rate if s.mode == "open" else 0.0,
        )
        yield GaugeMetricFamily(
            "loadgen_achieved_rate",
            "Requests sent per second over the last 10 s.",
            value=gen.live.achieved_rate,
        )
        yield GaugeMetricFamily(
            "loadgen_behind",
            "1 when the generator cannot keep its schedule (see README), else 0.",
            value=1.0 if gen.live.behind else 0.0,
        )
        yield GaugeMetricFamily(
            "loadgen_in_flight", "Requests sent and not yet answered.", value=float(st.in_flight)
        )
        yield GaugeMetricFamily(
            "loadgen_targets",
            "Number of targets requests are spread over.",
            value=float(len(gen.targets.endpoints)),
        )
        yield CounterMetricFamily(
            "loadgen_predictions_checked",
            "Predictions compared with a true label (iris payload).",
            value=float(st.checked),
        )
        yield CounterMetricFamily(
            "loadgen_predictions_correct",
            "Predictions equal to the true label (iris payload).",
            value=float(st.correct),
        )
        feedback = CounterMetricFamily(
            "loadgen_feedback",
            "True labels sent back to the server (POST /feedback) for checked predictions, by "
            "outcome: ok, refused (HTTP error), error (no answer).",
            labels=["outcome"],
        )
        for outcome, n in sorted(st.feedback.copy().items()):
            feedback.add_metric([outcome], float(n))
        yield feedback
        acc = st.online_accuracy
        yield GaugeMetricFamily(
            "loadgen_online_accuracy",
            "correct / checked since start; NaN until a prediction was checked.",
            value=math.nan if acc is None else acc,
        )


def serve_metrics(gen: Generator, host: str, port: int) -> CollectorRegistry:
    """Start the exposition HTTP server in a daemon thread (it ends with the process)."""
    registry = CollectorRegistry()
    registry.register(LoadgenCollector(gen))
    ProcessCollector(registry=registry)
    start_http_server(port, addr=host, registry=registry)
    return registry
