"""Online accuracy against the real model server: trainer -> modelops-server -> modelops-loadgen."""

import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def model_server(tmp_path_factory):
    models = tmp_path_factory.mktemp("models")
    subprocess.run(
        [str(BIN / "modelops-trainer"), "train", "--version", "v1", "--output-dir", str(models)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [
            str(BIN / "modelops-server"),
            "--artifact-dir", str(models / "v1"),
            "--host", "127.0.0.1",
            "--port", str(port),
            "--log-level", "warning",
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
        yield port, models / "v1"
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


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


@pytest.mark.parametrize(("endpoint", "rows"), [("predict", 1), ("batch", 16), ("infer", 4)])
def test_online_accuracy_matches_the_served_model(model_server, lg, endpoint, rows):
    port, artifact = model_server
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
