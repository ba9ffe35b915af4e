"""The published Open Inference Protocol clients against the real server, HTTP and gRPC.

tritonclient (HTTP: JSON and binary tensors, gzip/deflate bodies; gRPC) and the KServe SDK
(REST with protocol v2, JSON and binary; gRPC) each run oip_clients.py in a process of their
own (see its docstring) against one server process; every answer must equal the model's own
predict/predict_proba on the same rows: all 150 Iris rows, as FP32 and FP64, row by row and as
one batch. Readiness, metadata and error mapping are checked from the client's side too.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from modelops_trainer.data import load_dataset

pytestmark = pytest.mark.integration
SCRIPT = Path(__file__).with_name("oip_clients.py")


@pytest.fixture(scope="module")
def rows() -> np.ndarray:
    features = load_dataset().features
    assert features.shape == (150, 4)
    return features


@pytest.fixture(scope="module")
def kserve_python(repo_root: Path) -> str:
    # Builds the venv if missing (make test-tools did), so a missing SDK fails, never skips.
    out = subprocess.run(
        [str(repo_root / "hack" / "kserve-venv.sh")], capture_output=True, text=True, timeout=900
    )
    assert out.returncode == 0, out.stderr
    return str(Path(out.stdout.strip()) / "bin" / "python")


def run_client(python: str, client: str, server, rows: np.ndarray, tmp_path: Path) -> dict:
    rows_file = tmp_path / "rows.json"
    rows_file.write_text(json.dumps(rows.tolist()))
    http_url, grpc_target = server
    env = {**os.environ, "OIP_HTTP": http_url, "OIP_GRPC": grpc_target, "OIP_ROWS": str(rows_file)}
    out = subprocess.run(
        [python, str(SCRIPT), client], capture_output=True, text=True, env=env, timeout=600
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout)


def expected(pipeline, rows: np.ndarray, datatype: str):
    # What an FP32 tensor holds is the float32 rounding of each value.
    x = rows.astype(np.float32).astype(np.float64) if datatype == "FP32" else rows
    return [str(v) for v in pipeline.predict(x)], pipeline.predict_proba(x).tolist()


def check_predictions(result: dict, pipeline, rows: np.ndarray) -> None:
    assert result["live"] is True and result["ready"] is True and result["model_ready"] is True
    assert {key.split("/")[0] for key in result["results"]} == {"FP32", "FP64"}
    for key, got in result["results"].items():
        labels, proba = expected(pipeline, rows, key.split("/")[0])
        assert got["labels"] == labels, key
        assert got["proba"] == proba, key  # bit for bit: JSON carries every float exactly


@pytest.mark.parametrize("client", ["triton-http", "triton-grpc"])
def test_tritonclient(client, oip_server, knn_model, rows, tmp_path, knn_pipeline):
    result = run_client(sys.executable, client, oip_server, rows, tmp_path)
    check_predictions(result, knn_pipeline, rows)
    assert len(result["results"]) == (10 if client == "triton-http" else 4)
    labels, proba = expected(knn_pipeline, rows[:1], "FP64")
    assert result["default_outputs"] == {"labels": labels, "proba": proba}
    meta = result["model_metadata"]
    assert meta["name"] == "iris" and meta["versions"] == ["knn"]
    assert [t["name"] for t in meta["inputs"]] == ["input-0"]
    assert [(t["name"], t["datatype"]) for t in meta["outputs"]] == [
        ("predict", "BYTES"),
        ("predict_proba", "FP64"),
    ]
    assert result["server_metadata"]["name"] == "modelops-server"
    errors = result["errors"]
    http = client == "triton-http"
    assert errors["unknown_model"]["status"] == ("404" if http else "StatusCode.NOT_FOUND")
    invalid = "422" if http else "StatusCode.INVALID_ARGUMENT"
    for name, field in (
        ("bad_shape", "inputs[0].shape"),
        ("bad_datatype", "inputs[0].datatype"),
        ("out_of_range", "inputs[0].data[0][0]"),
    ):
        assert errors[name]["status"] == invalid, name
        assert field in errors[name]["message"], errors[name]
    assert "sepal_length = 509.99" in errors["out_of_range"]["message"]  # 5.1 * 100


@pytest.mark.parametrize("client", ["kserve-rest", "kserve-grpc"])
def test_kserve_sdk(client, kserve_python, oip_server, knn_model, rows, tmp_path, knn_pipeline):
    result = run_client(kserve_python, client, oip_server, rows, tmp_path)
    check_predictions(result, knn_pipeline, rows)
    assert len(result["results"]) == (6 if client == "kserve-rest" else 4)
    assert "'roses' is not served here" in result["errors"]["unknown_model"]["message"]
