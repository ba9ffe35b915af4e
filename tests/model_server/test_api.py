"""The HTTP API in-process: seed compatibility, batch, validation and error mapping."""

from __future__ import annotations

import json

import numpy as np
import pytest
from fastapi.testclient import TestClient

from modelops_server.app import create_app


def post(client: TestClient, path: str, body: object, **kwargs):
    return client.post(path, json=body, **kwargs)


def assert_error(response, status: int, kind: str, field: str | None = None) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert body["kind"] == kind
    assert isinstance(body["error"], str) and body["error"]
    assert "Traceback" not in response.text
    if field is not None:
        fields = [d["field"] for d in body.get("details", [])]
        assert field in fields, body
        assert field in body["error"]
    return body


# ---- seed API -----------------------------------------------------------------------------------


def test_seed_predict_answers_seed_fields(client, seed_request):
    response = post(client, "/predict", seed_request)
    assert response.status_code == 200
    body = response.json()
    assert body["species"] == "setosa"
    assert body["probability"] == 1.0
    assert 0 < body["processing_time"] < 1
    assert body["model_version"] == "knn"
    # The seed's fields, plus the id its feedback refers to (additive: seed clients ignore it).
    seed = {"species", "probability", "processing_time", "model_version"}
    assert set(body) == seed | {"prediction_id"}


def test_predict_without_content_type_is_read_as_json(client, seed_request):
    # Seed clients that send JSON without a Content-Type header keep working.
    response = client.post("/predict", content=json.dumps(seed_request).encode())
    assert response.status_code == 200
    assert response.json()["species"] == "setosa"


def test_predict_matches_the_pipeline(client, knn_pipeline):
    rows = [[6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5], [4.6, 3.1, 1.5, 0.2]]
    expected = knn_pipeline.predict(np.array(rows))
    proba = knn_pipeline.predict_proba(np.array(rows))
    for row, species, p in zip(rows, expected, proba, strict=True):
        body = post(client, "/predict", dict(zip(FEATURES, row, strict=True))).json()
        assert body["species"] == species
        assert body["probability"] == pytest.approx(p.max(), abs=0)


def test_root_describes_service_and_model(client):
    body = client.get("/").json()
    assert body["service"] == "modelops-server"
    assert body["ready"] is True
    assert body["model"]["name"] == "iris"
    assert body["model"]["version"] == "knn"
    assert body["model"]["algorithm"] == "knn"
    assert 0.85 <= body["model"]["accuracy"] <= 1
    assert body["model"]["predictor"].startswith("vectorised")
    assert "POST /predict" in body["endpoints"]


def test_probes(client):
    assert client.get("/healthz").json() == {"status": "alive"}
    assert client.get("/readyz").json() == {"status": "ready", "model": "iris", "version": "knn"}


def test_not_ready_before_lifespan(knn_artifact, knn_model, settings_for, seed_request):
    app = create_app(settings_for(knn_artifact), knn_model)
    plain = TestClient(app, raise_server_exceptions=False)  # no `with`: lifespan never ran
    assert_error(plain.get("/readyz"), 503, "not_ready")
    assert_error(plain.post("/predict", json=seed_request), 503, "not_ready")
    assert plain.get("/v2/health/ready").status_code == 503
    assert plain.get("/healthz").status_code == 200
    assert plain.get("/").json()["ready"] is False


def test_lifespan_loads_model_when_not_given(knn_artifact, settings_for, seed_request):
    app = create_app(settings_for(knn_artifact, model_name="flowers"))
    with TestClient(app) as lazy:
        assert lazy.get("/readyz").status_code == 200
        assert lazy.get("/v2/models/flowers/ready").json() == {"name": "flowers", "ready": True}
        assert lazy.post("/predict", json=seed_request).json()["species"] == "setosa"


# ---- batch ------------------------------------------------------------------------------------


def test_batch_predict(client, knn_model, knn_pipeline):
    rows = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5]]
    body = post(
        client, "/predict/batch", {"instances": [dict(zip(FEATURES, r, strict=True)) for r in rows]}
    ).json()
    assert [p["species"] for p in body["predictions"]] == list(knn_pipeline.predict(np.array(rows)))
    assert body["model_version"] == "knn"
    assert all(0 < p["probability"] <= 1 for p in body["predictions"])


def test_batch_over_limit_is_413(client, seed_request):
    assert_error(
        post(client, "/predict/batch", {"instances": [seed_request] * 51}), 413, "payload_too_large"
    )
    assert post(client, "/predict/batch", {"instances": [seed_request] * 50}).status_code == 200


def test_empty_batch_is_422(client):
    assert_error(
        post(client, "/predict/batch", {"instances": []}), 422, "invalid_request", "instances"
    )


def test_batch_names_the_bad_instance(client, seed_request):
    bad = {**seed_request, "petal_width": "wide"}
    assert_error(
        post(client, "/predict/batch", {"instances": [seed_request, bad]}),
        422,
        "invalid_request",
        "instances[1].petal_width",
    )


# ---- validation and error mapping ----------------------------------------------------------------

FEATURES = ("sepal_length", "sepal_width", "petal_length", "petal_width")


@pytest.mark.parametrize("field", FEATURES)
def test_missing_field(client, seed_request, field):
    del seed_request[field]
    body = assert_error(post(client, "/predict", seed_request), 422, "invalid_request", field)
    assert "required" in body["error"].lower()


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("5.1", "number"),
        (True, "number"),
        (None, "number"),
        ([5.1], "number"),
        ({"cm": 5.1}, "number"),
        (0, "greater than 0"),
        (-1.5, "greater than 0"),
        (100.5, "less than or equal to 100"),
        (1e308, "less than or equal to 100"),
    ],
)
def test_bad_value_names_field_and_problem(client, seed_request, value, problem):
    seed_request["petal_length"] = value
    body = assert_error(
        post(client, "/predict", seed_request), 422, "invalid_request", "petal_length"
    )
    assert problem in body["error"].lower()


@pytest.mark.parametrize("token", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_numbers_are_4xx(client, token):
    raw = (
        '{"sepal_length": ' + token + ', "sepal_width": 3.5, '
        '"petal_length": 1.4, "petal_width": 0.2}'
    )
    response = client.post("/predict", content=raw, headers={"content-type": "application/json"})
    assert 400 <= response.status_code < 500
    assert response.json()["kind"] in {"malformed_json", "invalid_request"}


def test_integers_are_numbers(client):
    body = {"sepal_length": 5, "sepal_width": 3, "petal_length": 1, "petal_width": 1}
    assert post(client, "/predict", body).status_code == 200


def test_unknown_field_is_reported(client, seed_request):
    seed_request["sepal_lenght"] = 5.0
    body = assert_error(
        post(client, "/predict", seed_request), 422, "invalid_request", "sepal_lenght"
    )
    assert "unknown field" in body["error"]


@pytest.mark.parametrize("raw", [b"{", b"not json", b'{"sepal_length": 5.1,}', b"\xff\xfe"])
def test_malformed_json_is_400(client, raw):
    response = client.post("/predict", content=raw, headers={"content-type": "application/json"})
    assert_error(response, 400, "malformed_json")


def test_empty_body_is_400(client):
    response = client.post("/predict", content=b"", headers={"content-type": "application/json"})
    assert_error(response, 400, "malformed_json")


@pytest.mark.parametrize("raw", [b"[]", b"[1, 2]", b'"text"', b"5", b"null"])
def test_non_object_body_is_422(client, raw):
    response = client.post("/predict", content=raw, headers={"content-type": "application/json"})
    assert_error(response, 422, "invalid_request")


@pytest.mark.parametrize(
    "ctype", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"]
)
def test_wrong_content_type_is_415(client, seed_request, ctype):
    response = client.post(
        "/predict", content=json.dumps(seed_request), headers={"content-type": ctype}
    )
    body = assert_error(response, 415, "unsupported_media_type")
    assert "application/json" in body["error"]


def test_json_content_type_variants_are_accepted(client, seed_request):
    for ctype in ("application/json; charset=utf-8", "Application/JSON", "application/vnd.x+json"):
        response = client.post(
            "/predict", content=json.dumps(seed_request), headers={"content-type": ctype}
        )
        assert response.status_code == 200, ctype


def test_oversized_body_is_413(client, seed_request):
    padded = json.dumps(seed_request) + " " * 5000
    response = client.post("/predict", content=padded, headers={"content-type": "application/json"})
    assert_error(response, 413, "payload_too_large")


def test_oversized_chunked_body_is_413(client, seed_request):
    def chunks():
        yield json.dumps(seed_request).encode()
        for _ in range(10):
            yield b" " * 1000

    response = client.post(
        "/predict", content=chunks(), headers={"content-type": "application/json"}
    )
    assert_error(response, 413, "payload_too_large")


def test_unknown_route_and_method(client):
    assert_error(client.get("/nope"), 404, "not_found")
    assert_error(client.get("/predict"), 405, "method_not_allowed")
    assert_error(client.delete("/"), 405, "method_not_allowed")


def test_internal_errors_hide_the_traceback(knn_artifact, knn_model, settings_for, seed_request):
    app = create_app(settings_for(knn_artifact), knn_model)

    class Broken:
        kind = "vectorised"

        def predict(self, x):
            raise RuntimeError("secret internal detail")

    with TestClient(app, raise_server_exceptions=False) as broken:
        original = knn_model.predictor
        knn_model.predictor = Broken()  # type: ignore[assignment]
        try:
            response = broken.post("/predict", json=seed_request)
        finally:
            knn_model.predictor = original
    body = assert_error(response, 500, "internal_error")
    assert "secret" not in response.text
    assert "server log" in body["error"]


def test_openapi_documents_request_bodies(client):
    schema = client.get("/openapi.json").json()
    body = schema["paths"]["/predict"]["post"]["requestBody"]["content"]["application/json"]
    assert body["schema"]["$ref"] == "#/components/schemas/PredictRequest"
    predict = schema["components"]["schemas"]["PredictRequest"]
    assert set(predict["required"]) == set(FEATURES)
    assert predict["properties"]["sepal_length"]["exclusiveMinimum"] == 0
    assert "InferRequest" in schema["components"]["schemas"]
    assert "/v2/models/{name}/infer" in schema["paths"]
