"""The Open Inference Protocol's gRPC messages the load generator sends and reads, as bytes.

The request is a handful of protobuf fields (model name, one FP32 input tensor with its raw
bytes), so it is written with the protobuf wire format directly, as the HTTP client writes its
request head: no generated code, no message objects per request, and no second copy of the
``inference.*`` messages beside the server's (one process's protobuf pool cannot hold both).
Field numbers are the protocol's (model-server/src/modelops_server/oip/
open_inference_grpc.proto); tests/loadgen/test_model_server.py decodes these bytes with the
server's generated messages and runs the generator against a real server. grpc itself is
imported only by grpcclient.py, when a run targets gRPC.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from modelops_contract.oip import decode_bytes_tensor


@dataclass(frozen=True)
class GrpcEndpoint:
    """A gRPC target, ``grpc://host:port``."""

    url: str
    target: str  # host:port for grpc

    @classmethod
    def parse(cls, url: str) -> GrpcEndpoint:
        parts = urlsplit(url)
        if parts.scheme != "grpc" or not parts.hostname or parts.port is None:
            raise ValueError(f"not a gRPC target like grpc://127.0.0.1:8001: {url!r}")
        host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
        return cls(url, f"{host}:{parts.port}")

    @property
    def key(self) -> tuple[str, str, int]:
        host, _, port = self.target.rpartition(":")
        return ("grpc", host, int(port))


# ---- protobuf wire format: the few fields used ---------------------------------------------


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited field (wire type 2)."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def encode_infer_request(model_name: str, rows: Sequence[Sequence[float]]) -> bytes:
    """ModelInferRequest{model_name, inputs: [input-0 FP32 [N, 4]], raw_input_contents}."""
    shape = _varint(len(rows)) + _varint(4)
    tensor = _field(1, b"input-0") + _field(2, b"FP32") + _field(3, shape)
    values = [v for row in rows for v in row]
    raw = struct.pack(f"<{len(values)}f", *values)
    return _field(1, model_name.encode()) + _field(5, tensor) + _field(7, raw)


def _fields(data: bytes) -> list[tuple[int, int, bytes | int]]:
    """(number, wire type, value) of each field of one message."""
    out: list[tuple[int, int, bytes | int]] = []
    i, end = 0, len(data)
    while i < end:
        key, i = _read_varint(data, i)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, i = _read_varint(data, i)
            out.append((number, wire, value))
        elif wire == 2:
            size, i = _read_varint(data, i)
            if i + size > end:
                raise ValueError("truncated field")
            out.append((number, wire, data[i : i + size]))
            i += size
        elif wire in (1, 5):
            width = 8 if wire == 1 else 4
            out.append((number, wire, data[i : i + width]))
            i += width
        else:
            raise ValueError(f"unsupported wire type {wire}")
    return out


def _read_varint(data: bytes, i: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if i >= len(data):
            raise ValueError("truncated varint")
        byte = data[i]
        i += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, i
        shift += 7


def decode_labels(response: bytes) -> list[str]:
    """The BYTES output's strings from a ModelInferResponse (raw_output_contents)."""
    fields = _fields(response)
    outputs = [v for n, w, v in fields if n == 5 and w == 2]
    raw = [v for n, w, v in fields if n == 6 and w == 2]
    for index, output in enumerate(outputs):
        assert isinstance(output, bytes)
        datatype = next((v for n, w, v in _fields(output) if n == 2 and w == 2), b"")
        if datatype != b"BYTES":
            continue
        if index >= len(raw):
            raise ValueError("the label output has no raw_output_contents")
        blob = raw[index]
        assert isinstance(blob, bytes)
        return decode_bytes_tensor(blob)
    raise ValueError("no BYTES output in the answer")
