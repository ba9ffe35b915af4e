"""Request bodies for the four endpoints and parsers for their answers.

`uniform` reproduces the seed's load tester (each feature uniform in the Iris ranges);
`iris` samples real rows with their true labels, so answers can be checked (online accuracy).
Bodies are built as bytes directly: this runs once per request on the hot path.
"""

from __future__ import annotations

import csv
import json
import random
from dataclasses import dataclass
from importlib import resources
from typing import Any

from modelops_contract.iris import FEATURE_NAMES, FEATURE_RANGES
from modelops_loadgen.oip_wire import decode_labels, encode_infer_request
from modelops_loadgen.settings import Endpoint, PayloadKind

Row = tuple[float, float, float, float]


@dataclass(frozen=True)
class IrisRow:
    features: Row
    species: str


def load_iris_rows() -> list[IrisRow]:
    """The 150 Iris rows shipped as package data (generated once from scikit-learn's copy)."""
    text = resources.files("modelops_loadgen").joinpath("data/iris.csv").read_text("utf-8")
    rows: list[IrisRow] = []
    reader = csv.DictReader(text.splitlines())
    for rec in reader:
        feats = (
            float(rec["sepal_length"]),
            float(rec["sepal_width"]),
            float(rec["petal_length"]),
            float(rec["petal_width"]),
        )
        rows.append(IrisRow(feats, rec["species"]))
    return rows


def _row_json(r: Row) -> str:
    return (
        f'{{"sepal_length":{r[0]:.4g},"sepal_width":{r[1]:.4g},'
        f'"petal_length":{r[2]:.4g},"petal_width":{r[3]:.4g}}}'
    )


class PayloadSource:
    """Produces (body, expected labels or None) for each request."""

    def __init__(
        self,
        kind: PayloadKind,
        endpoint: Endpoint,
        rows_per_request: int,
        rng: random.Random,
        model_name: str = "iris",
    ) -> None:
        if endpoint == "predict" and rows_per_request != 1:
            raise ValueError("the predict endpoint takes exactly one row per request")
        self.kind = kind
        self.endpoint = endpoint
        self.rows_per_request = rows_per_request
        self.model_name = model_name
        self._rng = rng
        self._iris = load_iris_rows() if kind == "iris" else []
        # One pre-encoded body per Iris row for the single-row seed endpoint: no work per request.
        self._iris_predict = [_row_json(r.features).encode() for r in self._iris]
        lows = [FEATURE_RANGES[f][0] for f in FEATURE_NAMES]
        spans = [FEATURE_RANGES[f][1] - FEATURE_RANGES[f][0] for f in FEATURE_NAMES]
        self._lows = lows
        self._spans = spans

    def _uniform_row(self) -> Row:
        r = self._rng.random
        lo, sp = self._lows, self._spans
        return (
            round(lo[0] + sp[0] * r(), 2),
            round(lo[1] + sp[1] * r(), 2),
            round(lo[2] + sp[2] * r(), 2),
            round(lo[3] + sp[3] * r(), 2),
        )

    def rows(self) -> tuple[list[Row], list[str] | None]:
        n = self.rows_per_request
        if self.kind == "uniform":
            return [self._uniform_row() for _ in range(n)], None
        picks = [self._iris[int(self._rng.random() * len(self._iris))] for _ in range(n)]
        return [p.features for p in picks], [p.species for p in picks]

    def next(self) -> tuple[bytes, list[str] | None]:
        if self.endpoint == "predict" and self.kind == "iris":
            i = int(self._rng.random() * len(self._iris))
            return self._iris_predict[i], [self._iris[i].species]
        rows, expected = self.rows()
        if self.endpoint == "grpc":
            return encode_infer_request(self.model_name, rows), expected
        return encode_body(self.endpoint, rows), expected


def encode_body(endpoint: Endpoint, rows: list[Row]) -> bytes:
    if endpoint == "predict":
        if len(rows) != 1:
            raise ValueError("the predict endpoint takes exactly one row")
        return _row_json(rows[0]).encode()
    if endpoint == "batch":
        return ('{"instances":[' + ",".join(_row_json(r) for r in rows) + "]}").encode()
    data = ",".join(f"{v:.4g}" for r in rows for v in r)
    return (
        '{"inputs":[{"name":"input-0","shape":[' + str(len(rows)) + ',4],"datatype":"FP32",'
        '"data":[' + data + "]}]}"
    ).encode()


def endpoint_path(endpoint: Endpoint, model_name: str) -> str:
    if endpoint == "grpc":
        return ""  # the RPC names the method; the model is in the message
    if endpoint == "predict":
        return "/predict"
    if endpoint == "batch":
        return "/predict/batch"
    return f"/v2/models/{model_name}/infer"


class BadResponse(ValueError):
    """A 2xx answer whose body is not what the endpoint promises."""


def _labels_from_oip_output(out: dict[str, Any]) -> list[str] | None:
    data = out.get("data")
    if out.get("datatype") != "BYTES" or not isinstance(data, list):
        return None
    flat: list[Any] = []
    for item in data:  # OIP allows nested row-major data as well as flat
        flat.extend(item if isinstance(item, list) else [item])
    if not all(isinstance(x, str) for x in flat):
        return None
    return [str(x) for x in flat]


def parse_labels(endpoint: Endpoint, body: bytes, rows: int) -> list[str]:
    """Predicted species from an answer; raises BadResponse when the shape is wrong."""
    return parse_answer(endpoint, body, rows)[0]


def feedback_body(prediction_id: str, species: list[str]) -> bytes:
    """The body of POST /feedback: the true species of a prediction's rows."""
    return json.dumps(
        {"prediction_id": prediction_id, "species": species[0] if len(species) == 1 else species},
        separators=(",", ":"),
    ).encode()


def _prediction_id(doc: dict[str, Any], endpoint: Endpoint) -> str:
    where = doc.get("parameters") if endpoint == "infer" else doc
    found = where.get("prediction_id") if isinstance(where, dict) else None
    return found if isinstance(found, str) else ""


def parse_answer(endpoint: Endpoint, body: bytes, rows: int) -> tuple[list[str], str]:
    """Predicted species and the server's prediction id ("" if none) from an answer."""
    if endpoint == "grpc":
        return _grpc_labels(body, rows), ""
    try:
        doc = json.loads(body)
    except ValueError as exc:
        raise BadResponse(f"body is not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise BadResponse("body is not a JSON object")
    return _json_labels(endpoint, doc, rows), _prediction_id(doc, endpoint)


def _grpc_labels(body: bytes, rows: int) -> list[str]:
    try:
        decoded = decode_labels(body)
    except ValueError as exc:
        raise BadResponse(f"ModelInferResponse: {exc}") from None
    if len(decoded) != rows:
        raise BadResponse(f"label output has {len(decoded)} values, expected {rows}")
    return decoded


def _json_labels(endpoint: Endpoint, doc: dict[str, Any], rows: int) -> list[str]:
    if endpoint == "predict":
        species = doc.get("species")
        if not isinstance(species, str):
            raise BadResponse("no string 'species' in the answer")
        return [species]
    if endpoint == "batch":
        preds = doc.get("predictions")
        if not isinstance(preds, list) or len(preds) != rows:
            raise BadResponse(f"'predictions' is not a list of {rows}")
        labels: list[str] = []
        for p in preds:
            s = p.get("species") if isinstance(p, dict) else None
            if not isinstance(s, str):
                raise BadResponse("a prediction has no string 'species'")
            labels.append(s)
        return labels
    outputs = doc.get("outputs")
    if not isinstance(outputs, list):
        raise BadResponse("no 'outputs' list in the OIP answer")
    for out in outputs:
        if isinstance(out, dict):
            got = _labels_from_oip_output(out)
            if got is not None:
                if len(got) != rows:
                    raise BadResponse(f"label output has {len(got)} values, expected {rows}")
                return got
    raise BadResponse("no BYTES label output in the OIP answer")
