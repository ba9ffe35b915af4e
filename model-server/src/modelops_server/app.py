"""The HTTP API, built by :func:`create_app` around one :class:`~.model.LoadedModel`.

Prediction handlers take the raw request and validate its bytes with pydantic's JSON parser
directly (one pass, no intermediate dicts) and answer with orjson-encoded bytes: FastAPI's
per-request body machinery would otherwise cost more than the prediction itself. The OpenAPI
schema still documents every body (see :func:`_openapi`).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import numpy as np
import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute
from pydantic import TypeAdapter, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from . import __version__
from .errors import (
    InvalidRequest,
    MalformedJSON,
    MethodNotAllowed,
    NotFound,
    NotReady,
    PayloadTooLarge,
    ServerError,
    UnsupportedMediaType,
)
from .metrics import UNMATCHED, Metrics
from .model import FEATURE_MAX_CM, FEATURE_MIN_CM, LoadedModel, load_model
from .schemas import (
    BATCH_ADAPTER,
    INFER_ADAPTER,
    PREDICT_ADAPTER,
    REQUEST_MODELS,
    BatchResponse,
    ErrorBody,
    InferResponse,
    ModelMetadata,
    PredictResponse,
)
from .settings import ServerSettings

log = logging.getLogger("modelops_server.app")
SERVICE = "modelops-server"
OIP_OUTPUTS = ("predict", "predict_proba")
_FEATURES = ("sepal_length", "sepal_width", "petal_length", "petal_width")
_T = TypeVar("_T")


class JSONBytes(Response):
    media_type = "application/json"


def _json(content: Any, status_code: int = 200) -> JSONBytes:
    return JSONBytes(orjson.dumps(content), status_code=status_code)


class RawRoute(APIRoute):
    """An APIRoute whose handler gets the raw request and path parameters, nothing else.

    FastAPI still builds the OpenAPI description from the route, but requests skip its
    dependency solving and response serialisation (~40 µs per request): every endpoint here
    reads its own body and returns a ready :class:`Response`. ``on_response`` counts successful
    answers by route template (errors are counted where they are mapped, in create_app).
    """

    on_response: Callable[[str, int], None] = staticmethod(lambda endpoint, code: None)

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        endpoint = self.endpoint
        wants_request = "request" in inspect.signature(endpoint).parameters
        path = self.path
        count = self.on_response

        if wants_request:

            async def handle_with_request(request: Request) -> Response:
                response: Response = await endpoint(request, **request.path_params)
                count(path, response.status_code)
                return response

            return handle_with_request

        async def handle(request: Request) -> Response:
            response: Response = await endpoint(**request.path_params)
            count(path, response.status_code)
            return response

        return handle


class ServerState:
    def __init__(
        self, settings: ServerSettings, model: LoadedModel | None, metrics: Metrics
    ) -> None:
        self.settings = settings
        self.model = model
        self.metrics = metrics
        self.ready = False

    def serving(self) -> LoadedModel:
        model = self.model
        if model is None or not self.ready:
            raise NotReady("the model is not loaded yet; retry once GET /readyz answers 200")
        return model


def create_app(settings: ServerSettings, model: LoadedModel | None = None) -> FastAPI:
    """Build the app. Without `model`, the lifespan loads it from ``settings.artifact_dir``."""
    metrics = Metrics(enabled=settings.metrics_enabled)
    state = ServerState(settings, model, metrics)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if state.model is None:
            state.model = await asyncio.to_thread(
                load_model,
                settings.artifact_dir,
                settings.model_name,
                expected_sha256=settings.model_sha256,
            )
        loaded = state.model
        if not loaded.warm:
            await asyncio.to_thread(loaded.warm_up)
        metrics.set_model(loaded)
        state.ready = True
        metrics.set_ready(loaded, True)
        log.info(
            "model ready",
            extra={
                "model": loaded.name,
                "version": loaded.version,
                "algorithm": loaded.algorithm,
                "predictor": loaded.predictor_reason,
            },
        )
        try:
            yield
        finally:
            state.ready = False
            metrics.set_ready(loaded, False)

    app = FastAPI(
        title="modelops model server",
        version=__version__,
        description="Seed-compatible Iris API and Open Inference Protocol v2 for one model.",
        lifespan=lifespan,
        docs_url="/docs",
        redoc_url=None,
    )
    app.state.server = state
    app.router.route_class = type(
        "CountedRawRoute", (RawRoute,), {"on_response": staticmethod(metrics.count_request)}
    )
    limit = settings.max_body_bytes
    max_rows = settings.max_batch_size
    errors = _error_responses()

    # ---- seed API ---------------------------------------------------------------------------

    @app.post(
        "/predict",
        summary="Classify one flower (the seed's API)",
        responses={200: {"model": PredictResponse}, **errors},
        openapi_extra=_body("PredictRequest"),
    )
    async def predict(request: Request) -> JSONBytes:
        started = time.perf_counter()
        m = state.serving()
        req = _validate(PREDICT_ADAPTER, await _read_body(request, limit))
        x = np.array(
            [[req.sepal_length, req.sepal_width, req.petal_length, req.petal_width]],
            dtype=np.float64,
        )
        indices, proba = m.predict(x)
        i = int(indices[0])
        elapsed = time.perf_counter() - started
        metrics.observe_predictions((i,), elapsed)
        return _json(
            {
                "species": m.classes[i],
                "probability": float(proba[0, i]),
                "processing_time": elapsed,
                "model_version": m.version,
            }
        )

    @app.post(
        "/predict/batch",
        summary="Classify many flowers in one request",
        responses={200: {"model": BatchResponse}, **errors},
        openapi_extra=_body("BatchRequest"),
    )
    async def predict_batch(request: Request) -> JSONBytes:
        started = time.perf_counter()
        m = state.serving()
        req = _validate(BATCH_ADAPTER, await _read_body(request, limit))
        if len(req.instances) > max_rows:
            raise PayloadTooLarge(
                f"batch of {len(req.instances)} instances is over the limit of {max_rows}; "
                "split it into smaller requests"
            )
        x = np.array(
            [[r.sepal_length, r.sepal_width, r.petal_length, r.petal_width] for r in req.instances],
            dtype=np.float64,
        )
        indices, proba = m.predict(x)
        idx = indices.tolist()
        top = proba[np.arange(len(idx)), indices].tolist()
        classes = m.classes
        elapsed = time.perf_counter() - started
        metrics.observe_predictions(idx, elapsed)
        return _json(
            {
                "predictions": [
                    {"species": classes[i], "probability": p} for i, p in zip(idx, top, strict=True)
                ],
                "processing_time": elapsed,
                "model_version": m.version,
            }
        )

    # ---- probes and description -------------------------------------------------------------

    @app.get("/", summary="Describe the service and the served model")
    async def root() -> JSONBytes:
        body: dict[str, Any] = {
            "service": SERVICE,
            "version": __version__,
            "ready": state.ready,
            "endpoints": _ENDPOINTS,
        }
        m = state.model
        if m is not None:
            body["model"] = {
                "name": m.name,
                "version": m.version,
                "algorithm": m.algorithm,
                "accuracy": m.accuracy,
                "classes": list(m.classes),
                "features": list(m.features),
                "predictor": m.predictor_reason,
            }
        return _json(body)

    @app.get("/healthz", summary="Liveness: the process answers")
    async def healthz() -> JSONBytes:
        return _json({"status": "alive"})

    @app.get("/readyz", summary="Readiness: model loaded and warmed", responses=errors)
    async def readyz() -> JSONBytes:
        m = state.serving()
        return _json({"status": "ready", "model": m.name, "version": m.version})

    @app.get("/metrics", summary="Prometheus metrics", response_class=Response)
    async def metrics_endpoint() -> Response:
        return Response(metrics.render(), media_type=metrics.content_type)

    # ---- Open Inference Protocol v2 ---------------------------------------------------------

    @app.get("/v2", summary="OIP server metadata")
    async def oip_server() -> JSONBytes:
        return _json({"name": SERVICE, "version": __version__, "extensions": []})

    @app.get("/v2/health/live", summary="OIP liveness")
    async def oip_live() -> JSONBytes:
        return _json({"live": True})

    @app.get("/v2/health/ready", summary="OIP readiness", responses=errors)
    async def oip_ready() -> JSONBytes:
        if not state.ready:
            return _json({"ready": False, "error": "model not loaded yet"}, 503)
        return _json({"ready": True})

    def served(name: str, version: str | None) -> LoadedModel:
        m = state.serving()
        if name != m.name:
            raise NotFound(f"model {name!r} is not served here; this server serves {m.name!r}")
        if version is not None and version != m.version:
            raise NotFound(
                f"version {version!r} of model {name!r} is not served here; "
                f"this server serves version {m.version!r}"
            )
        return m

    async def model_metadata(name: str, version: str | None = None) -> JSONBytes:
        m = served(name, version)
        return _json(
            {
                "name": m.name,
                "versions": [m.version],
                "platform": "sklearn",
                "inputs": [{"name": "input-0", "datatype": "FP64", "shape": [-1, 4]}],
                "outputs": [
                    {"name": "predict", "datatype": "BYTES", "shape": [-1]},
                    {"name": "predict_proba", "datatype": "FP64", "shape": [-1, len(m.classes)]},
                ],
                "parameters": {"classes": list(m.classes), "features": list(m.features)},
            }
        )

    async def model_ready(name: str, version: str | None = None) -> JSONBytes:
        m = served(name, version)
        return _json({"name": m.name, "ready": True})

    async def infer(request: Request, name: str, version: str | None = None) -> JSONBytes:
        started = time.perf_counter()
        m = served(name, version)
        req = _validate(INFER_ADAPTER, await _read_body(request, limit))
        tensor = req.inputs[0]
        x = _oip_matrix(tensor.datatype, tensor.shape, tensor.data, max_rows)
        wanted = [o.name for o in req.outputs] if req.outputs else list(OIP_OUTPUTS)
        unknown = [w for w in wanted if w not in OIP_OUTPUTS]
        if unknown:
            raise InvalidRequest(
                f"unknown output(s) {unknown}; this model offers {list(OIP_OUTPUTS)}",
                [{"field": "outputs", "problem": f"unknown output {u!r}"} for u in unknown],
            )
        indices, proba = m.predict(x)
        idx = indices.tolist()
        elapsed = time.perf_counter() - started
        metrics.observe_predictions(idx, elapsed)
        outputs: list[dict[str, Any]] = []
        for output in wanted:
            if output == "predict":
                data: list[Any] = [m.classes[i] for i in idx]
                outputs.append(
                    {"name": output, "shape": [len(idx)], "datatype": "BYTES", "data": data}
                )
            else:
                outputs.append(
                    {
                        "name": output,
                        "shape": list(proba.shape),
                        "datatype": "FP64",
                        "data": proba.ravel().tolist(),
                    }
                )
        body: dict[str, Any] = {
            "model_name": m.name,
            "model_version": m.version,
            "outputs": outputs,
        }
        if req.id is not None:
            body["id"] = req.id
        return _json(body)

    meta_responses: dict[int | str, dict[str, Any]] = {200: {"model": ModelMetadata}, **errors}
    infer_responses: dict[int | str, dict[str, Any]] = {200: {"model": InferResponse}, **errors}

    async def model_metadata_v(name: str, version: str) -> JSONBytes:
        return await model_metadata(name, version)

    async def model_ready_v(name: str, version: str) -> JSONBytes:
        return await model_ready(name, version)

    async def infer_v(request: Request, name: str, version: str) -> JSONBytes:
        return await infer(request, name, version)

    async def model_metadata_any(name: str) -> JSONBytes:
        return await model_metadata(name)

    async def model_ready_any(name: str) -> JSONBytes:
        return await model_ready(name)

    async def infer_any(request: Request, name: str) -> JSONBytes:
        return await infer(request, name)

    routes = (
        ("/v2/models/{name}", model_metadata_any, model_ready_any, infer_any),
        ("/v2/models/{name}/versions/{version}", model_metadata_v, model_ready_v, infer_v),
    )
    for prefix, meta_handler, ready_handler, infer_handler in routes:
        app.add_api_route(
            prefix,
            meta_handler,
            methods=["GET"],
            summary="OIP model metadata",
            responses=meta_responses,
        )
        app.add_api_route(
            prefix + "/ready",
            ready_handler,
            methods=["GET"],
            summary="OIP model readiness",
            responses=errors,
        )
        app.add_api_route(
            prefix + "/infer",
            infer_handler,
            methods=["POST"],
            summary="OIP inference",
            responses=infer_responses,
            openapi_extra=_body("InferRequest"),
        )

    # ---- errors and instrumentation ----------------------------------------------------------

    def error_response(request: Request, exc: ServerError) -> JSONBytes:
        route = request.scope.get("route")
        endpoint = route.path if route is not None else UNMATCHED
        metrics.count_error(endpoint, exc.kind)
        metrics.count_request(endpoint, exc.status_code)
        return _json(exc.body(), exc.status_code)

    async def on_server_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ServerError)
        return error_response(request, exc)

    async def on_http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        error: ServerError
        if exc.status_code == 404:
            error = NotFound(f"no route {request.url.path!r}; GET / lists the endpoints")
        elif exc.status_code == 405:
            error = MethodNotAllowed(
                f"method {request.method} is not allowed on {request.url.path!r}"
            )
        else:
            error = ServerError(str(exc.detail))
            error.status_code = exc.status_code
            error.kind = "http_error"
        response = error_response(request, error)
        if exc.headers:
            response.headers.update(exc.headers)
        return response

    async def on_validation_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        return error_response(request, _invalid(list(exc.errors())))

    async def on_unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        error = ServerError("internal error while handling the request; see the server log")
        return error_response(request, error)

    # Starlette tries routes in order: prediction routes first saves ~3 µs per route skipped.
    # No two templates here overlap ({name} never matches a '/'), so order changes nothing else.
    hot = ("/predict", "/predict/batch", "/v2/models/{name}/infer")

    def priority(route: Any) -> int:
        path = getattr(route, "path", None)
        return hot.index(path) if path in hot else len(hot)

    app.router.routes.sort(key=priority)
    app.add_exception_handler(ServerError, on_server_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(Exception, on_unexpected)
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app


# ---- helpers -----------------------------------------------------------------------------------

_ENDPOINTS = [
    "GET /",
    "GET /healthz",
    "GET /readyz",
    "GET /metrics",
    "POST /predict",
    "POST /predict/batch",
    "GET /v2",
    "GET /v2/health/live",
    "GET /v2/health/ready",
    "GET /v2/models/{name}",
    "GET /v2/models/{name}/ready",
    "POST /v2/models/{name}/infer",
]


async def _read_body(request: Request, limit: int) -> bytes:
    headers = request.headers
    content_type = headers.get("content-type")
    if content_type is not None:
        media = content_type.split(";", 1)[0].strip().lower()
        if media != "application/json" and not media.endswith("+json"):
            raise UnsupportedMediaType(
                f"content type {media!r} is not supported; send JSON with "
                "'Content-Type: application/json'"
            )
    length = headers.get("content-length")
    if length is not None:
        if length.isdigit() and int(length) > limit:
            raise PayloadTooLarge(f"request body of {length} bytes is over the {limit}-byte limit")
        return await request.body()
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"request body is over the {limit}-byte limit")
        chunks.append(chunk)
    return b"".join(chunks)


def _validate(adapter: TypeAdapter[_T], body: bytes) -> _T:
    if not body:
        raise MalformedJSON("request body is empty; send a JSON object")
    try:
        return adapter.validate_json(body)
    except ValidationError as exc:
        raise _invalid(exc.errors(include_url=False, include_input=False)) from None


def _invalid(errors: list[Any]) -> ServerError:
    details = []
    for error in errors:
        if error.get("type") in {"json_invalid", "json_type"}:
            return MalformedJSON(f"request body is not valid JSON: {error.get('msg', '')}")
        loc = [str(part) for part in error.get("loc", ()) if part != "body"]
        field = _field_name(loc)
        problem = str(error.get("msg", "invalid value"))
        if error.get("type") == "extra_forbidden":
            problem = "unknown field (check its spelling)"
        details.append({"field": field, "problem": problem})
    summary = "; ".join(f"{d['field']}: {d['problem']}" for d in details[:5])
    more = f" (and {len(details) - 5} more)" if len(details) > 5 else ""
    return InvalidRequest(f"invalid request: {summary}{more}", details)


def _field_name(loc: list[str]) -> str:
    name = ""
    for part in loc:
        if part.isdigit():
            name += f"[{part}]"
        elif part.startswith(("list[", "float", "int", "str")):
            continue  # pydantic's union-branch markers say nothing to a client
        else:
            name += f".{part}" if name else part
    return name or "body"


def _oip_matrix(datatype: str, shape: list[int], data: list[Any], max_rows: int) -> np.ndarray:
    if datatype not in ("FP32", "FP64"):
        raise InvalidRequest(
            f"inputs[0].datatype {datatype!r} is not supported; use FP32 or FP64",
            [{"field": "inputs[0].datatype", "problem": "must be FP32 or FP64"}],
        )
    if len(shape) != 2 or shape[1] != len(_FEATURES) or shape[0] < 1:
        raise InvalidRequest(
            f"inputs[0].shape {shape} must be [N, {len(_FEATURES)}] with N >= 1 "
            f"(columns {', '.join(_FEATURES)})",
            [{"field": "inputs[0].shape", "problem": f"must be [N, {len(_FEATURES)}]"}],
        )
    rows = shape[0]
    if rows > max_rows:
        raise PayloadTooLarge(
            f"tensor of {rows} rows is over the limit of {max_rows}; split the request"
        )
    try:
        x = np.asarray(data, dtype=np.float64)
    except ValueError:
        raise InvalidRequest(
            "inputs[0].data rows have different lengths",
            [{"field": "inputs[0].data", "problem": "ragged rows"}],
        ) from None
    if x.size != rows * len(_FEATURES) or (x.ndim == 2 and x.shape != (rows, len(_FEATURES))):
        raise InvalidRequest(
            f"inputs[0].data holds {x.size} values laid out as {list(x.shape)}, "
            f"but shape {shape} needs {rows * len(_FEATURES)}",
            [{"field": "inputs[0].data", "problem": "does not match shape"}],
        )
    x = x.reshape(rows, len(_FEATURES))
    if datatype == "FP32":
        x = x.astype(np.float32).astype(np.float64)  # the values an FP32 tensor holds
    bad = ~((x > FEATURE_MIN_CM) & (x <= FEATURE_MAX_CM))
    if bad.any():
        details = []
        for r, c in np.argwhere(bad)[:10].tolist():
            details.append(
                {
                    "field": f"inputs[0].data[{r}][{c}]",
                    "problem": f"{_FEATURES[c]} = {x[r, c]!r} is outside "
                    f"({FEATURE_MIN_CM:g}, {FEATURE_MAX_CM:g}] cm",
                }
            )
        raise InvalidRequest(
            f"invalid request: {details[0]['field']}: {details[0]['problem']}"
            + (f" (and {int(bad.sum()) - 1} more)" if bad.sum() > 1 else ""),
            details,
        )
    return x


def _body(schema: str) -> dict[str, Any]:
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema}"}}},
        }
    }


def _error_responses() -> dict[int | str, dict[str, Any]]:
    described = {
        400: "malformed JSON",
        404: "unknown route, model or version",
        413: "body or batch too large",
        415: "not JSON",
        422: "invalid fields",
        503: "model not ready",
    }
    return {code: {"model": ErrorBody, "description": text} for code, text in described.items()}


def _openapi(app: FastAPI) -> dict[str, Any]:
    if app.openapi_schema:
        return app.openapi_schema
    schema = get_openapi(
        title=app.title, version=app.version, description=app.description, routes=app.routes
    )
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    for model in REQUEST_MODELS:
        definition = model.model_json_schema(ref_template="#/components/schemas/{model}")
        components.update(definition.pop("$defs", {}))
        components[model.__name__] = definition
    app.openapi_schema = schema
    return schema
