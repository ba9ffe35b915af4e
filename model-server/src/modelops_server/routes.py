"""The flat route table of the HTTP API, its matcher, and the OpenAPI document built from it.

One :class:`Route` per method and path; asgi.py serves them, :func:`openapi_document`
describes them with FastAPI's generator (so the document is what FastAPI would publish for
these routes), and the docs pages come from FastAPI's own Swagger UI helpers.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from fastapi.datastructures import Default
from fastapi.openapi.docs import get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from starlette.responses import Response

from . import __version__, rest
from .dataplane import DataPlane
from .schemas import (
    REQUEST_MODELS,
    BatchResponse,
    ErrorBody,
    FeedbackResponse,
    InferResponse,
    ModelMetadata,
    PredictResponse,
)

Handler = Callable[[DataPlane, rest.HttpRequest], rest.HttpResponse]
TITLE = "modelops model server"
DESCRIPTION = "Seed-compatible Iris API and Open Inference Protocol v2 for one model."
_PARAM = re.compile(r"{(\w+)}")


def _errors() -> dict[int | str, dict[str, Any]]:
    described = {
        400: "malformed JSON",
        404: "unknown route, model or version",
        413: "body or batch too large",
        415: "not JSON",
        422: "invalid fields",
        503: "model not ready",
    }
    return {code: {"model": ErrorBody, "description": text} for code, text in described.items()}


ERRORS = _errors()
FEEDBACK_ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorBody, "description": "unknown prediction id (another replica's?)"},
    409: {"model": ErrorBody, "description": "feedback for this id was already recorded"},
    410: {"model": ErrorBody, "description": "prediction id expired"},
}


@dataclass(frozen=True)
class Route:
    method: str
    path: str  # template, also the `endpoint` label of the metrics
    handler: Handler
    name: str  # the OpenAPI operation's name
    summary: str
    responses: Mapping[int | str, dict[str, Any]] = field(default_factory=dict)
    body: str | None = None  # request body schema (a POST route reads its body)
    binary: bool = False  # accepts the OIP binary tensor extension
    limited: bool = True  # counted against MAX_CONCURRENCY; probes and /metrics are not
    params: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "params", tuple(_PARAM.findall(self.path)))


def _oip_model_routes(prefix: str, suffix: str) -> tuple[Route, ...]:
    meta = {200: {"model": ModelMetadata}, **ERRORS}
    infer = {200: {"model": InferResponse}, **ERRORS}
    return (
        Route("GET", prefix, rest.model_metadata, f"model_metadata_{suffix}",
              "OIP model metadata", meta),
        Route("GET", prefix + "/ready", rest.model_ready, f"model_ready_{suffix}",
              "OIP model readiness", ERRORS),
        Route("POST", prefix + "/infer", rest.infer, f"infer_{suffix}", "OIP inference", infer,
              body="InferRequest", binary=True),
    )  # fmt: skip


_ANY, _VERSIONED = (
    _oip_model_routes("/v2/models/{name}", "any"),
    _oip_model_routes("/v2/models/{name}/versions/{version}", "v"),
)
ROUTES: tuple[Route, ...] = (
    Route("POST", "/predict", rest.predict, "predict", "Classify one flower (the seed's API)",
          {200: {"model": PredictResponse}, **ERRORS}, body="PredictRequest"),
    Route("POST", "/predict/batch", rest.predict_batch, "predict_batch",
          "Classify many flowers in one request", {200: {"model": BatchResponse}, **ERRORS},
          body="BatchRequest"),
    _ANY[2],
    Route("POST", "/feedback", rest.feedback, "feedback",
          "The true species of a prediction (live accuracy)",
          {200: {"model": FeedbackResponse}, **ERRORS, **FEEDBACK_ERRORS}, body="FeedbackRequest"),
    Route("GET", "/", rest.root, "root", "Describe the service and the served model"),
    Route("GET", "/healthz", rest.healthz, "healthz", "Liveness: the process answers",
          limited=False),
    Route("GET", "/readyz", rest.readyz, "readyz", "Readiness: model loaded and warmed", ERRORS,
          limited=False),
    Route("GET", "/metrics", rest.metrics, "metrics_endpoint", "Prometheus metrics",
          limited=False),
    Route("GET", "/v2", rest.oip_server, "oip_server", "OIP server metadata"),
    Route("GET", "/v2/health/live", rest.oip_live, "oip_live", "OIP liveness", limited=False),
    Route("GET", "/v2/health/ready", rest.oip_ready, "oip_ready", "OIP readiness", ERRORS,
          limited=False),
    _ANY[0],
    _ANY[1],
    *_VERSIONED,
)  # fmt: skip


class Router:
    """Static paths by dict lookup, templated ones by one regex each; ``{x}`` matches a segment."""

    def __init__(self, routes: tuple[Route, ...]) -> None:
        self.static: dict[str, dict[str, Route]] = {}
        self.templated: list[tuple[re.Pattern[str], dict[str, Route]]] = []
        patterns: dict[str, dict[str, Route]] = {}
        for route in routes:
            if route.params:
                patterns.setdefault(route.path, {})[route.method] = route
            else:
                self.static.setdefault(route.path, {})[route.method] = route
        for path, methods in patterns.items():
            regex = "^" + _PARAM.sub(r"(?P<\1>[^/]+)", path) + "$"
            self.templated.append((re.compile(regex), methods))

    def match(self, path: str) -> tuple[dict[str, Route], dict[str, str]] | None:
        methods = self.static.get(path)
        if methods is not None:
            return methods, {}
        for regex, by_method in self.templated:
            found = regex.match(path)
            if found is not None:
                return by_method, found.groupdict()
        return None


# ---- the OpenAPI document and the docs pages -------------------------------------------------


def _described_endpoint(route: Route) -> Callable[..., Any]:
    """A function whose signature tells FastAPI's generator the route's path parameters.

    It only describes: requests are served by asgi.py through ``route.handler``.
    """

    def endpoint(**params: str) -> Any:
        return route.handler

    endpoint.__name__ = route.name
    endpoint.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [inspect.Parameter(p, inspect.Parameter.KEYWORD_ONLY, annotation=str) for p in route.params]
    )
    return endpoint


def openapi_document(routes: tuple[Route, ...] = ROUTES) -> dict[str, Any]:
    api_routes = [
        APIRoute(
            route.path,
            _described_endpoint(route),
            methods=[route.method],
            name=route.name,
            summary=route.summary,
            responses=dict(route.responses) or None,
            openapi_extra=_body(route.body) if route.body else None,
            response_class=Response if route.handler is rest.metrics else Default(JSONResponse),
        )
        for route in routes
    ]
    schema = get_openapi(
        title=TITLE, version=__version__, description=DESCRIPTION, routes=api_routes
    )
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    for model in REQUEST_MODELS:
        definition = model.model_json_schema(ref_template="#/components/schemas/{model}")
        components.update(definition.pop("$defs", {}))
        components[model.__name__] = definition
    return schema


def _body(schema: str) -> dict[str, Any]:
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema}"}}},
        }
    }


def docs_pages() -> dict[str, rest.HttpResponse]:
    """GET-only pages served as they are: /openapi.json, the Swagger UI and its OAuth2 page."""
    html = b"text/html; charset=utf-8"
    swagger = get_swagger_ui_html(
        openapi_url="/openapi.json",
        title=f"{TITLE} - Swagger UI",
        oauth2_redirect_url="/docs/oauth2-redirect",
    )
    return {
        "/openapi.json": rest.json_response(openapi_document()),
        "/docs": rest.HttpResponse(200, bytes(swagger.body), html),
        "/docs/oauth2-redirect": rest.HttpResponse(
            200, bytes(get_swagger_ui_oauth2_redirect_html().body), html
        ),
    }
