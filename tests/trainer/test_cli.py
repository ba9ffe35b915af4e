"""The `modelops-trainer` command as CI and the operator run it: a real subprocess."""

import functools
import http.server
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from .conftest import write_csv

pytestmark = pytest.mark.integration

TRAINER = [sys.executable, "-m", "modelops_trainer"]


def run(*args: str, check: bool = False) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [*TRAINER, *args], capture_output=True, text=True, timeout=120, env={**os.environ}
    )
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def test_train_writes_artifact_and_result(tmp_path):
    result_file = tmp_path / "termination-log"
    proc = run(
        "train",
        "--version",
        "v1",
        "--output-dir",
        str(tmp_path / "m"),
        "--result-file",
        str(result_file),
        check=True,
    )
    printed = json.loads(proc.stdout)
    assert json.loads(result_file.read_text()) == printed
    assert printed["status"] == "Succeeded"
    assert printed["accuracy"] >= 0.9
    assert (tmp_path / "m" / "v1" / "model.params").is_file()


def test_params_flags_and_json_merge(tmp_path):
    proc = run(
        "train",
        "--version",
        "v1",
        "--output-dir",
        str(tmp_path),
        "--params-json",
        '{"n_neighbors": 9, "weights": "uniform"}',
        "--param",
        "n_neighbors=3",
        check=True,
    )
    meta = json.loads((tmp_path / "v1" / "metadata.json").read_text())
    assert meta["params"]["n_neighbors"] == 3
    assert meta["params"]["weights"] == "uniform"
    assert json.loads(proc.stdout)["version"] == "v1"


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([], "has 0 data row(s); at least 10 are needed"),
        ([[1, 2, 3, 4, "a"]] * 12, "only one class ('a')"),
        ([[1, "x", 3, 4, "a"]] * 12, "non-numeric value 'x'"),
    ],
)
def test_bad_data_fails_cleanly(tmp_path, rows, message):
    data = write_csv(tmp_path / "d.csv", rows)
    result_file = tmp_path / "result.json"
    proc = run(
        "train",
        "--version",
        "v1",
        "--output-dir",
        str(tmp_path / "m"),
        "--dataset",
        str(data),
        "--result-file",
        str(result_file),
    )
    assert proc.returncode == 1
    assert message in proc.stderr
    # What it started, then the one line of why it failed.
    assert proc.stderr.strip().splitlines()[0] == "modelops-trainer: training v1 (knn)"
    assert len(proc.stderr.strip().splitlines()) == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    failure = json.loads(result_file.read_text())
    assert failure == {
        "status": "Failed",
        "version": "v1",
        "reason": "InvalidData",
        "message": failure["message"],
    }
    assert not (tmp_path / "m" / "v1").exists()


def test_bad_hyperparameter_fails_cleanly(tmp_path):
    proc = run("train", "--version", "v1", "--output-dir", str(tmp_path), "--param", "k=3")
    assert proc.returncode == 1
    assert "knn has no hyperparameter(s) 'k'" in proc.stderr
    assert json.loads(proc.stdout)["reason"] == "InvalidParameters"


def test_usage_errors_exit_2(tmp_path):
    assert run("train", "--output-dir", str(tmp_path)).returncode == 2
    assert run("gate").returncode == 2
    assert (
        run(
            "train", "--version", "v1", "--output-dir", str(tmp_path), "--params-json", "[1]"
        ).returncode
        == 2
    )
    proc = run("gate", "--candidate", str(tmp_path / "missing.json"))
    assert proc.returncode == 2
    assert "neither an accuracy number nor an existing file" in proc.stderr


@pytest.fixture
def http_dir(tmp_path):
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    handler.log_message = lambda *a: None  # type: ignore[attr-defined]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield tmp_path, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_dataset_from_url(http_dir, iris_csv):
    root, base = http_dir
    (root / "iris.csv").write_bytes(iris_csv.read_bytes())
    out = root / "models"
    proc = run(
        "train",
        "--version",
        "v1",
        "--output-dir",
        str(out),
        "--dataset",
        f"{base}/iris.csv",
        check=True,
    )
    assert json.loads(proc.stdout)["accuracy"] >= 0.9
    meta = json.loads((out / "v1" / "metadata.json").read_text())
    assert meta["dataset"]["source"] == f"{base}/iris.csv"


def test_dataset_url_not_found(http_dir, tmp_path):
    _, base = http_dir
    proc = run(
        "train",
        "--version",
        "v1",
        "--output-dir",
        str(tmp_path / "m"),
        "--dataset",
        f"{base}/missing.csv",
    )
    assert proc.returncode == 1
    assert "HTTP 404" in proc.stderr


def _train(out: Path, version: str, *extra: str) -> Path:
    run("train", "--version", version, "--output-dir", str(out), *extra, check=True)
    return out / version


def test_gate_against_previous_artifact(tmp_path):
    first = _train(tmp_path, "v1")
    second = _train(tmp_path, "v2")
    proc = run("gate", "--candidate", str(second), "--previous", str(first / "metadata.json"))
    assert proc.returncode == 0
    decision = json.loads(proc.stdout)
    assert decision["reason"] == "InsignificantImprovement"
    assert decision["warning"] is True
    assert "WARNING" in proc.stderr


def test_gate_rejects_regression_and_floor(tmp_path):
    candidate = _train(tmp_path, "v1")
    worse = run("gate", "--candidate", str(candidate), "--previous", "0.99")
    assert worse.returncode == 1
    assert json.loads(worse.stdout)["reason"] == "RegressionDetected"
    floor = run("gate", "--candidate", "0.8")
    assert floor.returncode == 1
    assert json.loads(floor.stdout)["reason"] == "AccuracyBelowMinimum"
    first = run("gate", "--candidate", "0.9")
    assert first.returncode == 0
    assert json.loads(first.stdout)["reason"] == "FirstVersion"


def test_gate_policy_flags(tmp_path):
    proc = run("gate", "--candidate", "0.80", "--min-accuracy", "0.75")
    assert proc.returncode == 0
    proc = run(
        "gate", "--candidate", "0.93", "--previous", "0.95", "--regression-tolerance", "0.05"
    )
    assert proc.returncode == 0
    assert run("gate", "--candidate", "0.9", "--min-accuracy", "1.5").returncode == 2
