"""`modelops local up` as a user runs it: a real subprocess with real servers, load generator
and Prometheus on loopback, driven by editing the ModelDeployment YAML."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import yaml

from modelops_testenv.controlplane import free_ports

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "config" / "samples" / "modelops_v1alpha1_modeldeployment.yaml"
MODELOPS = str(Path(sys.executable).parent / "modelops")
# Servers import scikit-learn (~2-3 s, more on a busy 2-core machine) before they are ready.
PHASE_TIMEOUT = 120.0


def write_spec(path: Path, **spec) -> None:
    doc = yaml.safe_load(SAMPLE.read_text())
    doc["spec"].update(spec)
    # A new mtime even within the same second: the supervisor polls mtime_ns.
    path.write_text(yaml.safe_dump(doc))


class LocalRun:
    """One `modelops local up` process; collects its output lines."""

    def __init__(self, spec_file: Path, state: Path, *extra: str, prometheus: bool = False):
        self.state = state
        self.prometheus_port = free_ports(1)[0]
        args = [MODELOPS, "local", "up", "-f", str(spec_file), "--state-dir", str(state)]
        args += ["--prometheus-port", str(self.prometheus_port)]
        if not prometheus:
            args.append("--no-prometheus")
        self.proc = subprocess.Popen(
            [*args, *extra],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=REPO,
            start_new_session=True,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def status(self) -> dict:
        path = self.state / "iris" / "status.json"
        try:
            return json.loads(path.read_text())["status"]
        except (OSError, json.JSONDecodeError, KeyError):
            return {}

    def wait_for(self, predicate, what: str, timeout: float = PHASE_TIMEOUT) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = self.status()
            if predicate(status):
                return status
            if self.proc.poll() is not None:
                break
            time.sleep(0.3)
        raise AssertionError(f"timed out waiting for {what}; status={self.status()}\n{self.output}")

    def scrape_targets(self) -> list[dict]:
        path = self.state / "iris" / "run" / "file_sd" / "iris.json"
        return json.loads(path.read_text()) if path.exists() else []

    def loadgen_metrics(self) -> dict[str, float]:
        """loadgen_requests_total by outcome, read from the generator's own /metrics."""
        ports = [
            g["targets"][0] for g in self.scrape_targets() if g["labels"]["component"] == "loadgen"
        ]
        assert ports, "no load generator is running"
        text = urllib.request.urlopen(f"http://{ports[0]}/metrics", timeout=5).read().decode()
        totals: dict[str, float] = {}
        for line in text.splitlines():
            if line.startswith("loadgen_requests_total{"):
                labels, value = line.rsplit(" ", 1)
                outcome = labels.split('outcome="', 1)[1].split('"', 1)[0]
                totals[outcome] = totals.get(outcome, 0.0) + float(value)
        return totals

    def stop(self, sig: int = signal.SIGINT) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            code = self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            code = self.proc.wait()
        self._reader.join(timeout=5)
        return code


def children_of(pid: int) -> list[int]:
    """Processes whose parent is `pid` or that share its session (the supervisor's children)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        ppid, session = int(fields[1]), int(fields[3])
        if ppid == pid or session == pid:
            found.append(int(entry.name))
    return found


def predict(url: str) -> dict:
    body = json.dumps(
        {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}
    ).encode()
    request = urllib.request.Request(
        f"{url}/predict", data=body, headers={"Content-Type": "application/json"}
    )
    return json.loads(urllib.request.urlopen(request, timeout=5).read())


def serving_url(run: LocalRun) -> str:
    targets = json.loads((run.state / "iris" / "run" / "targets.json").read_text())
    assert targets
    return targets[0]


@pytest.fixture
def spec_file(tmp_path):
    path = tmp_path / "iris.yaml"
    write_spec(path, loadRate=20)
    return path


def test_bounded_run_serves_scrapes_and_cleans_up(spec_file, tmp_path):
    if shutil.which("prometheus") is None:
        pytest.fail("prometheus is not installed; `make install` installs it")
    run = LocalRun(spec_file, tmp_path / "state", prometheus=True)
    try:
        status = run.wait_for(lambda s: s.get("phase") == "Serving", "Serving")
        assert status["servingVersion"] == "v1"
        assert status["ready"] == "2/2"
        assert status["accuracy"] >= 0.9
        answer = predict(serving_url(run))
        assert answer["species"] == "setosa"
        assert answer["model_version"] == "v1"
        # Let the generator and Prometheus (5 s scrape interval) collect some data.
        time.sleep(12)
        totals = run.loadgen_metrics()
        assert totals.get("ok", 0) > 100, totals
        assert sum(v for k, v in totals.items() if k != "ok") == 0, totals
        query = urllib.parse.quote("sum by (version) (rate(api_predictions_total[30s]))")
        api = f"http://127.0.0.1:{run.prometheus_port}/api/v1/query?query={query}"
        result = json.loads(urllib.request.urlopen(api, timeout=5).read())["data"]["result"]
        assert result and result[0]["metric"]["version"] == "v1", result
        assert float(result[0]["value"][1]) > 5
        pid = run.proc.pid
    finally:
        code = run.stop()
    assert code == 0, run.output
    assert "Training" in run.output and "Serving" in run.output
    assert "GateAccepted" in run.output
    time.sleep(0.5)
    assert children_of(pid) == [], "processes of the run are left"
    assert not (tmp_path / "state" / "iris" / "run" / "targets.json").exists()


def test_rejected_versions_never_serve_and_rollouts_lose_no_request(spec_file, tmp_path):
    run = LocalRun(spec_file, tmp_path / "state")
    try:
        run.wait_for(lambda s: s.get("phase") == "Serving", "v1 Serving")
        time.sleep(2)

        # Worse than the serving model → rejected, v1 keeps serving.
        write_spec(
            spec_file,
            loadRate=20,
            modelVersion="v2",
            training={"hyperparameters": {"n_neighbors": 30}},
        )
        status = run.wait_for(
            lambda s: s.get("candidateVersion") == "v2" and s.get("phase") == "Degraded",
            "v2 rejected",
        )
        assert status["servingVersion"] == "v1"
        assert status["gate"]["result"] == "Rejected"
        assert status["gate"]["reason"] == "RegressionDetected"
        degraded = next(c for c in status["conditions"] if c["type"] == "Degraded")
        assert degraded["status"] == "True" and "still serving v1" in degraded["message"]
        assert predict(serving_url(run))["model_version"] == "v1"

        # Below minAccuracy → rejected too.
        write_spec(
            spec_file,
            loadRate=20,
            modelVersion="v3",
            training={"algorithm": "decision_tree", "hyperparameters": {"max_depth": 1}},
        )
        status = run.wait_for(
            lambda s: s.get("candidateVersion") == "v3" and s.get("phase") == "Degraded",
            "v3 rejected",
        )
        assert status["gate"]["reason"] == "AccuracyBelowMinimum"
        assert "below minAccuracy 0.8500" in status["gate"]["message"]
        assert status["servingVersion"] == "v1"

        # A better model rolls forward, replica by replica.
        write_spec(
            spec_file,
            loadRate=20,
            modelVersion="v4",
            training={"hyperparameters": {"n_neighbors": 7}},
        )
        status = run.wait_for(
            lambda s: s.get("servingVersion") == "v4" and s.get("phase") == "Serving",
            "v4 Serving",
        )
        assert status["accuracy"] == 1.0
        assert [h["version"] for h in status["history"]][:4] == ["v4", "v3", "v2", "v1"]
        assert predict(serving_url(run))["model_version"] == "v4"
        time.sleep(1.5)
        totals = run.loadgen_metrics()
        assert totals.get("ok", 0) > 200, totals
        assert sum(v for k, v in totals.items() if k != "ok") == 0, totals

        # Scale down and stop the load: applied while running, like the operator does.
        write_spec(
            spec_file,
            loadRate=0,
            replicas=1,
            modelVersion="v4",
            training={"hyperparameters": {"n_neighbors": 7}},
        )
        status = run.wait_for(
            lambda s: s.get("ready") == "1/1" and s.get("replicas") == 1, "scaled to 1"
        )
        assert status["servingVersion"] == "v4" and status["phase"] == "Serving"
        # The load generator stops; the drained replica leaves once its drain time is over.
        deadline = time.monotonic() + 30
        components = None
        while time.monotonic() < deadline and components != ["server"]:
            time.sleep(0.3)
            components = [g["labels"]["component"] for g in run.scrape_targets()]
        assert components == ["server"], components
    finally:
        assert run.stop(signal.SIGTERM) == 0, run.output
    assert "GateRejected" in run.output and "RolledOut" in run.output


def test_restart_gates_against_the_previous_runs_model(spec_file, tmp_path):
    state = tmp_path / "state"
    write_spec(spec_file, loadRate=0, replicas=1)
    first = LocalRun(spec_file, state)
    try:
        first.wait_for(lambda s: s.get("phase") == "Serving", "v1 Serving")
    finally:
        assert first.stop() == 0
    write_spec(
        spec_file,
        loadRate=0,
        replicas=1,
        modelVersion="v2",
        training={"hyperparameters": {"n_neighbors": 30}},
    )
    second = LocalRun(spec_file, state, "--json")
    try:
        status = second.wait_for(
            lambda s: (
                s.get("candidateVersion") == "v2"
                and s.get("gate", {}).get("result") == "Rejected"
                and s.get("ready") == "1/1"
            ),
            "v2 rejected against v1 of the first run",
        )
        assert status["gate"]["reason"] == "RegressionDetected"
        assert "serving model's 0.9667" in status["gate"]["message"]
        assert status["servingVersion"] == "v1"
        assert predict(serving_url(second))["model_version"] == "v1"
    finally:
        assert second.stop() == 0
    # --json: the final object, as `kubectl get md -o json` would show it.
    printed = json.loads(second.output[second.output.index("\n{") :])
    assert printed["kind"] == "ModelDeployment"
    assert printed["status"]["servingVersion"] == "v1"
    assert printed["status"]["gate"]["result"] == "Rejected"
    # The status command reads the same state.
    shown = subprocess.run(
        [MODELOPS, "local", "status", "--state-dir", str(state), "--json"],
        capture_output=True,
        text=True,
        check=True,
    )
    saved = json.loads(shown.stdout)["items"][0]
    assert saved["status"]["servingVersion"] == "v1"
    assert saved["spec"]["modelVersion"] == "v2"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("spec: [unclosed\n", "is not valid YAML at line 2, column 1"),
        ("apiVersion: v1\nkind: ConfigMap\n", "holds no ModelDeployment"),
        (
            "apiVersion: modelops.dev/v1alpha1\nkind: ModelDeployment\nmetadata: {name: iris}\n"
            "spec: {modelVersion: v1, minAccuracy: 1.5}\n",
            "spec.minAccuracy: Invalid value: 1.5: spec.minAccuracy in body should be less "
            "than or equal to 1",
        ),
        (
            "apiVersion: modelops.dev/v1alpha1\nkind: ModelDeployment\nmetadata: {name: iris}\n"
            "spec: {modelVersion: v1, replica: 2}\n",
            'unknown field "spec.replica"',
        ),
        (
            "apiVersion: modelops.dev/v1alpha1\nkind: ModelDeployment\nmetadata: {name: iris}\n"
            "spec: {replicas: 2}\n",
            "spec.modelVersion: Required value",
        ),
    ],
)
def test_bad_input_gives_one_clear_line(tmp_path, content, message):
    path = tmp_path / "md.yaml"
    path.write_text(content)
    proc = subprocess.run(
        [
            MODELOPS,
            "local",
            "up",
            "-f",
            str(path),
            "--state-dir",
            str(tmp_path / "s"),
            "--no-prometheus",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1
    assert message in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "Traceback" not in proc.stderr


def test_missing_file_and_busy_port(tmp_path, spec_file):
    proc = subprocess.run(
        [MODELOPS, "local", "up", "-f", str(tmp_path / "nope.yaml"), "--no-prometheus"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1 and "does not exist" in proc.stderr
    if shutil.which("prometheus") is None:
        return
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = subprocess.run(
            [
                MODELOPS,
                "local",
                "up",
                "-f",
                str(spec_file),
                "--state-dir",
                str(tmp_path / "s"),
                "--prometheus-port",
                str(port),
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert proc.returncode == 1
    assert f"port {port} for Prometheus is already in use" in proc.stderr
    assert "--prometheus-port" in proc.stderr


def _time_wait_port() -> int:
    """A loopback port whose only socket is in TIME-WAIT: the server side closed first.

    The listener sets SO_REUSEADDR as Prometheus (Go's net.Listen) does; its TIME-WAIT socket
    inherits the flag, which is what lets the next listener bind.
    """
    with socket.socket() as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        client = socket.create_connection(("127.0.0.1", port))
        conn, _ = listener.accept()
        conn.close()  # the side that closes first keeps the TIME-WAIT, on `port`
        client.recv(1)
        client.close()
    return port


def test_port_check_ignores_time_wait_but_not_a_listener():
    from modelops.local.processes import PortBusyError, check_port_free

    port = _time_wait_port()
    with socket.socket() as plain, pytest.raises(OSError):
        plain.bind(("127.0.0.1", port))  # the old check's bind: fails on TIME-WAIT
    check_port_free(port, "Prometheus", "--prometheus-port")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        with pytest.raises(PortBusyError, match=f"port {taken} for Prometheus is already in use"):
            check_port_free(taken, "Prometheus", "--prometheus-port")


def _bounded_run(
    spec_file: Path, state: Path, port: int, duration: int
) -> subprocess.CompletedProcess:
    args = [MODELOPS, "local", "up", "-f", str(spec_file), "--state-dir", str(state)]
    args += ["--prometheus-port", str(port), "--duration", str(duration)]
    return subprocess.run(args, capture_output=True, text=True, timeout=180, cwd=REPO)


def test_two_runs_back_to_back_on_one_prometheus_port(spec_file, tmp_path):
    if shutil.which("prometheus") is None:
        pytest.fail("prometheus is not installed; `make install` installs it")
    port = free_ports(1)[0]
    answers: list[str] = []
    stop = threading.Event()

    def query_while_running() -> None:  # client connections leave TIME-WAIT sockets on `port`
        query = urllib.parse.quote("up")
        while not stop.is_set():
            try:
                url = f"http://127.0.0.1:{port}/api/v1/query?query={query}"
                answers.append(json.loads(urllib.request.urlopen(url, timeout=2).read())["status"])
            except OSError:
                pass
            time.sleep(0.5)

    querier = threading.Thread(target=query_while_running, daemon=True)
    querier.start()
    try:
        first = _bounded_run(spec_file, tmp_path / "state", port, 20)
    finally:
        stop.set()
        querier.join(timeout=5)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "success" in answers, "Prometheus of the first run answered no query"
    second = _bounded_run(spec_file, tmp_path / "state", port, 8)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "already in use" not in second.stderr
    assert f"prometheus: http://127.0.0.1:{port}" in second.stdout


def test_busy_port_error_comes_alone_before_anything_starts(tmp_path, spec_file):
    if shutil.which("prometheus") is None:
        pytest.fail("prometheus is not installed; `make install` installs it")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = _bounded_run(spec_file, tmp_path / "s", port, 10)
    assert proc.returncode == 1
    assert proc.stdout == "", proc.stdout
    assert proc.stderr.strip().splitlines() == [
        f"modelops local: error: port {port} for Prometheus is already in use on 127.0.0.1; "
        "stop whatever listens there or pick another port with --prometheus-port"
    ]
