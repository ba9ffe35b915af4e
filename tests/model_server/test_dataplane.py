"""The transport-free data plane on its own: tensors in, predictions and errors out."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

from modelops_server.dataplane import DataPlane, OutputTensor, RequestedOutput, Tensor
from modelops_server.errors import InvalidRequest, NotFound, NotReady, PayloadTooLarge
from modelops_server.metrics import Metrics

ROWS = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]


@pytest.fixture
def plane(knn_artifact, knn_model, settings_for):
    data_plane = DataPlane(settings_for(knn_artifact, max_batch_size=10), knn_model, Metrics())
    asyncio.run(data_plane.start())
    return data_plane


def infer(plane, tensor, outputs=None, name="iris", version=None):
    return plane.infer(name, version, [tensor], outputs, time.perf_counter())


def test_not_ready_until_started(knn_artifact, knn_model, settings_for):
    plane = DataPlane(settings_for(knn_artifact), knn_model, Metrics())
    with pytest.raises(NotReady):
        plane.serving()
    asyncio.run(plane.start())
    assert plane.serving() is knn_model
    plane.stop()
    assert not plane.ready


@pytest.mark.parametrize("data", [ROWS, [v for r in ROWS for v in r], np.array(ROWS)])
def test_infer_takes_nested_flat_and_array_data(plane, knn_model, data, knn_pipeline):
    result = infer(plane, Tensor("FP64", [2, 4], data))
    predict, proba = result.outputs
    assert predict.as_list() == list(knn_pipeline.predict(np.array(ROWS)))
    assert proba.shape == [2, 3]
    assert proba.as_list() == knn_pipeline.predict_proba(np.array(ROWS)).ravel().tolist()


@pytest.mark.parametrize("datatype", ["FP32", "FP64"])
def test_one_row_path_equals_the_array_path(plane, datatype):
    # One row goes through plain Python; the same row inside a batch through numpy.
    rng = np.random.default_rng(5)
    rows = rng.uniform(0.05, 9.0, size=(10, 4))  # MAX_BATCH_SIZE of this plane
    batch = infer(plane, Tensor(datatype, [10, 4], rows)).outputs
    for i, row in enumerate(rows.tolist()):
        one = infer(plane, Tensor(datatype, [1, 4], row)).outputs
        assert one[0].as_list() == batch[0].as_list()[i : i + 1]
        assert one[1].as_list() == batch[1].as_list()[3 * i : 3 * i + 3]


def test_fp32_is_rounded_to_float32(plane, knn_model, knn_pipeline):
    row = [[4.95, 3.05, 1.45, 0.25]]
    proba = infer(plane, Tensor("FP32", [1, 4], row)).outputs[1]
    x32 = np.array(row, dtype=np.float32).astype(np.float64)
    assert proba.shape == [1, 3]
    assert proba.as_list() == knn_pipeline.predict_proba(x32).ravel().tolist()


def test_classification_extension(plane):
    out = infer(plane, Tensor("FP64", [2, 4], ROWS), [RequestedOutput("predict_proba", 2)])
    (tensor,) = out.outputs
    assert (tensor.datatype, tensor.shape) == ("BYTES", [2, 2])
    assert tensor.as_list()[0] == "1.000000:0:setosa"
    assert tensor.as_list()[2] == "1.000000:2:virginica"
    with pytest.raises(InvalidRequest, match="predict_proba"):
        infer(plane, Tensor("FP64", [2, 4], ROWS), [RequestedOutput("predict", 1)])


def test_raw_encoding_of_outputs():
    labels = OutputTensor("predict", "BYTES", [2], ["ab", "c"])
    assert labels.as_raw() == b"\x02\x00\x00\x00ab\x01\x00\x00\x00c"
    numbers = OutputTensor("predict_proba", "FP64", [1, 2], np.array([[0.5, 1.0]]))
    assert np.frombuffer(numbers.as_raw(), "<f8").tolist() == [0.5, 1.0]


@pytest.mark.parametrize(
    ("tensor", "field"),
    [
        (Tensor("INT64", [2, 4], ROWS), "inputs[0].datatype"),
        (Tensor("FP64", [2, 3], ROWS), "inputs[0].shape"),
        (Tensor("FP64", [0, 4], []), "inputs[0].shape"),
        (Tensor("FP64", [3, 4], ROWS), "inputs[0].data"),
        (Tensor("FP64", [2, 4], [[5.1, 3.5], [1.0, 1.0, 1.0, 1.0]]), "inputs[0].data"),
        (Tensor("FP64", [1, 4], [[5.1, 3.5, 1.4, float("nan")]]), "inputs[0].data[0][3]"),
        (Tensor("FP64", [1, 4], [[5.1, 3.5, 1.4, 0.2]], "raw_input_contents[0]"), None),
    ],
)
def test_invalid_tensors_name_the_field(plane, tensor, field):
    if field is None:  # a valid tensor, named as its transport calls it
        assert infer(plane, tensor).outputs
        return
    with pytest.raises(InvalidRequest) as caught:
        infer(plane, tensor)
    assert field in [d["field"] for d in caught.value.details], caught.value.details


def test_limits_and_names(plane):
    with pytest.raises(PayloadTooLarge):
        infer(plane, Tensor("FP64", [11, 4], []))
    with pytest.raises(NotFound, match="'roses'"):
        infer(plane, Tensor("FP64", [2, 4], ROWS), name="roses")
    with pytest.raises(NotFound, match="'v9'"):
        infer(plane, Tensor("FP64", [2, 4], ROWS), version="v9")
    with pytest.raises(InvalidRequest, match="exactly one"):
        plane.infer("iris", None, [], None, time.perf_counter())
    with pytest.raises(InvalidRequest, match="unknown output"):
        infer(plane, Tensor("FP64", [2, 4], ROWS), [RequestedOutput("logits")])


def test_predictions_are_counted(plane):
    infer(plane, Tensor("FP64", [2, 4], ROWS))
    text = plane.metrics.render().decode()
    assert 'api_predictions_total{model_version="knn",species="setosa"} 1.0' in text
    assert 'api_predictions_total{model_version="knn",species="virginica"} 1.0' in text
    assert "api_prediction_latency_seconds_count 1.0" in text
