"""The OIP gRPC service (``inference.GRPCInferenceService``) in front of the data plane.

The servicer only speaks gRPC: it decodes protobuf messages into the data plane's plain values,
encodes the results (tensor values always in ``raw_output_contents``, as Triton answers and
every OIP client reads), and maps the data plane's errors to status codes. It runs on grpc.aio
in the server's event loop, so metrics stay single-threaded like the HTTP path's. Metrics use
the same series as HTTP: ``endpoint`` is the RPC's full method name and ``code`` the HTTP
status of the same outcome, so error-ratio queries cover both transports.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from .dataplane import DataPlane, InferResult, RequestedOutput, Tensor, raw_values
from .errors import InvalidRequest, ServerError
from .oip import open_inference_grpc_pb2 as pb

log = logging.getLogger("modelops_server.grpc")
SERVICE_NAME = "inference.GRPCInferenceService"
STATUS_CODES = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    404: grpc.StatusCode.NOT_FOUND,
    408: grpc.StatusCode.DEADLINE_EXCEEDED,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    415: grpc.StatusCode.INVALID_ARGUMENT,
    422: grpc.StatusCode.INVALID_ARGUMENT,
    503: grpc.StatusCode.UNAVAILABLE,
}
# gRPC channels are long-lived by design; one idle this long is closed.
GRPC_IDLE_MS = 300_000
_CONTENTS = {"FP32": "fp32_contents", "FP64": "fp64_contents"}


class InferenceServicer:
    """One method per RPC: message in, message out; errors become gRPC status codes."""

    def __init__(self, plane: DataPlane) -> None:
        self.plane = plane

    def ServerLive(self, request: pb.ServerLiveRequest) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    def ServerReady(self, request: pb.ServerReadyRequest) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=self.plane.ready)

    def ModelReady(self, request: pb.ModelReadyRequest) -> pb.ModelReadyResponse:
        self.plane.served(request.name, request.version or None)
        return pb.ModelReadyResponse(ready=True)

    def ServerMetadata(self, request: pb.ServerMetadataRequest) -> pb.ServerMetadataResponse:
        return pb.ServerMetadataResponse(**self.plane.server_metadata())

    def ModelMetadata(self, request: pb.ModelMetadataRequest) -> pb.ModelMetadataResponse:
        meta = self.plane.model_metadata(request.name, request.version or None)
        tensor = pb.ModelMetadataResponse.TensorMetadata
        return pb.ModelMetadataResponse(
            name=meta["name"],
            versions=meta["versions"],
            platform=meta["platform"],
            inputs=[tensor(**t) for t in meta["inputs"]],
            outputs=[tensor(**t) for t in meta["outputs"]],
        )

    def ModelInfer(self, request: pb.ModelInferRequest) -> pb.ModelInferResponse:
        started = time.perf_counter()
        self.plane.served(request.model_name, request.model_version or None)
        tensors = decode_inputs(request)
        outputs = [
            RequestedOutput(o.name, _classification(o, i)) for i, o in enumerate(request.outputs)
        ]
        result = self.plane.infer(
            request.model_name, request.model_version or None, tensors, outputs, started
        )
        return encode_result(result, request.id)


def decode_inputs(request: pb.ModelInferRequest) -> list[Tensor]:
    raw = request.raw_input_contents
    if raw and len(raw) != len(request.inputs):
        raise InvalidRequest(
            f"raw_input_contents has {len(raw)} entries for {len(request.inputs)} inputs; "
            "send one per input, or none",
            [{"field": "raw_input_contents", "problem": "one entry per input"}],
        )
    tensors = []
    for i, tensor in enumerate(request.inputs):
        where = f"inputs[{i}]"
        values: Any
        if raw:
            raw_field = f"raw_input_contents[{i}]"
            values = raw_values(tensor.datatype, raw[i], f"{raw_field} ({where})", raw_field)
        else:
            field = _CONTENTS.get(tensor.datatype)
            values = list(getattr(tensor.contents, field)) if field else []
        tensors.append(Tensor(tensor.datatype, list(tensor.shape), values, where))
    return tensors


def _classification(output: Any, index: int) -> int:
    param = output.parameters.get("classification")
    if param is None:
        return 0
    if param.WhichOneof("parameter_choice") not in ("int64_param", "uint64_param"):
        raise InvalidRequest(
            f"outputs[{index}].parameters.classification must be an integer",
            [{"field": f"outputs[{index}].parameters.classification", "problem": "not an int"}],
        )
    return int(param.int64_param or param.uint64_param)


def encode_result(result: InferResult, request_id: str) -> pb.ModelInferResponse:
    m = result.model
    response = pb.ModelInferResponse(model_name=m.name, model_version=m.version, id=request_id)
    response.parameters["prediction_id"].string_param = result.prediction_id
    for output in result.outputs:
        response.outputs.add(name=output.name, datatype=output.datatype, shape=output.shape)
        response.raw_output_contents.append(output.as_raw())
    return response


# ---- wiring: generic handlers, metrics and error mapping -------------------------------------

_MESSAGES: dict[str, tuple[Any, Any]] = {
    "ServerLive": (pb.ServerLiveRequest, pb.ServerLiveResponse),
    "ServerReady": (pb.ServerReadyRequest, pb.ServerReadyResponse),
    "ModelReady": (pb.ModelReadyRequest, pb.ModelReadyResponse),
    "ServerMetadata": (pb.ServerMetadataRequest, pb.ServerMetadataResponse),
    "ModelMetadata": (pb.ModelMetadataRequest, pb.ModelMetadataResponse),
    "ModelInfer": (pb.ModelInferRequest, pb.ModelInferResponse),
}


def _unary(
    plane: DataPlane, method: str, call: Callable[[Any], Any]
) -> Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]]:
    endpoint = f"/{SERVICE_NAME}/{method}"
    metrics = plane.metrics

    async def handle(request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            response = call(request)
        except ServerError as error:
            metrics.count_error(endpoint, error.kind)
            metrics.count_request(endpoint, error.status_code)
            await context.abort(STATUS_CODES.get(error.status_code, grpc.StatusCode.UNKNOWN),
                                error.message)  # fmt: skip
        except Exception:
            log.exception("unexpected error in %s", endpoint)
            metrics.count_error(endpoint, ServerError.kind)
            metrics.count_request(endpoint, ServerError.status_code)
            await context.abort(
                grpc.StatusCode.INTERNAL,
                "internal error while handling the request; see the server log",
            )
        metrics.count_request(endpoint, 200)
        return response

    return handle


def generic_handler(plane: DataPlane) -> grpc.GenericRpcHandler:
    servicer = InferenceServicer(plane)
    handlers = {
        method: grpc.unary_unary_rpc_method_handler(
            _unary(plane, method, getattr(servicer, method)),
            request_deserializer=request.FromString,
            response_serializer=response.SerializeToString,
        )
        for method, (request, response) in _MESSAGES.items()
    }
    return grpc.method_handlers_generic_handler(SERVICE_NAME, handlers)


def _age_options(max_age: float) -> list[tuple[str, int]]:
    """GOAWAY after ``max_age`` seconds (calls in flight get as long again to finish)."""
    if max_age <= 0:
        return []
    ms = max(1, int(max_age * 1000))
    return [("grpc.max_connection_age_ms", ms), ("grpc.max_connection_age_grace_ms", ms)]


def create_grpc_server(plane: DataPlane) -> grpc.aio.Server:
    """A grpc.aio server on ``settings.host:settings.grpc_port`` (call ``start()`` on it).

    Calls past MAX_CONCURRENCY are refused with RESOURCE_EXHAUSTED by grpc itself; bodies over
    MAX_BODY_BYTES with RESOURCE_EXHAUSTED too.
    """
    settings = plane.settings
    server = grpc.aio.server(
        maximum_concurrent_rpcs=settings.max_concurrency,
        options=[
            ("grpc.max_receive_message_length", settings.max_body_bytes),
            ("grpc.so_reuseport", 0),
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.max_connection_idle_ms", GRPC_IDLE_MS),
            *_age_options(settings.max_connection_age),
        ],
    )
    server.add_generic_rpc_handlers((generic_handler(plane),))
    host = settings.host if ":" not in settings.host else f"[{settings.host}]"
    server.add_insecure_port(f"{host}:{settings.grpc_port}")
    return server
