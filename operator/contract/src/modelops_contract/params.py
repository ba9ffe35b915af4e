"""The model parameter file: a fitted model as plain numbers, which nothing can execute.

A model artifact's model file (``model.params``) holds what the model server needs to predict
and nothing else: a JSON header describing the model and named arrays of little-endian
float64/int64 numbers. Loading it parses JSON and copies bytes; no object is constructed from
the file's contents (unlike pickle/joblib, where loading a file can run arbitrary code).

Layout: ``MAGIC | u64 LE header length | header (UTF-8 JSON) | array data``, the header being
``{"model": {...}, "arrays": {name: {"dtype", "shape", "offset", "length"}}}`` with offsets
into the data part. Arrays are laid out in name order, back to back, so the same model always
gives the same bytes. :func:`decode` checks every length, offset, shape and type before it
returns anything.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .artifact import ArtifactError

MAGIC = b"MODELOPS-PARAMS1"
# The two element types a parameter file may hold, as numpy spells them.
DTYPES: dict[str, int] = {"<f8": 8, "<i8": 8}
# Bounds a hostile file cannot exceed (an Iris forest of 100 trees is ~60 KB).
MAX_HEADER_BYTES = 1 << 20
MAX_ARRAYS = 64
MAX_DIMENSIONS = 4
_LENGTH = struct.Struct("<Q")


@dataclass(frozen=True)
class Array:
    """One named array: element type, shape and its raw little-endian bytes."""

    dtype: str
    shape: tuple[int, ...]
    data: bytes

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise ArtifactError(f"array type {self.dtype!r} is not one of {sorted(DTYPES)}")
        if math.prod(self.shape) * DTYPES[self.dtype] != len(self.data):
            raise ArtifactError(
                f"array of shape {list(self.shape)} and type {self.dtype} needs "
                f"{math.prod(self.shape) * DTYPES[self.dtype]} bytes, not {len(self.data)}"
            )


def encode(model: Mapping[str, Any], arrays: Mapping[str, Array]) -> bytes:
    """The parameter file for `model` (a JSON-able description) and its arrays."""
    index: dict[str, dict[str, Any]] = {}
    offset = 0
    for name in sorted(arrays):
        array = arrays[name]
        index[name] = {
            "dtype": array.dtype,
            "shape": list(array.shape),
            "offset": offset,
            "length": len(array.data),
        }
        offset += len(array.data)
    header = json.dumps(
        {"model": dict(model), "arrays": index}, sort_keys=True, separators=(",", ":")
    ).encode()
    data = b"".join(arrays[name].data for name in sorted(arrays))
    return MAGIC + _LENGTH.pack(len(header)) + header + data


def decode(blob: bytes) -> tuple[dict[str, Any], dict[str, Array]]:
    """Parse a parameter file into (model description, arrays); raise ArtifactError if bad."""
    if not blob.startswith(MAGIC):
        raise ArtifactError(
            "model file is not a modelops parameter file (pickle, joblib and other formats "
            "are refused: they can run code when loaded); retrain the version with this "
            "release's trainer"
        )
    start = len(MAGIC) + _LENGTH.size
    if len(blob) < start:
        raise ArtifactError("model parameter file is truncated")
    (size,) = _LENGTH.unpack_from(blob, len(MAGIC))
    if size > MAX_HEADER_BYTES or start + size > len(blob):
        raise ArtifactError("model parameter file has a header longer than the file")
    try:
        header = json.loads(blob[start : start + size])
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"model parameter file has an unreadable header: {exc}") from None
    if not isinstance(header, dict) or not isinstance(header.get("model"), dict):
        raise ArtifactError("model parameter file header has no model description")
    data = blob[start + size :]
    arrays = _arrays(header.get("arrays"), data)
    return header["model"], arrays


def _arrays(index: Any, data: bytes) -> dict[str, Array]:
    if not isinstance(index, dict) or len(index) > MAX_ARRAYS:
        raise ArtifactError("model parameter file has no valid array index")
    arrays: dict[str, Array] = {}
    expected_offset = 0
    for name in sorted(index):
        entry = index[name]
        if not isinstance(entry, dict):
            raise ArtifactError(f"model parameter array {name!r} has no description")
        shape = entry.get("shape")
        offset, length = entry.get("offset"), entry.get("length")
        if (
            not isinstance(shape, list)
            or len(shape) > MAX_DIMENSIONS
            or not all(_count(n) for n in shape)
            or not _count(offset)
            or not _count(length)
        ):
            raise ArtifactError(f"model parameter array {name!r} has an invalid shape or place")
        # Back to back, in name order: no gaps, overlaps or trailing bytes.
        if offset != expected_offset or offset + length > len(data):
            raise ArtifactError(f"model parameter array {name!r} lies outside its place")
        expected_offset = offset + length
        arrays[name] = Array(str(entry.get("dtype")), tuple(shape), data[offset : offset + length])
    if expected_offset != len(data):
        raise ArtifactError("model parameter file has bytes that belong to no array")
    return arrays


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def probe_rows(low: Sequence[float], high: Sequence[float], count: int) -> list[list[float]]:
    """`count` rows spread over (and 25 % around) the box [low, high], the same everywhere.

    The trainer records its model's answers on these rows in the parameter file; the server
    recomputes them before it serves. Plain float arithmetic (a Weyl sequence), so every
    component computes exactly the same rows without sharing a random generator.
    """
    steps = (0.7548776662466927, 0.5698402909980532, 0.4301597090019468, 0.2451223337533073)
    rows = []
    for i in range(count):
        row = []
        for j, (lo, hi) in enumerate(zip(low, high, strict=True)):
            span = max(hi - lo, 1e-3)
            fraction = ((i + 0.5) * steps[j % len(steps)]) % 1.0
            row.append(max(lo - 0.25 * span + 1.5 * span * fraction, 1e-3))
        rows.append(row)
    return rows
