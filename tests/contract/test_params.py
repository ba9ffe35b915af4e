"""The model parameter file: a strict, deterministic container of numbers."""

from __future__ import annotations

import json
import struct

import pytest

from modelops_contract.artifact import ArtifactError
from modelops_contract.params import MAGIC, Array, decode, encode, probe_rows

pytestmark = pytest.mark.unit


def f8(*values: float) -> Array:
    return Array("<f8", (len(values),), struct.pack(f"<{len(values)}d", *values))


def sample() -> bytes:
    return encode(
        {"kind": "test", "classes": ["a", "b"]},
        {"w": f8(1.0, -2.5), "b": Array("<i8", (1, 2), struct.pack("<2q", 7, -1))},
    )


def test_round_trip_and_determinism():
    blob = sample()
    assert blob == sample()
    model, arrays = decode(blob)
    assert model == {"kind": "test", "classes": ["a", "b"]}
    assert arrays["w"] == f8(1.0, -2.5)
    assert arrays["b"].shape == (1, 2)
    assert struct.unpack("<2q", arrays["b"].data) == (7, -1)


def test_array_must_match_its_shape_and_type():
    with pytest.raises(ArtifactError, match="needs 16 bytes, not 8"):
        Array("<f8", (2,), bytes(8))
    with pytest.raises(ArtifactError, match="is not one of"):
        Array("|O", (1,), bytes(8))


def header_of(blob: bytes) -> dict:
    (size,) = struct.unpack_from("<Q", blob, len(MAGIC))
    return json.loads(blob[len(MAGIC) + 8 : len(MAGIC) + 8 + size])


def with_header(blob: bytes, header: dict) -> bytes:
    (size,) = struct.unpack_from("<Q", blob, len(MAGIC))
    data = blob[len(MAGIC) + 8 + size :]
    raw = json.dumps(header).encode()
    return MAGIC + struct.pack("<Q", len(raw)) + raw + data


def moved(offset_b: int) -> dict:
    header = header_of(sample())
    header["arrays"]["b"]["offset"] = offset_b
    return header


@pytest.mark.parametrize(
    ("blob", "message"),
    [
        (b"\x80\x04\x95pickle", "not a modelops parameter file"),
        (MAGIC + b"\x01", "truncated"),
        (MAGIC + struct.pack("<Q", 10**9) + b"{}", "header longer than the file"),
        (MAGIC + struct.pack("<Q", 2) + b"[]", "no model description"),
        (MAGIC + struct.pack("<Q", 3) + b"{x}", "unreadable header"),
        (with_header(sample(), moved(8)), "lies outside its place"),
        (sample() + b"extra", "belong to no array"),
        (
            with_header(sample(), {**header_of(sample()), "arrays": {"w": {"shape": "x"}}}),
            "invalid shape",
        ),
    ],
)
def test_decode_refuses_anything_malformed(blob: bytes, message: str):
    with pytest.raises(ArtifactError, match=message):
        decode(blob)


def test_a_declared_type_that_does_not_fit_the_bytes_is_refused():
    header = header_of(sample())
    header["arrays"]["w"]["dtype"] = "<i4"
    with pytest.raises(ArtifactError, match="is not one of"):
        decode(with_header(sample(), header))


def test_probe_rows_are_fixed_and_cover_the_box():
    low, high = [4.3, 2.0, 1.0, 0.1], [7.9, 4.4, 6.9, 2.5]
    rows = probe_rows(low, high, 32)
    assert rows == probe_rows(low, high, 32)
    assert len(rows) == 32 and all(len(r) == 4 for r in rows)
    for j in range(4):
        column = [r[j] for r in rows]
        span = high[j] - low[j]
        assert min(column) < low[j] and max(column) > high[j]  # the margins are probed too
        assert low[j] - 0.25 * span - 1e-9 <= min(column) and max(column) <= high[j] + 0.25 * span
    assert min(min(r) for r in rows) >= 1e-3
