"""Online accuracy against the real model server: trainer -> modelops-server -> modelops-loadgen."""

import contextlib
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from modelops_testenv.balancer import ConnectionBalancer

pytestmark = pytest.mark.integration

BIN = Path(sys.executable).parent


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextlib.contextmanager
def serving(artifact: Path, port: int, *extra: str) -> Iterator[subprocess.Popen[bytes]]:
    """A modelops-server process on loopback, ready (/readyz 200) when the block starts."""
    proc = subprocess.Popen(
        [
            str(BIN / "modelops-server"),
            "--artifact-dir", str(artifact),
            "--host", "127.0.0.1",
            "--port", str(port),
            "--log-level", "warning",
            *extra,
        ],
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, "modelops-server exited during start-up"
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, "modelops-server not ready after 60 s"
            time.sleep(0.1)
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


@pytest.fixture(scope="module")
def artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One trained model version for every test of this module."""
    models = tmp_path_factory.mktemp("models")
    subprocess.run(
        [str(BIN / "modelops-trainer"), "train", "--version", "v1", "--output-dir", str(models)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    return models / "v1"


@pytest.fixture(scope="module")
def model_server(artifact: Path) -> Iterator[tuple[int, Path]]:
    port = free_port()
    with serving(artifact, port):
        yield port, artifact


def model_accuracy_on_all_rows(artifact: Path) -> float:
    """The served model's accuracy over the 150 rows, computed offline from the artifact."""
    from modelops_server.model import load_model

    datasets = pytest.importorskip("sklearn.datasets")
    iris = datasets.load_iris()
    model = load_model(artifact)
    indices, _ = model.predict(iris.data)
    pred = [model.classes[i] for i in indices]
    truth = [iris.target_names[t] for t in iris.target]
    return sum(1 for p, t in zip(pred, truth, strict=True) if str(p) == t) / len(truth)


def feedback_counts(port: int) -> tuple[float, float]:
    """(correct, incorrect) rows of the server's live accuracy (api_feedback_total)."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    counts = {"correct": 0.0, "incorrect": 0.0}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "api_feedback_total":
                counts[sample.labels["result"]] += sample.value
    return counts["correct"], counts["incorrect"]


@pytest.mark.parametrize(("endpoint", "rows"), [("predict", 1), ("batch", 16), ("infer", 4)])
def test_online_accuracy_matches_the_served_model(model_server, lg, endpoint, rows):
    port, artifact = model_server
    before = feedback_counts(port)
    code, s, err = lg.run_loadgen(
        "--target", f"http://127.0.0.1:{port}", "--endpoint", endpoint, "--payload", "iris",
        "--batch-size", str(rows), "--rate", "200", "--requests", "300", "--seed", "9",
    )  # fmt: skip
    assert code == 0, err
    assert s["outcomes"] == {"ok": 300}, s
    assert s["predictions_checked"] == 300 * rows
    expected = model_accuracy_on_all_rows(artifact)
    # Rows are sampled with replacement; 300+ checks put the mean within a few points of the
    # accuracy over all rows (sd <= 0.01 for accuracy ~0.97).
    assert abs(s["online_accuracy"] - expected) <= 0.04, (s["online_accuracy"], expected)
    assert s["online_accuracy"] < 1.0 or expected == 1.0  # answers really are checked
    # Every checked prediction's true species went back as feedback, and the server's live
    # accuracy counted exactly what the generator found.
    assert s["feedback"] == {"ok": 300}, s
    correct, incorrect = (a - b for a, b in zip(feedback_counts(port), before, strict=True))
    assert (correct, correct + incorrect) == (s["predictions_correct"], 300 * rows)


def test_feedback_reaches_the_replica_that_predicted(artifact, lg):
    """Two replicas behind one address: the feedback of each prediction goes on the connection
    the prediction came back on, so it reaches the replica that issued the id (another one
    would refuse it as unknown)."""
    ports = [free_port(), free_port()]
    with serving(artifact, ports[0]), serving(artifact, ports[1]):
        balancer = ConnectionBalancer(ports)
        try:
            code, s, err = lg.run_loadgen(
                "--target", f"http://127.0.0.1:{balancer.port}", "--payload", "iris",
                "--rate", "400", "--requests", "400", "--concurrency", "8", "--seed", "4",
            )  # fmt: skip
        finally:
            balancer.close()
        assert code == 0, err
        assert balancer.connections >= 2  # both replicas were used
        assert s["feedback"] == {"ok": 400}, s
        per_replica = [sum(feedback_counts(p)) for p in ports]
        assert sum(per_replica) == 400 and min(per_replica) > 0, per_replica


def test_grpc_endpoint_against_the_real_server(artifact):
    """--endpoint grpc: ModelInfer over gRPC, answers checked against the true labels."""
    import json

    http_port, grpc_port = free_port(), free_port()
    with serving(artifact, http_port, "--grpc-port", str(grpc_port)):
        out = subprocess.run(
            [
                str(BIN / "modelops-loadgen"),
                "--target", f"grpc://127.0.0.1:{grpc_port}",
                "--endpoint", "grpc",
                "--payload", "iris",
                "--batch-size", "3",
                "--rate", "50",
                "--requests", "100",
                "--seed", "3",
                "--metrics-port", "0",
                "--json",
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )  # fmt: skip
        assert out.returncode == 0, out.stderr
        summary = json.loads(out.stdout)
        assert summary["outcomes"] == {"ok": 100}, summary
        assert summary["online_accuracy"] > 0.9  # the KNN model's accuracy, on true labels
        with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/metrics", timeout=5) as r:
            metrics = r.read().decode()
        assert (
            'api_requests_total{code="200",endpoint="/inference.GRPCInferenceService/ModelInfer"}'
            " 100.0"
        ) in metrics


def test_grpc_request_bytes_are_a_model_infer_request():
    """The hand-written protobuf bytes parse as the server's ModelInferRequest."""
    import numpy as np

    from modelops_loadgen.oip_wire import decode_labels, encode_infer_request
    from modelops_server.oip import open_inference_grpc_pb2 as pb

    rows = [(5.1, 3.5, 1.4, 0.2), (6.7, 3.0, 5.2, 2.3)]
    request = pb.ModelInferRequest.FromString(encode_infer_request("iris", rows))
    assert request.model_name == "iris"
    (tensor,) = request.inputs
    assert (tensor.name, tensor.datatype, list(tensor.shape)) == ("input-0", "FP32", [2, 4])
    values = np.frombuffer(request.raw_input_contents[0], "<f4")
    assert values.tolist() == np.array(rows, dtype=np.float32).ravel().tolist()
    response = pb.ModelInferResponse(model_name="iris")
    response.outputs.add(name="predict_proba", datatype="FP64", shape=[2, 3])
    response.outputs.add(name="predict", datatype="BYTES", shape=[2])
    response.raw_output_contents.append(b"\0" * 48)
    response.raw_output_contents.append(b"\x06\0\0\0setosa\x09\0\0\0virginica")
    assert decode_labels(response.SerializeToString()) == ["setosa", "virginica"]
