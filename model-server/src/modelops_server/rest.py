"""HTTP endpoint handlers: decode a request body, call the data plane, encode the answer.

Handlers only speak HTTP (JSON bodies, the OIP binary tensor extension, status codes); the
rules live in dataplane.py. Each is a plain function ``(plane, request) -> HttpResponse``; the
ASGI layer (asgi.py) has already matched the route, read the body and checked its size and
media type. Request bodies are validated in one pass by pydantic's JSON parser (the same
models the OpenAPI document describes) and answers are encoded by orjson.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
import orjson
from pydantic import TypeAdapter, ValidationError

from . import __version__
from .dataplane import SERVICE, DataPlane, InferResult, RequestedOutput, Tensor, raw_values
from .errors import InvalidRequest, MalformedJSON, ServerError
from .schemas import (
    BATCH_ADAPTER,
    BINARY_INFER_ADAPTER,
    CLIENT_INFER_ADAPTER,
    FEEDBACK_ADAPTER,
    PREDICT_ADAPTER,
    BinaryInferRequest,
    ClientInferRequest,
)

JSON = b"application/json"
OCTET_STREAM = b"application/octet-stream"
# The OIP binary tensor extension (Triton's, spoken by tritonclient and the KServe SDK): the
# body is a JSON header of this many bytes, followed by the tensors' raw bytes.
BINARY_HEADER = "inference-header-content-length"
_T = TypeVar("_T")


@dataclass(slots=True)
class HttpRequest:
    params: dict[str, str]
    headers: dict[str, str]  # lower-case names
    body: bytes
    started: float  # perf_counter() when the request reached the server's handler


@dataclass(slots=True)
class HttpResponse:
    status: int
    body: bytes
    content_type: bytes = JSON
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)


def json_response(content: Any, status: int = 200) -> HttpResponse:
    return HttpResponse(status, orjson.dumps(content))


def error_response(error: ServerError) -> HttpResponse:
    return HttpResponse(error.status_code, orjson.dumps(error.body()), headers=error.headers())


# ---- seed API ---------------------------------------------------------------------------------


def predict(plane: DataPlane, request: HttpRequest) -> HttpResponse:
    plane.serving()
    req = validate(PREDICT_ADAPTER, request.body)
    row = [req.sepal_length, req.sepal_width, req.petal_length, req.petal_width]
    p = plane.predict_row(row, request.started)
    species = p.model.classes[p.indices[0]]
    if plane.shadow is not None:
        plane.shadow.copy("/predict", request.headers, request.body, p.prediction_id, [species])
    return json_response(
        {
            "species": species,
            "probability": p.top[0],
            "processing_time": p.elapsed,
            "model_version": p.model.version,
            "prediction_id": p.prediction_id,
        }
    )


def predict_batch(plane: DataPlane, request: HttpRequest) -> HttpResponse:
    plane.serving()
    req = validate(BATCH_ADAPTER, request.body)
    plane.check_rows(len(req.instances))
    x = np.array(
        [[r.sepal_length, r.sepal_width, r.petal_length, r.petal_width] for r in req.instances],
        dtype=np.float64,
    )
    p = plane.predict_rows(x, request.started)
    classes = p.model.classes
    if plane.shadow is not None:
        labels = [classes[i] for i in p.indices]
        plane.shadow.copy("/predict/batch", request.headers, request.body, p.prediction_id, labels)
    return json_response(
        {
            "predictions": [
                {"species": classes[i], "probability": top}
                for i, top in zip(p.indices, p.top, strict=True)
            ],
            "processing_time": p.elapsed,
            "model_version": p.model.version,
            "prediction_id": p.prediction_id,
        }
    )


def feedback(plane: DataPlane, request: HttpRequest) -> HttpResponse:
    req = validate(FEEDBACK_ADAPTER, request.body)
    species = [req.species] if isinstance(req.species, str) else req.species
    verdict = plane.record_feedback(req.prediction_id, species)
    return json_response(
        {
            "prediction_id": req.prediction_id,
            "model_version": plane.serving().version,
            "rows": verdict.rows,
            "correct": verdict.correct,
        }
    )


# ---- probes and description -------------------------------------------------------------------

ENDPOINTS = [
    "GET /",
    "GET /healthz",
    "GET /readyz",
    "GET /metrics",
    "POST /predict",
    "POST /predict/batch",
    "POST /feedback",
    "GET /v2",
    "GET /v2/health/live",
    "GET /v2/health/ready",
    "GET /v2/models/{name}",
    "GET /v2/models/{name}/ready",
    "POST /v2/models/{name}/infer",
]


def root(plane: DataPlane, request: HttpRequest) -> HttpResponse:
    body: dict[str, Any] = {
        "service": SERVICE,
        "version": __version__,
        "ready": plane.ready,
        "endpoints": ENDPOINTS,
    }
    model = plane.describe()
    if model is not None:
        body["model"] = model
    return json_response(body)


_ALIVE = orjson.dumps({"status": "alive"})
_LIVE = orjson.dumps({"live": True})


def healthz(plane: DataPlane, request: HttpRequest) -> HttpResponse:
    return HttpResponse(200, _ALIVE)


def readyz(plane: DataPlane, request: HttpRequest) -> HttpResponse:
    m = plane.serving()
    return json_response({"status": "ready", "model": m.name, "version": m.version})


def metrics(plane: DataPlane, request: HttpRequest) -> HttpResponse:
    return HttpResponse(200, plane.metrics.render(), plane.metrics.content_type.encode())


# ---- Open Inference Protocol v2 ---------------------------------------------------------------


def oip_server(plane: DataPlane, request: HttpRequest) -> HttpResponse:
    return json_response(plane.server_metadata())


def oip_live(plane: DataPlane, request: HttpRequest) -> HttpResponse:
    return HttpResponse(200, _LIVE)


def oip_ready(plane: DataPlane, request: HttpRequest) -> HttpResponse:
    if not plane.ready:
        return json_response({"ready": False, "error": "model not loaded yet"}, 503)
    return json_response({"ready": True})


def model_metadata(plane: DataPlane, request: HttpRequest) -> HttpResponse:
    params = request.params
    return json_response(plane.model_metadata(params["name"], params.get("version")))


def model_ready(plane: DataPlane, request: HttpRequest) -> HttpResponse:
    m = plane.served(request.params["name"], request.params.get("version"))
    return json_response({"name": m.name, "ready": True})


def infer(plane: DataPlane, request: HttpRequest) -> HttpResponse:
    name, version = request.params["name"], request.params.get("version")
    plane.served(name, version)
    header_size = request.headers.get(BINARY_HEADER)
    if header_size is None:
        req: ClientInferRequest = validate(CLIENT_INFER_ADAPTER, request.body)
        tensors = [Tensor(t.datatype, t.shape, t.data) for t in req.inputs]
    else:
        header, raw = _split_binary(request.body, header_size)
        binary_req = validate(BINARY_INFER_ADAPTER, header)
        tensors = _binary_tensors(binary_req, raw)
        req = binary_req
    _check_body_names(req, name, version)
    outputs, binary = _requested_outputs(req)
    result = plane.infer(name, version, tensors, outputs, request.started)
    if plane.shadow is not None:
        labels = [result.model.classes[i] for i in result.indices]
        path = f"/v2/models/{name}/infer"  # the shadow serves another version
        plane.shadow.copy(path, request.headers, request.body, result.prediction_id, labels)
    return _infer_response(result, req.id, binary)


def _check_body_names(req: ClientInferRequest, name: str, version: str | None) -> None:
    for field_name, in_body, in_path in (
        ("model_name", req.model_name, name),
        ("model_version", req.model_version, version),
    ):
        if in_body and in_path and in_body != in_path:
            raise InvalidRequest(
                f"{field_name} {in_body!r} in the body differs from {in_path!r} in the path",
                [{"field": field_name, "problem": "differs from the path"}],
            )


def _split_binary(body: bytes, header_size: str) -> tuple[bytes, bytes]:
    if not header_size.isdigit() or int(header_size) > len(body):
        raise InvalidRequest(
            f"header Inference-Header-Content-Length: {header_size!r} must be the byte length "
            f"of the JSON header at the start of the body (body is {len(body)} bytes)",
            [{"field": "Inference-Header-Content-Length", "problem": "not a valid length"}],
        )
    size = int(header_size)
    return body[:size], body[size:]


def _binary_tensors(req: BinaryInferRequest, raw: bytes) -> list[Tensor]:
    tensors, offset = [], 0
    for i, t in enumerate(req.inputs):
        where = f"inputs[{i}]"
        if t.data is not None:
            tensors.append(Tensor(t.datatype, t.shape, t.data, where))
            continue
        size = (t.parameters or {}).get("binary_data_size")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise InvalidRequest(
                f"{where} has no data and no parameters.binary_data_size; send its values in "
                "data or as binary_data_size bytes after the JSON header",
                [{"field": f"{where}.parameters.binary_data_size", "problem": "missing"}],
            )
        chunk = raw[offset : offset + size]
        offset += size
        values = raw_values(t.datatype, chunk, where, f"{where}.parameters.binary_data_size")
        tensors.append(Tensor(t.datatype, t.shape, values, where))
    if offset != len(raw):
        raise InvalidRequest(
            f"the binary part of the body is {len(raw)} bytes but the inputs' "
            f"binary_data_size add up to {offset}",
            [{"field": "inputs[0].parameters.binary_data_size", "problem": "does not match body"}],
        )
    return tensors


def _requested_outputs(req: ClientInferRequest) -> tuple[list[RequestedOutput] | None, list[bool]]:
    """Outputs asked for, and per output whether it goes in binary (default: all outputs)."""
    default_binary = _flag(req.parameters, "binary_data_output", "parameters")
    if not req.outputs:
        return None, [default_binary]
    outputs, binary = [], []
    for i, o in enumerate(req.outputs):
        params = o.parameters or {}
        where = f"outputs[{i}].parameters"
        wants_binary = (
            _flag(params, "binary_data", where) if "binary_data" in params else default_binary
        )
        count = params.get("classification", 0)
        if not isinstance(count, int) or isinstance(count, bool) or count < 0:
            raise InvalidRequest(
                f"{where}.classification must be a whole number of classes, not {count!r}",
                [{"field": f"{where}.classification", "problem": "must be an integer >= 0"}],
            )
        outputs.append(RequestedOutput(o.name, count))
        binary.append(wants_binary)
    return outputs, binary


def _flag(params: dict[str, Any] | None, key: str, where: str) -> bool:
    value = (params or {}).get(key, False)
    if not isinstance(value, bool):
        raise InvalidRequest(
            f"{where}.{key} must be true or false, not {value!r}",
            [{"field": f"{where}.{key}", "problem": "must be a boolean"}],
        )
    return value


def _infer_response(
    result: InferResult, request_id: str | None, binary: list[bool]
) -> HttpResponse:
    m = result.model
    if len(binary) == 1 and len(result.outputs) > 1:
        binary = binary * len(result.outputs)
    outputs: list[dict[str, Any]] = []
    raw: list[bytes] = []
    for output, as_binary in zip(result.outputs, binary, strict=True):
        tensor: dict[str, Any] = {
            "name": output.name,
            "shape": output.shape,
            "datatype": output.datatype,
        }
        if as_binary:
            data = output.as_raw()
            tensor["parameters"] = {"binary_data_size": len(data)}
            raw.append(data)
        else:
            tensor["data"] = output.as_list()
        outputs.append(tensor)
    body: dict[str, Any] = {
        "model_name": m.name,
        "model_version": m.version,
        "outputs": outputs,
        "parameters": {"prediction_id": result.prediction_id},
    }
    if request_id is not None:
        body["id"] = request_id
    header = orjson.dumps(body)
    if not raw:
        return HttpResponse(200, header)
    return HttpResponse(
        200,
        header + b"".join(raw),
        OCTET_STREAM,
        [(BINARY_HEADER.encode(), str(len(header)).encode())],
    )


# ---- validation -------------------------------------------------------------------------------


def validate(adapter: TypeAdapter[_T], body: bytes) -> _T:
    if not body:
        raise MalformedJSON("request body is empty; send a JSON object")
    try:
        return adapter.validate_json(body)
    except ValidationError as exc:
        raise invalid(exc.errors(include_url=False, include_input=False)) from None


def invalid(errors: Sequence[Any]) -> ServerError:
    details = []
    for error in errors:
        if error.get("type") in {"json_invalid", "json_type"}:
            return MalformedJSON(f"request body is not valid JSON: {error.get('msg', '')}")
        loc = [str(part) for part in error.get("loc", ()) if part != "body"]
        problem = str(error.get("msg", "invalid value"))
        if error.get("type") == "extra_forbidden":
            problem = "unknown field (check its spelling)"
        details.append({"field": _field_name(loc), "problem": problem})
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
