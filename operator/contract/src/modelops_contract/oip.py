"""The Open Inference Protocol's binary form of a BYTES tensor, as the server writes it (REST
binary extension, gRPC raw_output_contents) and its clients (the shadowing server, the load
generator) read it: each value a 4-byte little-endian length, then its bytes."""

from __future__ import annotations

from collections.abc import Iterable


def encode_bytes_tensor(values: Iterable[object]) -> bytes:
    parts = []
    for value in values:
        encoded = str(value).encode()
        parts.append(len(encoded).to_bytes(4, "little") + encoded)
    return b"".join(parts)


def decode_bytes_tensor(raw: bytes) -> list[str]:
    """The strings of a BYTES tensor; ValueError if the bytes end inside a value."""
    values, offset = [], 0
    while offset < len(raw):
        if offset + 4 > len(raw):
            raise ValueError(f"a BYTES tensor ends inside a length prefix at byte {offset}")
        size = int.from_bytes(raw[offset : offset + 4], "little")
        end = offset + 4 + size
        if end > len(raw):
            raise ValueError(f"a BYTES tensor value of {size} bytes at byte {offset} is cut off")
        values.append(raw[offset + 4 : end].decode())
        offset = end
    return values
