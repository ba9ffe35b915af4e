"""Open Inference Protocol v2 endpoints: encoding of requests, responses and errors."""

from __future__ import annotations

import gzip
import json
import zlib

import numpy as np
import pytest

ROWS = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5]]


def infer_body(data, shape=None, datatype="FP64", **extra):
    tensor = {
        "name": "input-0",
        "shape": shape or [len(ROWS), 4],
        "datatype": datatype,
        "data": data,
    }
    return {"inputs": [tensor], **extra}


def test_health_and_server_metadata(client):
    assert client.get("/v2/health/live").json() == {"live": True}
    assert client.get("/v2/health/ready").json() == {"ready": True}
    server = client.get("/v2").json()
    assert server["name"] == "modelops-server"
    assert client.get("/v2/models/iris/ready").json() == {"name": "iris", "ready": True}


def test_model_metadata(client):
    meta = client.get("/v2/models/iris").json()
    assert meta["name"] == "iris"
    assert meta["versions"] == ["knn"]
    assert meta["platform"] == "sklearn"
    assert meta["inputs"] == [{"name": "input-0", "datatype": "FP64", "shape": [-1, 4]}]
    assert {o["name"]: o["shape"] for o in meta["outputs"]} == {
        "predict": [-1],
        "predict_proba": [-1, 3],
    }
    assert meta["parameters"]["classes"] == ["setosa", "versicolor", "virginica"]


@pytest.mark.parametrize("nested", [False, True])
def test_infer_fp64(client, knn_model, knn_pipeline, nested):
    data = ROWS if nested else [v for row in ROWS for v in row]
    response = client.post("/v2/models/iris/infer", json=infer_body(data, id="req-7"))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model_name"] == "iris"
    assert body["model_version"] == "knn"
    assert body["id"] == "req-7"
    outputs = {o["name"]: o for o in body["outputs"]}
    x = np.array(ROWS)
    assert outputs["predict"]["datatype"] == "BYTES"
    assert outputs["predict"]["shape"] == [3]
    assert outputs["predict"]["data"] == list(knn_pipeline.predict(x))
    assert outputs["predict_proba"]["datatype"] == "FP64"
    assert outputs["predict_proba"]["shape"] == [3, 3]
    expected = knn_pipeline.predict_proba(x).ravel().tolist()
    assert outputs["predict_proba"]["data"] == expected


def test_infer_fp32_uses_float32_values(client, knn_model, knn_pipeline):
    # 4.95 is not exact in float32: the model must see what an FP32 tensor holds.
    row = [4.95, 3.05, 1.45, 0.25]
    body = client.post(
        "/v2/models/iris/infer", json=infer_body(row, shape=[1, 4], datatype="FP32")
    ).json()
    x32 = np.array([row], dtype=np.float32).astype(np.float64)
    proba = next(o for o in body["outputs"] if o["name"] == "predict_proba")["data"]
    assert proba == knn_pipeline.predict_proba(x32).ravel().tolist()


def test_infer_selected_outputs(client):
    body = client.post(
        "/v2/models/iris/infer", json=infer_body(ROWS, outputs=[{"name": "predict"}])
    ).json()
    assert [o["name"] for o in body["outputs"]] == ["predict"]


def test_versioned_routes(client):
    assert client.get("/v2/models/iris/versions/knn").status_code == 200
    assert client.get("/v2/models/iris/versions/knn/ready").status_code == 200
    ok = client.post("/v2/models/iris/versions/knn/infer", json=infer_body(ROWS))
    assert ok.status_code == 200
    missing = client.post("/v2/models/iris/versions/v9/infer", json=infer_body(ROWS))
    assert missing.status_code == 404
    assert "v9" in missing.json()["error"]


def test_unknown_model_is_404(client):
    for response in (
        client.get("/v2/models/roses"),
        client.get("/v2/models/roses/ready"),
        client.post("/v2/models/roses/infer", json=infer_body(ROWS)),
    ):
        assert response.status_code == 404
        assert "'iris'" in response.json()["error"]


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        (infer_body(ROWS, datatype="INT64"), 422, "inputs[0].datatype"),
        (infer_body(ROWS, datatype="BYTES"), 422, "inputs[0].datatype"),
        (infer_body(ROWS, shape=[3, 5]), 422, "inputs[0].shape"),
        (infer_body(ROWS, shape=[12]), 422, "inputs[0].shape"),
        (infer_body(ROWS, shape=[0, 4]), 422, "inputs[0].shape"),
        (infer_body(ROWS, shape=[2, 4]), 422, "inputs[0].data"),
        (infer_body([[5.1, 3.5], [1.4, 0.2, 1.0, 2.0]], shape=[2, 4]), 422, "inputs[0].data"),
        (infer_body([[5.1, 3.5, 1.4, -0.2]], shape=[1, 4]), 422, "inputs[0].data[0][3]"),
        (infer_body(["5.1", 3.5, 1.4, 0.2], shape=[1, 4]), 422, None),
        (infer_body(ROWS, outputs=[{"name": "logits"}]), 422, "outputs"),
        ({"inputs": []}, 422, "inputs"),
        ({}, 422, "inputs"),
        (infer_body([[5.1, 3.5, 1.4, 0.2]] * 51, shape=[51, 4]), 413, None),
    ],
)
def test_infer_errors(client, body, status, field):
    response = client.post("/v2/models/iris/infer", json=body)
    assert response.status_code == status, response.text
    error = response.json()
    assert isinstance(error["error"], str)
    if field is not None:
        assert field in [d["field"] for d in error["details"]], error


def test_infer_error_names_the_feature(client):
    body = infer_body([[5.1, 3.5, 1.4, 200.0]], shape=[1, 4])
    error = client.post("/v2/models/iris/infer", json=body).json()
    assert "petal_width" in error["error"]
    assert "200.0" in error["error"]


# ---- what the published clients send: binary tensors, compression, extra fields ---------------


def binary_body(x: np.ndarray, datatype: str = "FP64", **request):
    raw = x.astype("<f4" if datatype == "FP32" else "<f8").tobytes()
    header = {
        "inputs": [
            {
                "name": "input-0",
                "shape": list(x.shape),
                "datatype": datatype,
                "parameters": {"binary_data_size": len(raw)},
            }
        ],
        **request,
    }
    encoded = json.dumps(header).encode()
    headers = {
        "inference-header-content-length": str(len(encoded)),
        "content-type": "application/octet-stream",
    }
    return encoded + raw, headers


def split_binary(response):
    size = int(response.headers["inference-header-content-length"])
    return json.loads(response.content[:size]), response.content[size:]


@pytest.mark.parametrize("datatype", ["FP32", "FP64"])
def test_binary_tensor_in_and_out(client, knn_model, datatype, knn_pipeline):
    x = np.array(ROWS)
    body, headers = binary_body(x, datatype, parameters={"binary_data_output": True})
    response = client.post("/v2/models/iris/infer", content=body, headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/octet-stream"
    header, raw = split_binary(response)
    sizes = [o["parameters"]["binary_data_size"] for o in header["outputs"]]
    labels_raw, proba_raw = raw[: sizes[0]], raw[sizes[0] :]
    assert len(proba_raw) == sizes[1] == 3 * 3 * 8
    xs = x.astype(np.float32).astype(np.float64) if datatype == "FP32" else x
    proba = np.frombuffer(proba_raw, "<f8").reshape(3, 3)
    assert np.array_equal(proba, knn_pipeline.predict_proba(xs))
    assert labels_raw[4 : 4 + len("setosa")] == b"setosa"


def test_binary_output_per_output_and_json_input(client):
    response = client.post(
        "/v2/models/iris/infer",
        json=infer_body(
            ROWS,
            outputs=[
                {"name": "predict"},
                {"name": "predict_proba", "parameters": {"binary_data": True}},
            ],
        ),
    )
    header, raw = split_binary(response)
    assert header["outputs"][0]["data"] == ["setosa", "virginica", "versicolor"]
    assert "data" not in header["outputs"][1] and len(raw) == 72


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda b, h: (b[:-3], h), "inputs[0].parameters.binary_data_size"),
        (lambda b, h: (b + b"\0" * 8, h), "inputs[0].parameters.binary_data_size"),
        (lambda b, h: (b, {**h, "inference-header-content-length": "x"}), None),
    ],
)
def test_broken_binary_requests_are_4xx(client, mutate, field):
    body, headers = mutate(*binary_body(np.array(ROWS)))
    response = client.post("/v2/models/iris/infer", content=body, headers=headers)
    assert response.status_code == 422, response.text
    if field is not None:
        assert field in [d["field"] for d in response.json()["details"]]


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
def test_compressed_bodies(client, encoding):
    raw = json.dumps(infer_body(ROWS)).encode()
    body = gzip.compress(raw) if encoding == "gzip" else zlib.compress(raw)
    response = client.post(
        "/v2/models/iris/infer",
        content=body,
        headers={"content-type": "application/json", "content-encoding": encoding},
    )
    assert response.status_code == 200, response.text


def test_compressed_body_over_the_limit_is_413(client):
    body = gzip.compress(json.dumps(infer_body(ROWS, id="x" * 10000)).encode())
    assert len(body) < 4096  # the limit applies to what the body unpacks to
    response = client.post(
        "/v2/models/iris/infer",
        content=body,
        headers={"content-type": "application/json", "content-encoding": "gzip"},
    )
    assert response.status_code == 413


def test_model_name_in_the_body(client):
    # The KServe SDK names the model in the body too.
    ok = client.post("/v2/models/iris/infer", json=infer_body(ROWS, model_name="iris"))
    assert ok.status_code == 200
    other = client.post("/v2/models/iris/infer", json=infer_body(ROWS, model_name="roses"))
    assert other.status_code == 422
    assert other.json()["details"][0]["field"] == "model_name"


def test_classification_output(client):
    body = infer_body(
        ROWS, outputs=[{"name": "predict_proba", "parameters": {"classification": 1}}]
    )
    output = client.post("/v2/models/iris/infer", json=body).json()["outputs"][0]
    assert output["datatype"] == "BYTES" and output["shape"] == [3, 1]
    assert output["data"][0] == "1.000000:0:setosa"
