"""A real Prometheus (the local-mode config) scraping a real model server, a real load
generator and the operator's real metrics module, then every PromQL expression we ship
(dashboard panels, template variables, recording and alert rules) evaluated through its API.
"""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from modelops_testenv.controlplane import free_ports

pytestmark = pytest.mark.integration

BIN = Path(sys.executable).parent
LOAD_SECONDS = 18  # the bounded load before the queries
NAMESPACE = "local"  # local/prometheus.yml's default for targets without one
NAME = "iris"
# Alerts whose condition must be false on this healthy run (an inverted condition fails here).
SILENT = {
    "ModelServerDown",
    "ModelServerErrorRatioHigh",
    "ModelServerLatencyP99High",
    "ModelServerNoTraffic",
    "ModelOnlineAccuracyDropping",
    "LoadGeneratorDown",
    "ModelopsReconcileErrors",
    "ModelopsOperatorDown",
}
# Alerts whose condition the operator exporter's resources make true.
TRUE_HERE = {"ModelDeploymentDegraded", "ModelDeploymentFailed", "ModelAccuracyBelowMinimum"}


def wait_for(what: str, check: Callable[[], Any], timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
            if last:
                return last
        except (OSError, ValueError) as exc:
            last = exc
        time.sleep(0.3)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {last!r}")


def http_get(url: str, timeout: float = 5) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return resp.read()  # type: ignore[no-any-return]


class Processes:
    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.procs: list[tuple[str, subprocess.Popen[bytes]]] = []

    def start(self, name: str, *argv: str) -> subprocess.Popen[bytes]:
        log = (self.logs / f"{name}.log").open("wb")
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.procs.append((name, proc))
        return proc

    def alive(self, name: str) -> bool:
        return any(n == name and p.poll() is None for n, p in self.procs)

    def log(self, name: str) -> str:
        return (self.logs / f"{name}.log").read_text(errors="replace")[-3000:]

    def stop(self) -> None:
        for _, proc in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for _, proc in self.procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)


def operator_exporter() -> tuple[ThreadingHTTPServer, int]:
    """The operator's metrics, from its real metrics module, for three ModelDeployments."""
    from prometheus_client import CollectorRegistry, generate_latest

    from modelops import metrics as m

    registry = CollectorRegistry()
    for collector in (
        m.RECONCILES, m.RECONCILE_SECONDS, m.API_REQUESTS, m.API_LATENCY,
        m.PHASE, m.ACCURACY, m.MIN_ACCURACY, m.READY_REPLICAS,
    ):  # fmt: skip
        registry.register(collector)
    for result in ("ok", "changed", "error"):
        m.RECONCILES.labels(result)  # published at 0, as rate() needs (and the operator should)
    m.observe_status(
        "ml", NAME, {"minAccuracy": 0.85},
        {"phase": "Serving", "servingVersion": "v1", "accuracy": 0.9667, "readyReplicas": 2},
    )  # fmt: skip
    m.observe_status(
        "ml", "strict", {"minAccuracy": 0.95},
        {"phase": "Degraded", "servingVersion": "v1", "accuracy": 0.9, "readyReplicas": 1},
    )  # fmt: skip
    m.observe_status("ml", "broken", {"minAccuracy": 0.85}, {"phase": "Failed"})
    stop = threading.Event()

    def activity() -> None:  # reconciles keep happening while Prometheus scrapes
        while not stop.wait(0.2):
            m.RECONCILES.labels("ok").inc()
            m.RECONCILE_SECONDS.observe(0.004)
            m.API_REQUESTS.labels("get", "200").inc()
            m.API_LATENCY.labels("get").observe(0.003)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = generate_latest(registry)
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                self.wfile.write(body)  # Prometheus may give up on a scrape at shutdown

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    threading.Thread(target=activity, daemon=True).start()
    server.stop_activity = stop  # type: ignore[attr-defined]
    return server, int(server.server_address[1])


class PromAPI:
    def __init__(self, base: str) -> None:
        self.base = base

    def get(self, path: str, **params: str) -> Any:
        url = f"{self.base}{path}?{urllib.parse.urlencode(params)}"
        try:
            body = http_get(url, timeout=15)
        except urllib.error.HTTPError as exc:  # 400 = the expression does not parse
            body = exc.read()
        return json.loads(body)

    def query(self, expr: str) -> list[dict[str, Any]]:
        answer = self.get("/api/v1/query", query=expr)
        assert answer["status"] == "success", f"{expr}\n→ {answer.get('error')}"
        return answer["data"]["result"]  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory, obs: Any) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("live")
    procs = Processes(tmp)
    exporter, exporter_port = operator_exporter()
    try:
        artifacts = tmp / "artifacts"
        subprocess.run(
            [str(BIN / "modelops-trainer"), "train", "--version", "v1", "--output-dir",
             str(artifacts)],
            check=True, capture_output=True, timeout=120,
        )  # fmt: skip
        server_port, loadgen_port, prom_port, shadow_port = free_ports(4)
        # A Shadow rollout's candidate beside the server, which copies every request to it:
        # the rollout panels (live accuracy, agreement) have data as in a real rollout.
        procs.start(
            "shadow", str(BIN / "modelops-server"), "--artifact-dir", str(artifacts / "v1"),
            "--host", "127.0.0.1", "--port", str(shadow_port),
        )  # fmt: skip
        shadow = f"http://127.0.0.1:{shadow_port}"
        wait_for("the shadow server to be ready", lambda: http_get(f"{shadow}/readyz"), 120)
        procs.start(
            "server", "env", f"MODELOPS_SERVER_SHADOW_URL={shadow}",
            str(BIN / "modelops-server"), "--artifact-dir", str(artifacts / "v1"),
            "--host", "127.0.0.1", "--port", str(server_port),
        )  # fmt: skip
        server = f"http://127.0.0.1:{server_port}"
        wait_for("the model server to be ready", lambda: http_get(f"{server}/readyz"), 120)

        file_sd = tmp / "file_sd"
        file_sd.mkdir()
        (file_sd / f"{NAME}.json").write_text(json.dumps([
            {"targets": [f"127.0.0.1:{server_port}"],
             "labels": {"component": "server", "modeldeployment": NAME, "version": "v1",
                        "pod": f"{NAME}-server-0"}},
            {"targets": [f"127.0.0.1:{shadow_port}"],
             "labels": {"component": "shadow", "modeldeployment": NAME, "version": "v2",
                        "pod": f"{NAME}-candidate-0"}},
            {"targets": [f"127.0.0.1:{loadgen_port}"],
             "labels": {"component": "loadgen", "modeldeployment": NAME,
                        "pod": f"{NAME}-loadgen"}},
            {"targets": [f"127.0.0.1:{exporter_port}"],
             "labels": {"component": "operator", "pod": "modelops-operator-0"}},
        ]))  # fmt: skip
        config = tmp / "prometheus.yml"
        config.write_text(obs.render_local_config(file_sd, interval="1s"))
        procs.start(
            "prometheus", obs.tool("prometheus"), f"--config.file={config}",
            f"--storage.tsdb.path={tmp / 'tsdb'}", f"--web.listen-address=127.0.0.1:{prom_port}",
        )  # fmt: skip
        api = PromAPI(f"http://127.0.0.1:{prom_port}")
        wait_for("Prometheus to be ready", lambda: http_get(f"{api.base}/-/ready"), 120)

        # Open-loop load with labelled rows (online accuracy); it outlives the queries and
        # ends by itself if the test dies first.
        procs.start(
            "loadgen", str(BIN / "modelops-loadgen"), "--target", server, "--rate", "20",
            "--payload", "iris", "--metrics-port", str(loadgen_port),
            "--metrics-host", "127.0.0.1", "--duration", str(LOAD_SECONDS + 60),
            "--seed", "7",
        )  # fmt: skip

        def all_up() -> bool:
            targets = api.get("/api/v1/targets")["data"]["activeTargets"]
            return len(targets) == 4 and all(t["health"] == "up" for t in targets)

        try:  # generous: the machine is shared with other builds
            wait_for("every target to be up", all_up, 90)
        except AssertionError as exc:
            targets = api.get("/api/v1/targets")["data"]["activeTargets"]
            health = [(t["labels"].get("component"), t["health"], t["lastError"]) for t in targets]
            raise AssertionError(
                f"{exc}\ntargets: {health}\nloadgen: {procs.log('loadgen')}"
            ) from None
        # A few bad requests, so the 4xx and error-kind series exist like in real life.
        for _ in range(3):
            req = urllib.request.Request(
                f"{server}/predict", data=b'{"sepal_length": "x"}', method="POST",
                headers={"Content-Type": "application/json"},
            )  # fmt: skip
            with pytest.raises(urllib.error.HTTPError):
                urllib.request.urlopen(req, timeout=5)
        time.sleep(LOAD_SECONDS)
        assert procs.alive("loadgen"), procs.log("loadgen")
        assert procs.alive("server"), procs.log("server")
        yield {"api": api, "procs": procs}
    finally:
        procs.stop()
        exporter.stop_activity.set()  # type: ignore[attr-defined]
        exporter.shutdown()


def variables(live: dict[str, Any]) -> dict[str, str]:
    return {
        "namespace": NAMESPACE, "modeldeployment": NAME,
        "__rate_interval": "10s", "__interval": "1s", "__range": "1m",
    }  # fmt: skip


def test_targets_carry_the_labels_the_rules_use(live: dict[str, Any]) -> None:
    api = live["api"]
    targets = {
        t["labels"]["component"]: t["labels"]
        for t in api.get("/api/v1/targets")["data"]["activeTargets"]
    }
    assert targets["server"]["namespace"] == NAMESPACE
    assert targets["server"]["modeldeployment"] == NAME
    assert targets["server"]["version"] == "v1"
    assert targets["loadgen"]["namespace"] == NAMESPACE
    # The operator's own series keep their namespace label (not exported_namespace).
    assert "namespace" not in targets["operator"]
    assert api.query('modelops_modeldeployment_phase{exported_namespace!=""}') == []
    assert api.query('modelops_modeldeployment_phase{exported_modeldeployment!=""}') == []
    phases = api.query("modelops_modeldeployment_phase == 1")
    current = {
        (s["metric"]["namespace"], s["metric"]["modeldeployment"], s["metric"]["phase"])
        for s in phases
    }
    assert current >= {
        ("ml", NAME, "Serving"),
        ("ml", "strict", "Degraded"),
        ("ml", "broken", "Failed"),
    }


def test_every_rule_is_evaluated_without_error(live: dict[str, Any], obs: Any) -> None:
    groups = live["api"].get("/api/v1/rules")["data"]["groups"]
    seen = {}
    for group in groups:
        for rule in group["rules"]:
            seen[rule["name"]] = rule
            assert rule["health"] == "ok", f"{rule['name']}: {rule.get('lastError')}"
    assert set(seen) == {r.get("record") or r.get("alert") for r in obs.load_rules()}


def test_every_recording_rule_returns_data(live: dict[str, Any], obs: Any) -> None:
    empty = []
    for rule in obs.load_rules():
        api = live["api"]
        if "record" in rule and (not api.query(rule["expr"]) or not api.query(rule["record"])):
            empty.append(rule["record"])
    assert empty == []


def test_every_alert_parses_and_its_inputs_exist(live: dict[str, Any], obs: Any) -> None:
    api = live["api"]
    problems = []
    for alert in obs.alerts():
        name = alert["alert"]
        result = api.query(alert["expr"])
        if name in SILENT and result:
            problems.append(f"{name} is true on a healthy run: {result}")
        if name in TRUE_HERE and not result:
            problems.append(f"{name} is false though its condition holds here")
        for selector in obs.selectors(alert["expr"]):
            if not api.query(f"count({selector})"):
                problems.append(f"{name}: no series for {selector}")
    assert problems == []
    assert {a["alert"] for a in obs.alerts()} - SILENT - TRUE_HERE == {"LoadGeneratorBehind"}


def test_every_dashboard_query_returns_data(live: dict[str, Any], obs: Any) -> None:
    api = live["api"]
    values = variables(live)
    empty = []
    queries = obs.dashboard_queries()
    assert len(queries) >= 30
    for dashboard, title, ref, expr in queries:
        result = api.query(obs.substitute(expr, {**values, "namespace": "ml"}
                                          if dashboard == "operator.json" else values))  # fmt: skip
        if not result:
            empty.append(f"{dashboard} / {title} / {ref}: {expr}")
    assert empty == []


def test_dashboard_variables_offer_the_running_deployment(live: dict[str, Any], obs: Any) -> None:
    api = live["api"]
    for path in obs.DASHBOARDS:
        for var in obs.load_dashboard(path)["templating"]["list"]:
            definition = obs.substitute(var["definition"], variables(live))
            metric, label = (
                definition.removeprefix("label_values(").removesuffix(")").rsplit(",", 1)
            )
            answer = api.get(f"/api/v1/label/{label.strip()}/values", **{"match[]": metric})
            assert answer["status"] == "success", definition
            expected = {"namespace": NAMESPACE, "modeldeployment": NAME}.get(var["name"])
            if path.name == "operator.json":
                expected = "ml"
            assert expected in answer["data"], f"{path.name} ${var['name']}: {answer['data']}"


def test_online_accuracy_and_rates_are_plausible(live: dict[str, Any]) -> None:
    api = live["api"]
    sel = f'namespace="{NAMESPACE}", modeldeployment="{NAME}"'
    (online,) = api.query(f"modeldeployment:online_accuracy:ratio_rate10m{{{sel}}}")
    assert 0.85 <= float(online["value"][1]) <= 1.0
    # A 10 s window: the 5-minute recording reads low while less than 5 minutes of data exist.
    (sent,) = api.query(
        f'sum(rate(loadgen_requests_total{{{sel}, outcome!~"skipped|no_target"}}[10s]))'
    )
    assert 10 <= float(sent["value"][1]) <= 30, "20 req/s configured"
    (ready,) = api.query(f"modeldeployment:model_ready:sum{{{sel}}}")
    assert float(ready["value"][1]) == 1
    (errors,) = api.query(f"modeldeployment:api_requests_errors:ratio_rate5m{{{sel}}}")
    assert float(errors["value"][1]) == 0
