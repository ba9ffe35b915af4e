"""The real server process: uvicorn on a free loopback port, a real HTTP client, /metrics."""

from __future__ import annotations

import json
import shutil
import signal
import socket
import time
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

pytestmark = pytest.mark.integration


def scrape(base_url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = httpx.get(f"{base_url}/metrics", timeout=5)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_serves_and_counts(server, knn_artifact, seed_request):
    proc = server(knn_artifact)
    # bench/ measures the 3 s goal; on shared CI cores, only catch a start-up that hangs.
    assert proc.ready_after < 30, proc.ready_after
    base = proc.base_url
    virginica = {"sepal_length": 6.7, "sepal_width": 3.0, "petal_length": 5.2, "petal_width": 2.3}
    with httpx.Client(base_url=base, timeout=5) as http:
        before = scrape(base)
        for _ in range(3):
            assert http.post("/predict", json=seed_request).json()["species"] == "setosa"
        assert http.post("/predict", json=virginica).json()["species"] == "virginica"
        batch = http.post("/predict/batch", json={"instances": [seed_request, virginica]})
        assert batch.status_code == 200
        infer = http.post(
            "/v2/models/iris/infer",
            json={
                "inputs": [
                    {"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [5.1, 3.5, 1.4, 0.2]}
                ]
            },
        )
        assert infer.status_code == 200
        assert http.post("/predict", json={"sepal_length": 1}).status_code == 422
        assert (
            http.post(
                "/predict", content=b"{", headers={"content-type": "application/json"}
            ).status_code
            == 400
        )
        assert http.get("/v2/models/roses").status_code == 404
        assert http.get("/no/such/path").status_code == 404
        assert http.get("/").json()["model"]["version"] == "knn"
    after = scrape(base)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("api_predictions_total", species="setosa", model_version="knn") == 5
    assert delta("api_predictions_total", species="virginica", model_version="knn") == 2
    assert delta("api_predictions_total", species="versicolor", model_version="knn") == 0
    assert delta("api_prediction_latency_seconds_count") == 6  # requests, not rows
    assert delta("api_prediction_latency_seconds_bucket", le="+Inf") == 6
    assert delta("api_prediction_latency_seconds_bucket", le="10.0") == 6
    assert delta("api_prediction_latency_seconds_sum") > 0
    assert delta("api_requests_total", endpoint="/predict", code="200") == 4
    assert delta("api_requests_total", endpoint="/predict", code="422") == 1
    assert delta("api_requests_total", endpoint="/predict", code="400") == 1
    assert delta("api_requests_total", endpoint="/predict/batch", code="200") == 1
    assert delta("api_requests_total", endpoint="/v2/models/{name}/infer", code="200") == 1
    assert delta("api_requests_total", endpoint="/v2/models/{name}", code="404") == 1
    assert delta("api_requests_total", endpoint="unmatched", code="404") == 1
    assert delta("api_errors_total", endpoint="/predict", kind="invalid_request") == 1
    assert delta("api_errors_total", endpoint="/predict", kind="malformed_json") == 1
    assert delta("api_errors_total", endpoint="/v2/models/{name}", kind="not_found") == 1
    assert delta("api_errors_total", endpoint="unmatched", kind="not_found") == 1
    assert (
        value(
            after,
            "model_info",
            model="iris",
            version="knn",
            algorithm="knn",
            predictor="vectorised",
        )
        == 1
    )
    assert 0.85 <= value(after, "model_accuracy", model="iris", version="knn") <= 1
    assert value(after, "model_ready", model="iris", version="knn") == 1
    # Label sets stay bounded: no raw paths or model names from requests.
    endpoints = {
        dict(labels).get("endpoint") for (name, labels) in after if name == "api_requests_total"
    }
    assert "/no/such/path" not in endpoints and "/v2/models/roses" not in endpoints


def test_environment_settings_and_flags(server, knn_artifact, seed_request):
    proc = server(
        knn_artifact,
        {"MODELOPS_SERVER_MODEL_NAME": "flowers", "MODELOPS_SERVER_MAX_BATCH_SIZE": "2"},
    )
    with httpx.Client(base_url=proc.base_url, timeout=5) as http:
        assert http.get("/v2/models/flowers/ready").status_code == 200
        too_many = http.post("/predict/batch", json={"instances": [seed_request] * 3})
        assert too_many.status_code == 413


def test_sigterm_answers_requests_on_open_connections_then_closes(
    server, knn_artifact, seed_request
):
    """A stopping server (SIGTERM, after the pod's drain) does not close a kept-alive
    connection under a client that is sending on it: the next request on each connection is
    answered, with Connection: close; a connection left idle closes by itself soon after. New
    connections are refused."""
    proc = server(knn_artifact)
    port = int(proc.base_url.rsplit(":", 1)[1])
    body = json.dumps(seed_request).encode()
    request = (
        b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
    )

    def answer(sock: socket.socket) -> bytes:
        data = b""
        while b"\r\n\r\n" not in data or not data.endswith(b"}"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
        return data

    busy = socket.create_connection(("127.0.0.1", port), timeout=5)
    idle = socket.create_connection(("127.0.0.1", port), timeout=5)
    for sock in (busy, idle):
        sock.sendall(request)
        assert answer(sock).startswith(b"HTTP/1.1 200"), "kept alive before the signal"
    proc.process.send_signal(signal.SIGTERM)
    time.sleep(0.3)  # the signal is handled; the client has not noticed anything
    busy.sendall(request)
    last = answer(busy)
    assert last.startswith(b"HTTP/1.1 200") and b"connection: close" in last.lower(), last
    assert busy.recv(1) == b"", "closed after that answer"
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=2).sendall(request)
    idle.settimeout(10)
    assert idle.recv(1) == b"", "an idle connection is closed by the server"
    assert proc.process.wait(timeout=15) in (0, -signal.SIGTERM)  # uvicorn re-raises it
    busy.close()
    idle.close()


# ---- start-up failures: exit non-zero with one line saying what is wrong ---------------------


def one_line_error(result) -> str:
    assert result.returncode == 2, (result.returncode, result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("modelops-server: error: ")
    assert "Traceback" not in result.stderr
    return lines[0]


def test_missing_artifact_setting(run_cli):
    line = one_line_error(run_cli([], {}))
    assert "MODELOPS_SERVER_ARTIFACT_DIR is not set" in line
    assert "--artifact-dir" in line


def test_missing_artifact_directory(run_cli, tmp_path):
    line = one_line_error(run_cli(["--artifact-dir", str(tmp_path / "nope")], {}))
    assert "does not exist" in line


def test_artifact_from_environment_is_checked(run_cli, tmp_path):
    line = one_line_error(run_cli([], {"MODELOPS_SERVER_ARTIFACT_DIR": str(tmp_path / "gone")}))
    assert str(tmp_path / "gone") in line


def test_corrupt_artifact(run_cli, knn_artifact, tmp_path):
    broken = tmp_path / "v1"
    shutil.copytree(knn_artifact, broken)
    with (broken / "model.params").open("ab") as handle:
        handle.write(b"x")
    line = one_line_error(run_cli(["--artifact-dir", str(broken)], {}))
    assert "corrupt" in line


def test_bad_setting_value(run_cli, knn_artifact):
    line = one_line_error(
        run_cli(["--artifact-dir", str(knn_artifact)], {"MODELOPS_SERVER_PORT": "eighty"})
    )
    assert "MODELOPS_SERVER_PORT" in line


def test_flag_overrides_environment(run_cli, knn_artifact, tmp_path: Path):
    # A bad directory from the environment is overridden by a bad one from the flag: the
    # message names the flag's.
    result = run_cli(
        ["--artifact-dir", str(tmp_path / "from-flag")],
        {"MODELOPS_SERVER_ARTIFACT_DIR": str(knn_artifact)},
    )
    assert "from-flag" in one_line_error(result)
