"""Shared fixtures of the model-server tests: trained artifacts, apps, clients, processes."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from modelops_server.app import create_app
from modelops_server.model import LoadedModel, load_model
from modelops_server.settings import ServerSettings
from modelops_trainer.train import TrainConfig, TrainResult, train

ROOT = Path(__file__).resolve().parents[2]
ALGORITHMS = ("knn", "logistic_regression", "random_forest", "decision_tree")
SEED_REQUEST = {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}
FEATURES = ("sepal_length", "sepal_width", "petal_length", "petal_width")


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="session")
def trained(models_dir: Path) -> dict[str, TrainResult]:
    """One trained model per supported algorithm (versions named after them)."""
    out = {}
    for algorithm in ALGORITHMS:
        version = algorithm.replace("_", "-")
        out[algorithm] = train(
            TrainConfig(version=version, output_dir=models_dir, algorithm=algorithm)
        )
    return out


@pytest.fixture(scope="session")
def artifacts(trained: dict[str, TrainResult]) -> dict[str, Path]:
    """The artifact directory of each trained model."""
    return {algorithm: result.artifact for algorithm, result in trained.items()}


@pytest.fixture(scope="session")
def pipelines(trained: dict[str, TrainResult]) -> dict[str, Any]:
    """The fitted scikit-learn pipeline each artifact's parameters were taken from."""
    return {algorithm: result.pipeline for algorithm, result in trained.items()}


@pytest.fixture(scope="session")
def knn_pipeline(pipelines: dict[str, Any]) -> Any:
    return pipelines["knn"]


@pytest.fixture(scope="session")
def knn_artifact(artifacts: dict[str, Path]) -> Path:
    return artifacts["knn"]


@pytest.fixture(scope="session")
def knn_model(knn_artifact: Path) -> LoadedModel:
    model = load_model(knn_artifact)
    model.warm_up()
    return model


def make_settings(artifact: Path, **overrides: object) -> ServerSettings:
    return ServerSettings(artifact_dir=artifact, **overrides)  # type: ignore[arg-type]


@pytest.fixture
def client(knn_artifact: Path, knn_model: LoadedModel) -> Iterator[TestClient]:
    """A client of a ready app serving the KNN model (lifespan entered)."""
    app = create_app(make_settings(knn_artifact, max_batch_size=50, max_body_bytes=4096), knn_model)
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class ServerProcess:
    process: subprocess.Popen[str]
    base_url: str
    ready_after: float


def server_command() -> list[str]:
    return [sys.executable, "-m", "modelops_server"]


def start_server(
    artifact: Path, log_path: Path, env: dict[str, str] | None = None, timeout: float = 60.0
) -> ServerProcess:
    port = free_port()
    started = time.monotonic()
    with log_path.open("w") as log:
        # A file, not a pipe: a full pipe would block the server's logging.
        process = subprocess.Popen(
            [
                *server_command(),
                "--artifact-dir",
                str(artifact),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
            ],
            env={**os.environ, **(env or {})},
            stdout=subprocess.DEVNULL,
            stderr=log,
            text=True,
        )
    base_url = f"http://127.0.0.1:{port}"
    deadline = started + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(
                f"server exited with {process.returncode}: {log_path.read_text()[-2000:]}"
            )
        try:
            if httpx.get(f"{base_url}/readyz", timeout=1.0).status_code == 200:
                return ServerProcess(process, base_url, time.monotonic() - started)
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    stop_server(process)
    raise AssertionError(f"server not ready within {timeout} s: {log_path.read_text()[-2000:]}")


def stop_server(process: subprocess.Popen[str]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def run_server_to_exit(args: list[str], env: dict[str, str], timeout: float = 60.0):
    """Run the server CLI expecting it to stop by itself (start-up failures)."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MODELOPS_SERVER_")}
    return subprocess.run(
        [*server_command(), *args],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.fixture
def server(tmp_path: Path) -> Iterator[object]:
    """Start servers as subprocesses (``server(artifact, env)``); all are stopped at the end."""
    started: list[ServerProcess] = []

    def start(artifact: Path, env: dict[str, str] | None = None) -> ServerProcess:
        proc = start_server(artifact, tmp_path / f"server-{len(started)}.log", env)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        stop_server(proc.process)


@pytest.fixture(scope="module")
def oip_server(knn_artifact, tmp_path_factory) -> Iterator[tuple[str, str]]:
    """One server process with its gRPC port open: (HTTP base URL, gRPC host:port)."""
    grpc_port = free_port()
    log = tmp_path_factory.mktemp("oip") / "server.log"
    proc = start_server(knn_artifact, log, {"MODELOPS_SERVER_GRPC_PORT": str(grpc_port)})
    yield proc.base_url, f"127.0.0.1:{grpc_port}"
    stop_server(proc.process)


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return ROOT


@pytest.fixture
def run_cli():
    return run_server_to_exit


@pytest.fixture
def settings_for():
    return make_settings


@pytest.fixture
def seed_request() -> dict[str, float]:
    return dict(SEED_REQUEST)
