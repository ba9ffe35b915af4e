"""Fixtures for the operator's integration tests: CRDs, the operator's own RBAC identity, a
running operator process, and helpers that play the kubelet (pod status) the way a node would.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from modelops_testenv.controlplane import free_ports

ROOT = Path(__file__).resolve().parents[2]
SA_USER = "system:serviceaccount:modelops-system:modelops-operator"
SA_GROUPS = ["system:serviceaccounts", "system:serviceaccounts:modelops-system"]
TRAINER = str(Path(sys.executable).with_name("modelops-trainer"))


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def stamp() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Cluster:
    """Admin access for the test's own assertions and for playing the kubelet."""

    def __init__(self, plane: Any, namespace: str) -> None:
        self.plane = plane
        self.ns = namespace

    def kubectl(self, *args: str, input: str | None = None, check: bool = True) -> str:
        return str(self.plane.kubectl(*args, input=input, check=check).stdout)

    def get(self, path: str) -> dict[str, Any] | None:
        status, body = self.plane.request("GET", path)
        return body if status == 200 else None

    def md(self, name: str) -> dict[str, Any]:
        body = self.get(f"/apis/modelops.dev/v1alpha1/namespaces/{self.ns}/modeldeployments/{name}")
        assert body is not None, f"ModelDeployment {name} is gone"
        return body

    def status(self, name: str) -> dict[str, Any]:
        return dict(self.md(name).get("status") or {})

    def items(self, path: str, selector: str = "") -> list[dict[str, Any]]:
        query = f"?labelSelector={selector}" if selector else ""
        body = self.get(f"{path}{query}") or {}
        return list(body.get("items") or [])

    def jobs(self, name: str) -> list[dict[str, Any]]:
        return self.items(f"/apis/batch/v1/namespaces/{self.ns}/jobs", f"modelops.dev/name={name}")

    def job(self, name: str, version: str) -> dict[str, Any] | None:
        return self.get(f"/apis/batch/v1/namespaces/{self.ns}/jobs/{name}-train-{version}")

    def deployment(self, name: str) -> dict[str, Any] | None:
        return self.get(f"/apis/apps/v1/namespaces/{self.ns}/deployments/{name}")

    def apply(self, manifest: dict[str, Any]) -> str:
        return self.kubectl("apply", "-n", self.ns, "-f", "-", input=json.dumps(manifest))

    def create_md(self, name: str, spec: dict[str, Any]) -> None:
        self.apply(
            {
                "apiVersion": "modelops.dev/v1alpha1",
                "kind": "ModelDeployment",
                "metadata": {"name": name, "namespace": self.ns},
                "spec": spec,
            }
        )

    def patch_md(self, name: str, spec: dict[str, Any]) -> None:
        self.kubectl(
            "patch", "-n", self.ns, "md", name, "--type=merge", "-p", json.dumps({"spec": spec})
        )

    def pods(self, selector: str) -> list[dict[str, Any]]:
        return self.items(f"/api/v1/namespaces/{self.ns}/pods", selector)

    def patch_pod_status(self, pod: str, status: dict[str, Any]) -> None:
        self.kubectl(
            "patch",
            "-n",
            self.ns,
            "pod",
            pod,
            "--subresource=status",
            "--type=merge",
            "-p",
            json.dumps({"status": status}),
        )

    # Playing the kubelet ---------------------------------------------------------------------

    def finish_trainer(self, name: str, version: str, message: str, exit_code: int = 0) -> None:
        """Terminate the Job's trainer pod with ``message`` as its termination message."""
        job = wait_for(lambda: self.job(name, version), 30, f"Job {name}-train-{version}")
        uid = job["metadata"]["uid"]
        pods = wait_for(
            lambda: self.pods(f"batch.kubernetes.io/controller-uid={uid}"), 30, "trainer pod"
        )
        now = stamp()
        self.patch_pod_status(
            pods[0]["metadata"]["name"],
            {
                "phase": "Succeeded" if exit_code == 0 else "Failed",
                "startTime": now,
                "containerStatuses": [
                    {
                        "name": "trainer",
                        "image": pods[0]["spec"]["containers"][0]["image"],
                        "imageID": "",
                        "ready": False,
                        "restartCount": 0,
                        "started": False,
                        "state": {
                            "terminated": {
                                "exitCode": exit_code,
                                "reason": "Completed" if exit_code == 0 else "Error",
                                "message": message,
                                "startedAt": now,
                                "finishedAt": now,
                            }
                        },
                    }
                ],
            },
        )

    def make_servers_ready(self, name: str) -> None:
        """Mark every server pod Running and Ready (as the kubelet would once /readyz is 200)."""
        for pod in self.pods(f"modelops.dev/name={name},app.kubernetes.io/component=server"):
            conditions = {c["type"]: c["status"] for c in pod["status"].get("conditions") or []}
            if pod["metadata"].get("deletionTimestamp") or conditions.get("Ready") == "True":
                continue
            now = stamp()
            self.patch_pod_status(
                pod["metadata"]["name"],
                {
                    "phase": "Running",
                    "startTime": now,
                    "podIP": "10.0.0.10",
                    "conditions": [
                        {"type": t, "status": "True", "lastTransitionTime": now}
                        for t in ("PodScheduled", "Initialized", "ContainersReady", "Ready")
                    ],
                    "containerStatuses": [
                        {
                            "name": "server",
                            "image": pod["spec"]["containers"][0]["image"],
                            "imageID": "",
                            "ready": True,
                            "started": True,
                            "restartCount": 0,
                            "state": {"running": {"startedAt": now}},
                        }
                    ],
                },
            )

    def serve(self, name: str, version: str, timeout: float = 60) -> dict[str, Any]:
        """Keep server pods ready until the CR reports ``version`` serving."""

        def served() -> dict[str, Any] | None:
            self.make_servers_ready(name)
            status = self.status(name)
            return status if status.get("servingVersion") == version else None

        return dict(wait_for(served, timeout, f"{name} serving {version}", interval=0.5))

    def posted(self, name: str, reason: str, timeout: float = 15) -> list[dict[str, Any]]:
        """The events of ``reason`` once there is one: the operator posts an event after the
        status write that tells of it, so a test that waited for the status can be first."""
        found = wait_for(
            lambda: [e for e in self.events(name) if e["reason"] == reason],
            timeout,
            f"event {reason} of {name}",
        )
        return list(found)

    def events(self, name: str) -> list[dict[str, Any]]:
        return [
            e
            for e in self.items(f"/api/v1/namespaces/{self.ns}/events")
            if e["involvedObject"].get("name") == name
            and e["involvedObject"].get("kind") == "ModelDeployment"
        ]


_trainer_cache: dict[tuple[str, ...], str] = {}


def trainer_output(tmp: Path, version: str, *args: str) -> str:
    """The real termination message of `modelops-trainer train` (cached per arguments)."""
    key = (version, *args)
    if key not in _trainer_cache:
        out = tmp / f"train-{len(_trainer_cache)}"
        result = out / "result.json"
        proc = subprocess.run(
            [
                TRAINER,
                "train",
                "--version",
                version,
                "--output-dir",
                str(out / "models"),
                "--result-file",
                str(result),
                "--emit-artifact",
                *args,
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert result.exists(), proc.stderr
        _trainer_cache[key] = result.read_text()
    return _trainer_cache[key]


@pytest.fixture(scope="session")
def trainer_tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("trainer")


@pytest.fixture(scope="session")
def crds(control_plane: Any) -> None:
    control_plane.kubectl("apply", "-k", str(ROOT / "config" / "crd"))
    # Polled: `kubectl wait --for=condition` fails at once on a CRD with no conditions yet.
    jsonpath = 'jsonpath={.status.conditions[?(@.type=="Established")].status}'
    wait_for(
        lambda: (
            # check=False: the jsonpath filter itself fails while .status.conditions is null.
            control_plane.kubectl(
                "get", "crd", "modeldeployments.modelops.dev", "-o", jsonpath, check=False
            ).stdout
            == "True"
        ),
        60,
        "the ModelDeployment CRD established",
    )


@pytest.fixture(scope="session")
def operator_kubeconfig(control_plane: Any, crds: None) -> Path:
    """A kubeconfig for the operator's own ServiceAccount identity, bound to the shipped role."""
    control_plane.kubectl("create", "namespace", "modelops-system", check=False)
    control_plane.kubectl("apply", "-k", str(ROOT / "config" / "rbac"))
    return Path(control_plane.user_kubeconfig(SA_USER, SA_GROUPS))


class OperatorProcess:
    def __init__(self, kubeconfig: Path, namespace: str, log_path: Path, **env: str) -> None:
        self.kubeconfig = kubeconfig
        self.namespace = namespace
        self.log_path = log_path
        self.metrics_port, self.health_port = free_ports(2)
        self.env = {
            **os.environ,
            "MODELOPS_WATCH_NAMESPACES": namespace,
            "MODELOPS_STANDALONE": "true",
            "MODELOPS_METRICS_PORT": str(self.metrics_port),
            "MODELOPS_HEALTH_PORT": str(self.health_port),
            "MODELOPS_TRAINER_IMAGE": "modelops-trainer:test",
            "MODELOPS_RESYNC_SECONDS": "30",
            **env,
        }
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "modelops.operator", "--kubeconfig", str(self.kubeconfig)],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()

    def wait_ready(self, timeout: float = 90) -> None:
        """Until /healthz answers: the process is up (its imports take seconds on a busy
        machine), so that a test's own timeouts count from a running operator."""
        import urllib.request

        def answers() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"the operator exited with {self.proc.returncode}:\n"
                                     f"{self.logs()[-3000:]}")  # fmt: skip
            try:
                url = f"http://127.0.0.1:{self.health_port}/healthz"
                with urllib.request.urlopen(url, timeout=2) as r:
                    return bool(r.status == 200)
            except OSError:
                return False

        wait_for(answers, timeout, "the operator's /healthz")

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)

    def metrics(self) -> str:
        import urllib.request

        with urllib.request.urlopen(
            f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5
        ) as r:
            return str(r.read().decode())

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")


@pytest.fixture
def cluster(control_plane: Any, namespace: str, crds: None) -> Cluster:
    return Cluster(control_plane, namespace)


@pytest.fixture
def operator(
    operator_kubeconfig: Path, namespace: str, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[OperatorProcess]:
    """The operator as a process with its own identity; ``@pytest.mark.operator_env(K=V)``
    adds settings."""
    marker = request.node.get_closest_marker("operator_env")
    env = dict(marker.kwargs) if marker else {}
    proc = OperatorProcess(operator_kubeconfig, namespace, tmp_path / "operator.log", **env)
    proc.start()
    try:
        proc.wait_ready()
        yield proc
    finally:
        proc.kill(signal.SIGTERM)
    if request.node.rep_call.failed if hasattr(request.node, "rep_call") else False:
        sys.stderr.write(proc.logs()[-5000:])


@pytest.fixture
def operators(
    operator_kubeconfig: Path, namespace: str, tmp_path: Path
) -> Iterator[Callable[..., OperatorProcess]]:
    """``operators(label, **env)``: start another operator process (e.g. replicas electing a
    leader); all are stopped at the end of the test."""
    started: list[OperatorProcess] = []

    def start(label: str, **env: str) -> OperatorProcess:
        log = tmp_path / f"operator-{label}.log"
        proc = OperatorProcess(operator_kubeconfig, namespace, log, **env)
        proc.start()
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.kill(signal.SIGTERM)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "operator_env(**env): extra settings for `operator`")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: Any, call: Any) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)


@pytest.fixture
def wait() -> Callable[..., Any]:
    """``wait(predicate, timeout, what)``: poll until truthy (tests import no conftest)."""
    return wait_for


@pytest.fixture
def trained(trainer_tmp: Path) -> Callable[..., str]:
    """``trained(version, *trainer_args)``: the real trainer's termination message."""

    def run(version: str, *args: str) -> str:
        return trainer_output(trainer_tmp, version, *args)

    return run
