"""Request and response bodies: the seed's API, batch predict, Open Inference Protocol v2.

Request models are strict: numbers must be JSON numbers (no numeric strings, no booleans),
finite, and inside the physically sensible range of a flower part; unknown fields are refused
so that a misspelt name is reported instead of silently ignored.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, Strict, TypeAdapter

from .model import FEATURE_MAX_CM, FEATURE_MIN_CM

Centimetres = Annotated[
    float,
    Strict(),
    Field(
        gt=FEATURE_MIN_CM,
        le=FEATURE_MAX_CM,
        allow_inf_nan=False,
        description=f"centimetres, > {FEATURE_MIN_CM:g} and <= {FEATURE_MAX_CM:g}",
    ),
]
FiniteNumber = Annotated[float, Strict(), Field(allow_inf_nan=False)]

_STRICT = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


class PredictRequest(BaseModel):
    """The seed's request: one flower's four measurements."""

    model_config = ConfigDict(
        **_STRICT,
        json_schema_extra={
            "examples": [
                {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}
            ]
        },
    )

    sepal_length: Centimetres
    sepal_width: Centimetres
    petal_length: Centimetres
    petal_width: Centimetres


class PredictResponse(BaseModel):
    species: str = Field(description="predicted class")
    probability: float = Field(description="probability of the predicted class")
    processing_time: float = Field(description="seconds spent validating and predicting")
    model_version: str
    prediction_id: str = Field(description="send the true species to POST /feedback with it")


class BatchRequest(BaseModel):
    model_config = _STRICT

    instances: list[PredictRequest] = Field(
        min_length=1, description="flowers to classify (at most MAX_BATCH_SIZE; 413 beyond)"
    )


class BatchPrediction(BaseModel):
    species: str
    probability: float


class BatchResponse(BaseModel):
    predictions: list[BatchPrediction]
    processing_time: float
    model_version: str
    prediction_id: str = Field(description="one id for the request's rows (POST /feedback)")


class FeedbackRequest(BaseModel):
    """The true species of a prediction's rows: the live accuracy of the version that
    answered counts them (once per prediction id)."""

    model_config = ConfigDict(
        **_STRICT,
        json_schema_extra={"examples": [{"prediction_id": "3f9c01aa-17", "species": "setosa"}]},
    )

    prediction_id: str = Field(
        min_length=1, max_length=64, description="the prediction_id the prediction returned"
    )
    species: (
        Annotated[str, Field(min_length=1, max_length=64)]
        | list[Annotated[str, Field(min_length=1, max_length=64)]]
    ) = Field(
        description="the true species: one name for a one-row prediction, else a list in the "
        "order of the request's rows"
    )


class FeedbackResponse(BaseModel):
    prediction_id: str
    model_version: str = Field(description="the version whose live accuracy counted it")
    rows: int
    correct: int = Field(description="rows the prediction got right")


class ErrorDetail(BaseModel):
    field: str
    problem: str


class ErrorBody(BaseModel):
    """Every error response; ``error`` is the Open Inference Protocol's error field."""

    error: str
    kind: str
    details: list[ErrorDetail] | None = None


# Open Inference Protocol v2 ------------------------------------------------------------------


class InferInput(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")

    name: str
    shape: list[Annotated[int, Field(ge=0)]] = Field(description="[N, 4]")
    datatype: str = Field(description="FP32 or FP64")
    parameters: dict[str, Any] | None = None
    data: list[FiniteNumber] | list[list[FiniteNumber]] = Field(
        description="row-major values, flat or nested by row"
    )


class RequestedOutput(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")

    name: str = Field(description="predict or predict_proba")
    parameters: dict[str, Any] | None = None


class InferRequest(BaseModel):
    model_config = ConfigDict(
        strict=True,
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "inputs": [
                        {
                            "name": "input-0",
                            "shape": [1, 4],
                            "datatype": "FP64",
                            "data": [5.1, 3.5, 1.4, 0.2],
                        }
                    ]
                }
            ]
        },
    )

    id: str | None = None
    parameters: dict[str, Any] | None = None
    inputs: list[InferInput] = Field(min_length=1, max_length=1)
    outputs: list[RequestedOutput] | None = None


class InferOutput(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    parameters: dict[str, Any] | None = None
    data: list[Any]


class InferResponse(BaseModel):
    model_name: str
    model_version: str | None = None
    id: str | None = None
    parameters: dict[str, Any] | None = None
    outputs: list[InferOutput]


class TensorMetadata(BaseModel):
    name: str
    datatype: str
    shape: list[int]


class ModelMetadata(BaseModel):
    name: str
    versions: list[str]
    platform: str
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]
    parameters: dict[str, Any] | None = None


PREDICT_ADAPTER: TypeAdapter[PredictRequest] = TypeAdapter(PredictRequest)
BATCH_ADAPTER: TypeAdapter[BatchRequest] = TypeAdapter(BatchRequest)
INFER_ADAPTER: TypeAdapter[InferRequest] = TypeAdapter(InferRequest)
FEEDBACK_ADAPTER: TypeAdapter[FeedbackRequest] = TypeAdapter(FeedbackRequest)
REQUEST_MODELS: tuple[type[BaseModel], ...] = (
    PredictRequest,
    BatchRequest,
    InferRequest,
    FeedbackRequest,
)


class ClientInferRequest(InferRequest):
    """An infer request as OIP clients send it: the KServe SDK also names the model in the
    body. Accepted and checked against the path; the documented schema (InferRequest, in the
    OpenAPI document) stays as published."""

    model_name: str | None = None
    model_version: str | None = None


class BinaryInferInput(InferInput):
    """An input of the binary tensor extension: its values follow the JSON header as bytes
    (``parameters.binary_data_size``), so ``data`` may be absent."""

    data: list[FiniteNumber] | list[list[FiniteNumber]] | None = None  # type: ignore[assignment]


class BinaryInferRequest(ClientInferRequest):
    """The JSON header of a binary-extension request (not a JSON body: not in the OpenAPI)."""

    inputs: list[BinaryInferInput] = Field(min_length=1, max_length=1)  # type: ignore[assignment]


CLIENT_INFER_ADAPTER: TypeAdapter[ClientInferRequest] = TypeAdapter(ClientInferRequest)
BINARY_INFER_ADAPTER: TypeAdapter[BinaryInferRequest] = TypeAdapter(BinaryInferRequest)
