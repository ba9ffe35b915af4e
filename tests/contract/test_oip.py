"""The OIP binary BYTES tensor that the server writes and the shadow and load generator read."""

from __future__ import annotations

import pytest

from modelops_contract.oip import decode_bytes_tensor, encode_bytes_tensor

pytestmark = pytest.mark.unit


def test_bytes_tensor_round_trip() -> None:
    labels = ["setosa", "versicolor", "", "virginica", "é"]
    raw = encode_bytes_tensor(labels)
    assert raw[:4] == (6).to_bytes(4, "little") and raw[4:10] == b"setosa"
    assert decode_bytes_tensor(raw) == labels
    assert decode_bytes_tensor(b"") == []


@pytest.mark.parametrize("cut", [2, 7], ids=["inside-a-length", "inside-a-value"])
def test_a_cut_off_bytes_tensor_is_an_error_not_a_short_label(cut: int) -> None:
    raw = encode_bytes_tensor(["setosa", "virginica"])
    with pytest.raises(ValueError, match="BYTES tensor"):
        decode_bytes_tensor(raw[: 10 + cut])
