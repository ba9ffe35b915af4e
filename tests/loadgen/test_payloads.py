import json
import random

import pytest

from modelops_contract.iris import FEATURE_NAMES as FEATURES
from modelops_contract.iris import FEATURE_RANGES as UNIFORM_RANGES
from modelops_contract.iris import SPECIES
from modelops_loadgen.payloads import (
    BadResponse,
    PayloadSource,
    encode_body,
    endpoint_path,
    load_iris_rows,
    parse_labels,
)


def test_shipped_iris_rows_match_scikit_learn():
    sklearn_datasets = pytest.importorskip("sklearn.datasets")
    iris = sklearn_datasets.load_iris()
    rows = load_iris_rows()
    assert len(rows) == 150
    for row, x, t in zip(rows, iris.data, iris.target, strict=True):
        assert row.features == tuple(float(v) for v in x)
        assert row.species == iris.target_names[t]


def test_uniform_payload_stays_in_the_seed_ranges():
    src = PayloadSource("uniform", "predict", 1, random.Random(5))
    seen = {f: [] for f in FEATURES}
    for _ in range(5000):
        body, expected = src.next()
        assert expected is None
        doc = json.loads(body)
        assert set(doc) == set(FEATURES)
        for f in FEATURES:
            seen[f].append(doc[f])
    for f, (lo, hi) in UNIFORM_RANGES.items():
        assert lo <= min(seen[f]) < lo + 0.05 * (hi - lo)
        assert hi - 0.05 * (hi - lo) < max(seen[f]) <= hi


def test_iris_payload_carries_true_labels():
    rows = {r.features: r.species for r in load_iris_rows()}
    src = PayloadSource("iris", "predict", 1, random.Random(1))
    labels = set()
    for _ in range(500):
        body, expected = src.next()
        doc = json.loads(body)
        feats = tuple(doc[f] for f in FEATURES)
        assert expected == [rows[feats]]
        labels.add(expected[0])
    assert labels == set(SPECIES)


def test_batch_body_and_labels():
    src = PayloadSource("iris", "batch", 5, random.Random(2))
    body, expected = src.next()
    doc = json.loads(body)
    assert len(doc["instances"]) == 5
    assert expected is not None and len(expected) == 5
    assert set(doc["instances"][0]) == set(FEATURES)


def test_infer_body_is_an_oip_fp32_tensor():
    body = encode_body("infer", [(5.1, 3.5, 1.4, 0.2), (6.0, 2.2, 5.0, 1.5)])
    doc = json.loads(body)
    (inp,) = doc["inputs"]
    assert inp == {
        "name": "input-0",
        "shape": [2, 4],
        "datatype": "FP32",
        "data": [5.1, 3.5, 1.4, 0.2, 6.0, 2.2, 5.0, 1.5],
    }


def test_predict_takes_one_row():
    with pytest.raises(ValueError, match="exactly one row"):
        PayloadSource("uniform", "predict", 2, random.Random(0))
    with pytest.raises(ValueError, match="exactly one row"):
        encode_body("predict", [])


def test_endpoint_paths():
    assert endpoint_path("predict", "iris") == "/predict"
    assert endpoint_path("batch", "iris") == "/predict/batch"
    assert endpoint_path("infer", "my-model") == "/v2/models/my-model/infer"


def test_parse_seed_answer():
    body = b'{"species":"setosa","probability":1.0,"processing_time":0.001,"model_version":"v1"}'
    assert parse_labels("predict", body, 1) == ["setosa"]


def test_parse_batch_answer():
    body = json.dumps(
        {"predictions": [{"species": "setosa", "probability": 1}, {"species": "virginica"}]}
    ).encode()
    assert parse_labels("batch", body, 2) == ["setosa", "virginica"]


def test_parse_oip_answer_finds_the_bytes_label_output():
    body = json.dumps(
        {
            "model_name": "iris",
            "outputs": [
                {"name": "predict_proba", "datatype": "FP64", "shape": [2, 3], "data": [1] * 6},
                {"name": "predict", "datatype": "BYTES", "shape": [2], "data": ["a", "b"]},
            ],
        }
    ).encode()
    assert parse_labels("infer", body, 2) == ["a", "b"]
    nested = json.dumps(
        {
            "outputs": [
                {"name": "label", "datatype": "BYTES", "shape": [2, 1], "data": [["a"], ["b"]]}
            ]
        }
    ).encode()
    assert parse_labels("infer", nested, 2) == ["a", "b"]


@pytest.mark.parametrize(
    ("endpoint", "body", "rows", "match"),
    [
        ("predict", b"not json", 1, "not JSON"),
        ("predict", b"[1]", 1, "not a JSON object"),
        ("predict", b'{"species": 3}', 1, "species"),
        ("batch", b'{"predictions": [{"species": "a"}]}', 2, "list of 2"),
        ("batch", b'{"predictions": [{"x": 1}]}', 1, "species"),
        ("infer", b'{"outputs": {}}', 1, "outputs"),
        ("infer", b'{"outputs": [{"datatype": "FP64", "data": [1.0]}]}', 1, "BYTES"),
        ("infer", b'{"outputs": [{"datatype": "BYTES", "data": ["a", "b"]}]}', 1, "expected 1"),
    ],
)
def test_malformed_answers_are_bad_responses(endpoint, body, rows, match):
    with pytest.raises(BadResponse, match=match):
        parse_labels(endpoint, body, rows)
