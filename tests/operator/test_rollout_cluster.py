"""A Canary rollout run by the operator process against the real API server: the cluster
driver queries Prometheus after each pause (its own timer wakes it, also in a restarted
process), pauses and says so while Prometheus cannot be reached, and rolls back at once on bad
live accuracy."""

from __future__ import annotations

import json
import signal
import threading
import urllib.parse
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from modelops_testenv.controlplane import free_ports

pytestmark = pytest.mark.integration

PAUSE = 10  # the CRD's least pauseSeconds


# What the fake answers, by the metric a query reads: (labels, value) samples.
Vectors = dict[str, list[tuple[dict[str, str], float]]]
# A candidate (v2) far worse than the stable version (v1) on live accuracy.
WORSE_LIVE: Vectors = {
    "api_feedback_total": [
        ({"model_version": "v2", "result": "correct"}, 40),
        ({"model_version": "v2", "result": "incorrect"}, 60),
        ({"model_version": "v1", "result": "correct"}, 97),
        ({"model_version": "v1", "result": "incorrect"}, 3),
    ]
}


class FakePrometheus:
    """/api/v1/query answering each query with the samples of the metric it reads (WORSE_LIVE
    unless told); it records every query it was asked."""

    def __init__(self, vectors: Vectors | None = None) -> None:
        self.queries: list[str] = []
        self.vectors = WORSE_LIVE if vectors is None else vectors
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)["query"][0]
                outer.queries.append(query)
                result = [
                    {"metric": labels, "value": [0, str(value)]}
                    for metric, samples in outer.vectors.items()
                    if metric in query
                    for labels, value in samples
                ]
                body = json.dumps(
                    {"status": "success", "data": {"resultType": "vector", "result": result}}
                ).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def prometheus() -> Iterator[FakePrometheus]:
    fake = FakePrometheus()
    yield fake
    fake.server.shutdown()


# The admin allows specs to name a Prometheus on loopback (where this test's live).
@pytest.mark.operator_env(MODELOPS_PROMETHEUS_ALLOWED_URLS="http://127.0.0.1:")
def test_canary_pauses_without_prometheus_then_rolls_back(
    cluster, operator, trained, wait, prometheus
):
    closed = f"http://127.0.0.1:{free_ports(1)[0]}"  # nothing listens there
    rollout = {"strategy": "Canary", "steps": [50], "pauseSeconds": PAUSE,
               "analysis": {"prometheusURL": closed, "minSamples": 50}}  # fmt: skip
    cluster.create_md("iris", {"modelVersion": "v1", "replicas": 2, "rollout": rollout})
    cluster.finish_trainer("iris", "v1", trained("v1"))
    cluster.serve("iris", "v1")

    cluster.patch_md("iris", {"modelVersion": "v2"})
    cluster.finish_trainer("iris", "v2", trained("v2"))

    def candidate_ready() -> dict[str, Any] | None:
        cluster.make_servers_ready("iris")  # the candidate's pods too: they are servers
        record = cluster.status("iris").get("rollout") or {}
        return record if record.get("stepStartedAt") else None

    record = wait(candidate_ready, 60, "the canary step to start")
    assert record["weight"] == 50 and record["progress"] == "1/1"
    assert cluster.deployment("iris-candidate")["spec"]["replicas"] == 1
    assert cluster.deployment("iris-server")["spec"]["replicas"] == 1  # v1 keeps one of two

    # A new operator process (the old one SIGKILLed mid-step) resumes at the same step: the
    # status is all a rollout remembers.
    operator.kill(signal.SIGKILL)
    operator.start()

    # The pause ends with no event to wake the operator: its own timer runs the analysis.
    status = wait(
        lambda: (s := cluster.status("iris")).get("rollout", {}).get("state") == "Paused" and s,
        PAUSE + 30, "the rollout to pause",
    )  # fmt: skip
    assert "cannot be reached" in status["rollout"]["message"]
    # The restarted process resumed the same step and its pause (it did not start them over).
    resumed = status["rollout"]
    assert (resumed["step"], resumed["stepStartedAt"]) == (1, record["stepStartedAt"])
    assert status["servingVersion"] == "v1" and status["phase"] == "RollingOut"
    paused = cluster.posted("iris", "RolloutPaused")
    assert paused and paused[0]["type"] == "Warning" and closed in paused[0]["message"]

    cluster.patch_md("iris", {"rollout": {**rollout, "analysis": {
        "prometheusURL": prometheus.url, "minSamples": 50}}})  # fmt: skip
    status = wait(
        lambda: (s := cluster.status("iris")).get("rollout", {}).get("state") == "RolledBack"
        and s,
        40, "the rollback",
    )  # fmt: skip
    analysis = status["rollout"]["lastAnalysis"]
    assert analysis["candidateLiveAccuracy"] == 0.4 and analysis["stableLiveAccuracy"] == 0.97
    assert status["phase"] == "Degraded" and status["servingVersion"] == "v1"
    assert any('namespace="' + cluster.ns + '",modeldeployment="iris"' in q
               for q in prometheus.queries)  # fmt: skip
    wait(lambda: cluster.deployment("iris-candidate") is None, 30, "the candidate deleted")
    assert cluster.deployment("iris-server")["spec"]["replicas"] == 2
    rolled = cluster.posted("iris", "RolledBack")
    assert rolled and rolled[0]["type"] == "Warning"
    assert "live accuracy of v2 0.4000" in rolled[0]["message"]


def as_good_live(candidate: str) -> Vectors:
    """``candidate`` as accurate live as the stable version v1."""
    return {
        "api_feedback_total": [
            ({"model_version": v, "result": r}, n)
            for v in ("v1", candidate)
            for r, n in (("correct", 97), ("incorrect", 3))
        ]
    }


def erring(candidate: str) -> Vectors:
    """``candidate`` answered 1 in 10 requests with a 500, as Prometheus recorded it."""
    return {
        **as_good_live(candidate),
        "api_requests_total": [
            ({"version": candidate, "code": "200"}, 270),
            ({"version": candidate, "code": "500"}, 30),
            ({"version": "v1", "code": "200"}, 300),
        ],
    }


def slow(candidate: str) -> Vectors:
    """``candidate``'s p99 latency 1.5 s (the server's histogram, by version)."""
    return {
        **as_good_live(candidate),
        "api_requests_total": [({"version": v, "code": "200"}, 300) for v in ("v1", candidate)],
        "api_prediction_latency_seconds_bucket": [
            ({"version": candidate}, 1.5),
            ({"version": "v1"}, 0.004),
        ],
    }


@pytest.mark.operator_env(MODELOPS_PROMETHEUS_ALLOWED_URLS="http://127.0.0.1:")
def test_candidates_that_err_or_are_slow_are_rolled_back(cluster, operator, trained, wait):
    """As accurate live as the stable version, but failing requests (v2) or slow (v3): each
    rolled back at its first analysis, on the error ratio or the p99 latency."""
    fake = FakePrometheus(erring("v2"))
    try:
        rollout = {"strategy": "Canary", "steps": [50], "pauseSeconds": PAUSE,
                   "analysis": {"prometheusURL": fake.url, "minSamples": 50}}  # fmt: skip
        cluster.create_md("iris", {"modelVersion": "v1", "replicas": 2, "rollout": rollout})
        cluster.finish_trainer("iris", "v1", trained("v1"))
        cluster.serve("iris", "v1")
        cases = (
            ("v2", erring, "ErrorRatioAboveThreshold", "answered 10.00% of 300 requests"),
            ("v3", slow, "LatencyAboveThreshold", "p99 latency 1500.0 ms is over 500.0 ms"),
        )
        for version, vectors, reason, said in cases:
            fake.vectors = vectors(version)
            cluster.patch_md("iris", {"modelVersion": version})
            cluster.finish_trainer("iris", version, trained(version))

            def rolled_back(version: str = version) -> dict[str, Any] | None:
                cluster.make_servers_ready("iris")
                status = cluster.status("iris")
                record = status.get("rollout", {})
                done = record.get("version") == version and record.get("state") == "RolledBack"
                return status if done else None

            status = wait(rolled_back, PAUSE + 60, f"{version} rolled back")
            (entry,) = [h for h in status["history"] if h["version"] == version]
            assert (entry["outcome"], entry["reason"]) == ("RolledBack", reason)
            assert said in entry["message"], entry["message"]
            assert status["servingVersion"] == "v1" and status["phase"] == "Degraded"
            assert status["rollout"]["lastAnalysis"]["candidateLiveAccuracy"] == 0.97
            wait(lambda: cluster.deployment("iris-candidate") is None, 30, "the candidate gone")
            assert cluster.deployment("iris-server")["spec"]["replicas"] == 2
    finally:
        fake.server.shutdown()
