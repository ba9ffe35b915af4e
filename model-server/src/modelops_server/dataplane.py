"""The transport-free data plane: validate → predict → record metrics, for REST and gRPC alike.

Endpoint handlers (rest.py) and gRPC servicers (grpc_service.py) only decode their wire format
into the plain values below and encode what comes back; every rule about tensors, model names,
versions, readiness and limits lives here once, and raises the errors of errors.py (each
transport maps them to its own status codes).
"""

from __future__ import annotations

import asyncio
import logging
import struct
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from modelops_contract.oip import encode_bytes_tensor

from . import __version__
from .errors import InvalidRequest, NotFound, NotReady, PayloadTooLarge
from .feedback import FeedbackStore, Verdict
from .metrics import Metrics
from .model import FEATURE_MAX_CM, FEATURE_MIN_CM, LoadedModel, load_model
from .predictor import Matrix
from .settings import ServerSettings
from .shadow import Shadow

log = logging.getLogger("modelops_server.dataplane")
SERVICE = "modelops-server"
INPUT_NAME = "input-0"
OIP_OUTPUTS = ("predict", "predict_proba")
FEATURES = ("sepal_length", "sepal_width", "petal_length", "petal_width")
INPUT_DATATYPES = ("FP32", "FP64")


# Plain (not frozen) dataclasses: a frozen __init__ costs ~3x, and these are made per request.
@dataclass(slots=True)
class Tensor:
    """One OIP input tensor as a transport decoded it: values flat, nested, or raw bytes."""

    datatype: str
    shape: Sequence[int]
    data: Sequence[Any] | np.ndarray
    field: str = "inputs[0]"  # how the transport names this tensor in error messages


@dataclass(slots=True)
class RequestedOutput:
    name: str
    classification: int = 0  # Triton's classification extension: top-k "score:index:label"


@dataclass(slots=True)
class OutputTensor:
    name: str
    datatype: str  # "BYTES" (labels, or classification strings) or "FP64"
    shape: list[int]
    values: np.ndarray | list[Any]  # an array, or the values flat in row-major order

    def as_list(self) -> list[Any]:
        return self.values if isinstance(self.values, list) else self.values.ravel().tolist()

    def as_raw(self) -> bytes:
        """The OIP binary form: little-endian numbers, or 4-byte-length-prefixed strings."""
        if self.datatype == "BYTES":
            return encode_bytes_tensor(self.values)
        return np.ascontiguousarray(self.values, dtype="<f8").tobytes()


@dataclass(slots=True)
class InferResult:
    model: LoadedModel
    outputs: list[OutputTensor]
    prediction_id: str
    indices: list[int]


@dataclass(slots=True)
class Prediction:
    """Rows predicted by the seed API: class indices and the winning class's probability."""

    model: LoadedModel
    indices: list[int]
    top: list[float]
    elapsed: float
    prediction_id: str


class DataPlane:
    """One served model: readiness, metadata and predictions, shared by every transport."""

    def __init__(
        self, settings: ServerSettings, model: LoadedModel | None, metrics: Metrics
    ) -> None:
        self.settings = settings
        self.model = model
        self.metrics = metrics
        self.ready = False
        self.max_rows = settings.max_batch_size
        self.feedback = FeedbackStore(settings.feedback_capacity, settings.feedback_ttl_seconds)
        pending = self.feedback.pending
        metrics.count_pending(lambda: len(pending))
        self.shadow: Shadow | None = None
        if settings.shadow_url:
            self.shadow = Shadow(settings, metrics, self.feedback)

    # ---- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        """Load (if not given) and warm the model, then report ready."""
        if self.ready:
            return
        settings = self.settings
        if self.model is None:
            self.model = await asyncio.to_thread(
                load_model,
                settings.artifact_dir,
                settings.model_name,
                expected_sha256=settings.model_sha256,
            )
        loaded = self.model
        if not loaded.warm:
            await asyncio.to_thread(loaded.warm_up)
        self.metrics.set_model(loaded)
        if self.shadow is not None:
            self.shadow.start(loaded)
        self.ready = True
        self.metrics.set_ready(loaded, True)
        log.info(
            "model ready",
            extra={
                "model": loaded.name,
                "version": loaded.version,
                "algorithm": loaded.algorithm,
                "predictor": loaded.predictor_reason,
            },
        )

    def stop(self) -> None:
        self.ready = False
        if self.shadow is not None:
            self.shadow.stop()
        if self.model is not None:
            self.metrics.set_ready(self.model, False)

    # ---- probes and metadata ----------------------------------------------------------------

    def serving(self) -> LoadedModel:
        model = self.model
        if model is None or not self.ready:
            raise NotReady("the model is not loaded yet; retry once GET /readyz answers 200")
        return model

    def served(self, name: str, version: str | None) -> LoadedModel:
        m = self.serving()
        if name != m.name:
            raise NotFound(f"model {name!r} is not served here; this server serves {m.name!r}")
        if version and version != m.version:
            raise NotFound(
                f"version {version!r} of model {name!r} is not served here; "
                f"this server serves version {m.version!r}"
            )
        return m

    def server_metadata(self) -> dict[str, Any]:
        return {"name": SERVICE, "version": __version__, "extensions": []}

    def model_metadata(self, name: str, version: str | None) -> dict[str, Any]:
        m = self.served(name, version)
        return {
            "name": m.name,
            "versions": [m.version],
            "platform": "sklearn",
            "inputs": [{"name": INPUT_NAME, "datatype": "FP64", "shape": [-1, len(FEATURES)]}],
            "outputs": [
                {"name": "predict", "datatype": "BYTES", "shape": [-1]},
                {"name": "predict_proba", "datatype": "FP64", "shape": [-1, len(m.classes)]},
            ],
            "parameters": {"classes": list(m.classes), "features": list(m.features)},
        }

    def describe(self) -> dict[str, Any] | None:
        m = self.model
        if m is None:
            return None
        return {
            "name": m.name,
            "version": m.version,
            "algorithm": m.algorithm,
            "accuracy": m.accuracy,
            "classes": list(m.classes),
            "features": list(m.features),
            "predictor": m.predictor_reason,
        }

    # ---- predictions --------------------------------------------------------------------------

    def check_rows(self, rows: int) -> None:
        if rows > self.max_rows:
            raise PayloadTooLarge(
                f"batch of {rows} instances is over the limit of {self.max_rows}; "
                "split it into smaller requests"
            )

    def predict_row(self, row: list[float], started: float) -> Prediction:
        """One seed API row, already validated field by field by the request schema."""
        m = self.serving()
        index, proba = m.predict_one(row)
        elapsed = time.perf_counter() - started
        self.metrics.observe_predictions((index,), elapsed)
        idx = [index]
        return Prediction(m, idx, [proba[index]], elapsed, self.feedback.issue(idx, started))

    def predict_rows(self, x: Matrix, started: float) -> Prediction:
        """Seed API rows, already validated field by field by the request schema."""
        m = self.serving()
        indices, proba = m.predict(x)
        idx = indices.tolist()
        if len(idx) == 1:
            top = [float(proba[0, idx[0]])]
        else:
            top = proba[np.arange(len(idx)), indices].tolist()
        elapsed = time.perf_counter() - started
        self.metrics.observe_predictions(idx, elapsed)
        return Prediction(m, idx, top, elapsed, self.feedback.issue(idx, started))

    def infer(
        self,
        name: str,
        version: str | None,
        inputs: Sequence[Tensor],
        outputs: Sequence[RequestedOutput] | None,
        started: float,
    ) -> InferResult:
        m = self.served(name, version)
        if len(inputs) != 1:
            raise InvalidRequest(
                f"inputs holds {len(inputs)} tensors; this model takes exactly one "
                f"({INPUT_NAME}, shape [N, {len(FEATURES)}])",
                [{"field": "inputs", "problem": "must hold exactly one tensor"}],
            )
        row = _one_row(inputs[0])
        x = self.matrix(inputs[0]) if row is None else None
        wanted = outputs or _DEFAULT_OUTPUTS
        unknown = [w.name for w in wanted if w.name not in OIP_OUTPUTS]
        if unknown:
            raise InvalidRequest(
                f"unknown output(s) {unknown}; this model offers {list(OIP_OUTPUTS)}",
                [{"field": "outputs", "problem": f"unknown output {u!r}"} for u in unknown],
            )
        proba: Matrix | list[float]
        if x is None or len(x) == 1:
            if row is None:
                assert x is not None
                row = x[0].tolist()
            index, proba = m.predict_one(row)
            idx = [index]
        else:
            indices, proba = m.predict(x)
            idx = indices.tolist()
        self.metrics.observe_predictions(idx, time.perf_counter() - started)
        tensors = [_output(m, w, idx, proba) for w in wanted]
        return InferResult(m, tensors, self.feedback.issue(idx, started), idx)

    # ---- feedback: live accuracy ------------------------------------------------------------

    def record_feedback(self, prediction_id: str, species: Sequence[str]) -> Verdict:
        """Count the true species of a prediction's rows (once per id) against its answers."""
        m = self.serving()
        index = {c: i for i, c in enumerate(m.classes)}
        unknown = [s for s in species if s not in index]
        if unknown:
            raise InvalidRequest(
                f"species {unknown[0]!r} is not a class of this model; use one of "
                f"{list(m.classes)}",
                [{"field": "species", "problem": f"unknown species {u!r}"} for u in unknown],
            )
        indices, started, shadow = self.feedback.take(prediction_id)
        if len(species) != len(indices):
            self.feedback.restore(prediction_id, (indices, started, shadow))
            raise InvalidRequest(
                f"prediction {prediction_id!r} classified {len(indices)} rows but the feedback "
                f"names {len(species)} species; send one per row, in the request's order",
                [{"field": "species", "problem": f"must hold {len(indices)} species"}],
            )
        correct = sum(1 for i, s in zip(indices, species, strict=True) if index[s] == i)
        self.metrics.observe_feedback(len(indices), correct)
        if shadow is None or len(shadow.labels) != len(species):
            return Verdict(len(indices), correct, "")
        shadow_correct = sum(1 for got, s in zip(shadow.labels, species, strict=True) if got == s)
        self.metrics.observe_shadow_feedback(shadow.version, len(species), shadow_correct)
        if shadow.prediction_id and self.shadow is not None:
            self.shadow.relay_feedback(shadow.prediction_id, species)
        return Verdict(len(indices), correct, shadow.prediction_id)

    def matrix(self, tensor: Tensor) -> Matrix:
        """The (N, 4) float64 matrix a tensor holds, or an error naming what is wrong."""
        where = tensor.field
        datatype, shape = tensor.datatype, list(tensor.shape)
        if datatype not in INPUT_DATATYPES:
            raise InvalidRequest(
                f"{where}.datatype {datatype!r} is not supported; use FP32 or FP64",
                [{"field": f"{where}.datatype", "problem": "must be FP32 or FP64"}],
            )
        n_features = len(FEATURES)
        if len(shape) != 2 or shape[1] != n_features or shape[0] < 1:
            raise InvalidRequest(
                f"{where}.shape {shape} must be [N, {n_features}] with N >= 1 "
                f"(columns {', '.join(FEATURES)})",
                [{"field": f"{where}.shape", "problem": f"must be [N, {n_features}]"}],
            )
        rows = shape[0]
        if rows > self.max_rows:
            raise PayloadTooLarge(
                f"tensor of {rows} rows is over the limit of {self.max_rows}; split the request"
            )
        x = _as_float64(tensor.data, where)
        if x.size != rows * n_features or (x.ndim == 2 and x.shape != (rows, n_features)):
            raise InvalidRequest(
                f"{where}.data holds {x.size} values laid out as {list(x.shape)}, "
                f"but shape {shape} needs {rows * n_features}",
                [{"field": f"{where}.data", "problem": "does not match shape"}],
            )
        x = x.reshape(rows, n_features)
        if datatype == "FP32":
            x = x.astype(np.float32).astype(np.float64)  # the values an FP32 tensor holds
        _check_range(x, where)
        return x


_DEFAULT_OUTPUTS = tuple(RequestedOutput(o) for o in OIP_OUTPUTS)
_MIN, _MAX = np.minimum.reduce, np.maximum.reduce  # without ndarray.min's Python wrapper


def raw_values(datatype: str, data: bytes, what: str, field: str) -> np.ndarray:
    """The values of a tensor sent as raw little-endian bytes (REST binary extension, gRPC
    raw_input_contents); ``what`` and ``field`` name the bytes in an error."""
    dtype = _RAW_DTYPES.get(datatype)
    if dtype is None:
        return np.empty(0)  # validate() names the unsupported datatype
    itemsize = np.dtype(dtype).itemsize
    if len(data) % itemsize:
        raise InvalidRequest(
            f"{what}: {len(data)} bytes of {datatype} data is not a whole number of "
            f"{itemsize}-byte values",
            [{"field": field, "problem": "not whole values"}],
        )
    return np.frombuffer(data, dtype=dtype)


_RAW_DTYPES = {"FP32": "<f4", "FP64": "<f8"}


def _as_float64(data: Sequence[Any] | np.ndarray, where: str) -> Matrix:
    try:
        return np.asarray(data, dtype=np.float64)
    except ValueError:
        raise InvalidRequest(
            f"{where}.data rows have different lengths",
            [{"field": f"{where}.data", "problem": "ragged rows"}],
        ) from None


def _check_range(x: Matrix, where: str) -> None:
    if _MIN(x, axis=None) > FEATURE_MIN_CM and _MAX(x, axis=None) <= FEATURE_MAX_CM:
        return  # (a NaN makes both comparisons false)
    bad = ~((x > FEATURE_MIN_CM) & (x <= FEATURE_MAX_CM))
    details = []
    for r, c in np.argwhere(bad)[:10].tolist():
        details.append(
            {
                "field": f"{where}.data[{r}][{c}]",
                "problem": f"{FEATURES[c]} = {float(x[r, c])!r} is outside "
                f"({FEATURE_MIN_CM:g}, {FEATURE_MAX_CM:g}] cm",
            }
        )
    raise InvalidRequest(
        f"invalid request: {details[0]['field']}: {details[0]['problem']}"
        + (f" (and {int(bad.sum()) - 1} more)" if bad.sum() > 1 else ""),
        details,
    )


def _one_row(tensor: Tensor) -> list[float] | None:
    """A valid one-row tensor's values as Python floats (the cheap path), else None: the
    array path then checks the tensor and names what is wrong."""
    if tensor.datatype not in INPUT_DATATYPES or list(tensor.shape) != [1, len(FEATURES)]:
        return None
    data = tensor.data
    if isinstance(data, np.ndarray):
        row = data.tolist() if data.shape == (len(FEATURES),) else None
    else:
        row = data[0] if len(data) == 1 and isinstance(data[0], list) else data
    if not isinstance(row, list) or len(row) != len(FEATURES):
        return None
    if tensor.datatype == "FP32":
        try:  # what an FP32 tensor holds: each value rounded to float32 (as numpy rounds)
            row = list(struct.unpack("<4f", struct.pack("<4f", *row)))
        except (OverflowError, struct.error):
            return None
    values = [float(v) for v in row]
    if all(FEATURE_MIN_CM < v <= FEATURE_MAX_CM for v in values):
        return values
    return None


def _output(
    m: LoadedModel, wanted: RequestedOutput, idx: list[int], proba: Matrix | list[float]
) -> OutputTensor:
    """An output tensor; `proba` is the (N, classes) matrix, or one row's list."""
    if wanted.classification:
        return _classification(m, wanted, idx, np.array(proba, ndmin=2))
    if wanted.name == "predict":
        return OutputTensor("predict", "BYTES", [len(idx)], [m.classes[i] for i in idx])
    if isinstance(proba, list):
        return OutputTensor("predict_proba", "FP64", [1, len(proba)], proba)
    return OutputTensor("predict_proba", "FP64", list(proba.shape), proba)


def _classification(
    m: LoadedModel, wanted: RequestedOutput, idx: list[int], proba: Matrix
) -> OutputTensor:
    """Triton's classification extension: the k best classes as "score:index:label"."""
    if wanted.name != "predict_proba":
        raise InvalidRequest(
            f"output {wanted.name!r} holds labels and cannot be classified; ask for "
            "classification on predict_proba",
            [{"field": "outputs", "problem": "classification only applies to predict_proba"}],
        )
    k = min(wanted.classification, len(m.classes))
    order = np.argsort(-proba, axis=1, kind="stable")[:, :k]
    values = [
        f"{float(proba[r, c]):f}:{int(c)}:{m.classes[int(c)]}"
        for r in range(len(idx))
        for c in order[r]
    ]
    return OutputTensor(wanted.name, "BYTES", [len(idx), k], values)
