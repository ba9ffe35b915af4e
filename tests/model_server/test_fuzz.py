"""Fuzzing over the app's own OpenAPI schema: no input gives a 5xx, every error body is JSON.

Bodies come from three sources per operation: the documented request schema (mostly valid
requests with edge values: bounds, tiny and huge numbers, empty and long lists), documented
bodies with one field replaced by arbitrary JSON, and arbitrary JSON or bytes. Bounded:
~1,500 requests in total, run in-process.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modelops_server.app import create_app

FUZZ = settings(
    max_examples=120,
    deadline=None,
    derandomize=True,  # the same cases on every run: a failure reproduces
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.filter_too_much,
    ],
)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=6) | st.dictionaries(st.text(max_size=15), children, max_size=6)
    ),
    max_leaves=30,
)


def from_schema(schema: dict[str, Any], root: dict[str, Any] | None = None) -> st.SearchStrategy:
    """Values matching a JSON schema, for the subset pydantic emits for our request models."""
    root = root or schema
    if "$ref" in schema:
        target: Any = root
        for part in schema["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        return from_schema(target, root)
    for key in ("anyOf", "oneOf"):
        if key in schema:
            return st.one_of([from_schema(option, root) for option in schema[key]])
    kind = schema.get("type")
    if kind == "object":
        properties = schema.get("properties", {})
        required = set(schema.get("required", []))
        fixed = {name: from_schema(s, root) for name, s in properties.items() if name in required}
        optional = {
            name: from_schema(s, root) for name, s in properties.items() if name not in required
        }
        if not properties:  # a free-form object (OIP "parameters")
            return st.dictionaries(st.text(max_size=10), JSON_VALUES, max_size=3)
        return st.fixed_dictionaries(fixed, optional=optional)
    if kind == "array":
        return st.lists(
            from_schema(schema.get("items", {}), root),
            min_size=schema.get("minItems", 0),
            max_size=min(schema.get("maxItems", 30), 30),
        )
    if kind == "number":
        return st.floats(
            min_value=schema.get("minimum", schema.get("exclusiveMinimum")),
            max_value=schema.get("maximum", schema.get("exclusiveMaximum")),
            exclude_min="exclusiveMinimum" in schema,
            exclude_max="exclusiveMaximum" in schema,
            allow_nan=False,
            allow_infinity=False,
        )
    if kind == "integer":
        return st.integers(min_value=schema.get("minimum"), max_value=schema.get("maximum"))
    if kind == "string":
        return st.text(max_size=20)
    if kind == "boolean":
        return st.booleans()
    if kind == "null":
        return st.none()
    return JSON_VALUES


def test_schema_strategy_makes_valid_requests(fuzz_client, openapi):
    """Guard the generator itself: documented bodies for /predict are accepted."""
    schema = body_schemas(openapi)["/predict"]

    @FUZZ
    @given(body=from_schema(schema))
    def run(body: Any) -> None:
        assert post_json(fuzz_client, "/predict", body).status_code == 200

    run()


@pytest.fixture(scope="module")
def fuzz_client(knn_artifact, knn_model) -> Iterator[TestClient]:
    from modelops_server.settings import ServerSettings

    app = create_app(ServerSettings(artifact_dir=knn_artifact, max_batch_size=20), knn_model)
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


@pytest.fixture(scope="module")
def openapi(fuzz_client) -> dict[str, Any]:
    return fuzz_client.get("/openapi.json").json()


def body_schemas(openapi: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every POST operation's JSON request schema, made self-contained for hypothesis."""
    out = {}
    for path, operations in openapi["paths"].items():
        post = operations.get("post")
        if post is None:
            continue
        schema = post["requestBody"]["content"]["application/json"]["schema"]
        out[path] = {**schema, "components": openapi["components"]}
    return out


def concrete(path: str) -> str:
    return path.replace("{name}", "iris").replace("{version}", "knn")


def post_json(client: TestClient, url: str, body: Any):
    # json.dumps writes NaN/Infinity tokens, which the server must refuse with a 4xx.
    return client.post(
        url, content=json.dumps(body).encode(), headers={"content-type": "application/json"}
    )


def check(response) -> None:
    assert response.status_code < 500, (response.status_code, response.text)
    if response.status_code < 400 and "json" not in response.headers.get("content-type", ""):
        return  # /metrics (text), /docs (HTML)
    body = response.json()  # every error, and every JSON success, parses
    if response.status_code >= 400:
        assert isinstance(body.get("error"), str) and body["error"], body
        assert isinstance(body.get("kind"), str), body
        assert "Traceback" not in response.text


def test_every_post_operation_is_fuzzed(openapi):
    assert set(body_schemas(openapi)) == {
        "/predict",
        "/feedback",
        "/predict/batch",
        "/v2/models/{name}/infer",
        "/v2/models/{name}/versions/{version}/infer",
    }


@pytest.mark.parametrize(
    "path", ["/predict", "/predict/batch", "/feedback", "/v2/models/{name}/infer"]
)
def test_documented_bodies(fuzz_client, openapi, path):
    schema = body_schemas(openapi)[path]

    @FUZZ
    @given(body=from_schema(schema))
    def run(body: Any) -> None:
        check(post_json(fuzz_client, concrete(path), body))

    run()


@pytest.mark.parametrize(
    "path", ["/predict", "/predict/batch", "/feedback", "/v2/models/{name}/infer"]
)
def test_documented_bodies_with_one_field_broken(fuzz_client, openapi, path):
    schema = body_schemas(openapi)[path]

    @FUZZ
    @given(body=from_schema(schema), junk=JSON_VALUES, data=st.data())
    def run(body: Any, junk: Any, data: st.DataObject) -> None:
        if isinstance(body, dict) and body:
            key = data.draw(st.sampled_from(sorted(body)))
            body = {**body, key: junk}
        check(post_json(fuzz_client, concrete(path), body))

    run()


@pytest.mark.parametrize(
    "path", ["/predict", "/predict/batch", "/feedback", "/v2/models/{name}/infer"]
)
def test_arbitrary_payloads(fuzz_client, path):
    @FUZZ
    @given(
        payload=JSON_VALUES.map(lambda v: json.dumps(v).encode()) | st.binary(max_size=200),
        content_type=st.sampled_from(
            [None, "application/json", "text/plain", "application/json; charset=latin-1", ""]
        ),
    )
    def run(payload: bytes, content_type: str | None) -> None:
        headers = {} if content_type is None else {"content-type": content_type}
        check(fuzz_client.post(concrete(path), content=payload, headers=headers))

    run()


def test_arbitrary_paths_and_methods(fuzz_client, openapi):
    @FUZZ
    @given(
        segment=st.text(max_size=20).map(lambda s: quote(s, safe="")),
        path=st.sampled_from(sorted(openapi["paths"])),
        method=st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH"]),
    )
    def run(segment: str, path: str, method: str) -> None:
        url = path.replace("{name}", segment or "x").replace("{version}", segment or "y")
        check(fuzz_client.request(method, url, content=b"{}"))

    run()
