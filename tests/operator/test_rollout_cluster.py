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


class FakePrometheus:
    """/api/v1/query answering the feedback query with a candidate (v2) far worse than the
    stable version (v1); it records every query it was asked."""

    def __init__(self) -> None:
        self.queries: list[str] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)["query"][0]
                outer.queries.append(query)
                result: list[dict[str, Any]] = []
                if "api_feedback_total" in query:
                    for version, result_, value in (
                        ("v2", "correct", 40), ("v2", "incorrect", 60),
                        ("v1", "correct", 97), ("v1", "incorrect", 3),
                    ):  # fmt: skip
                        metric = {"model_version": version, "result": result_}
                        result.append({"metric": metric, "value": [0, str(value)]})
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
    paused = [e for e in cluster.events("iris") if e["reason"] == "RolloutPaused"]
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
    rolled = [e for e in cluster.events("iris") if e["reason"] == "RolledBack"]
    assert rolled and rolled[0]["type"] == "Warning"
    assert "live accuracy of v2 0.4000" in rolled[0]["message"]
