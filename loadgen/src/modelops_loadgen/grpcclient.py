"""OIP gRPC ``ModelInfer`` for the load generator: grpc.aio channels carrying prepared bytes
(oip_wire.py encodes and decodes them). Imported only when a run uses ``--endpoint grpc``."""

from __future__ import annotations

import asyncio

import grpc

from modelops_loadgen.httpclient import ConnectError, HttpClientError, RequestTimeout
from modelops_loadgen.oip_wire import GrpcEndpoint

METHOD = "/inference.GRPCInferenceService/ModelInfer"
# The conventional HTTP equivalents of gRPC status codes (as grpc-gateway maps them), so the
# generator's per-status counts read the same for both transports.
HTTP_STATUS = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.UNAVAILABLE: 503,
}


class GrpcClient:
    """One channel per target (HTTP/2 multiplexes every request in flight over it)."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.resent = 0  # gRPC's channel retries a call it never sent by itself: nothing to count
        self._channels: dict[
            tuple[str, str, int], tuple[grpc.aio.Channel, grpc.aio.UnaryUnaryMultiCallable]
        ] = {}
        self._closing: set[asyncio.Task[None]] = set()

    def _call(self, ep: GrpcEndpoint) -> grpc.aio.UnaryUnaryMultiCallable:
        entry = self._channels.get(ep.key)
        if entry is None:
            channel = grpc.aio.insecure_channel(ep.target)
            entry = self._channels[ep.key] = (channel, channel.unary_unary(METHOD))
        return entry[1]

    async def post(self, ep: GrpcEndpoint, body: bytes) -> tuple[int, bytes]:
        """One ModelInfer call; (200, response bytes), (HTTP-equivalent status, details)."""
        try:
            response: bytes = await self._call(ep)(body, timeout=self.timeout)
        except grpc.aio.AioRpcError as exc:
            code = exc.code()
            if code == grpc.StatusCode.DEADLINE_EXCEEDED:
                raise RequestTimeout(f"no answer within {self.timeout:g} s") from None
            details = exc.details() or ""
            if code == grpc.StatusCode.UNAVAILABLE and "connect" in details.lower():
                raise ConnectError(f"cannot connect to {ep.target}: {details}") from None
            status = HTTP_STATUS.get(code)
            if status is None:
                raise HttpClientError(f"{code.name}: {details}") from None
            return status, details.encode()
        return 200, response

    def drop_idle(self, keep: set[tuple[str, str, int]]) -> None:
        for key in [k for k in self._channels if k not in keep]:
            channel, _ = self._channels.pop(key)
            task = asyncio.ensure_future(channel.close())
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    async def close(self) -> None:
        for channel, _ in self._channels.values():
            await channel.close()
        self._channels.clear()
