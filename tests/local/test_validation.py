"""Local validation against the CRD schema: the same verdicts, in the API server's words."""

import copy

import pytest
import yaml

from modelops.validation import ValidationError, validate

from .test_local_mode import SAMPLE

BASE = yaml.safe_load(SAMPLE.read_text())


def with_spec(**changes):
    obj = copy.deepcopy(BASE)
    obj["spec"].update(changes)
    return obj


def test_sample_is_valid_and_defaulted():
    defaulted = validate(copy.deepcopy(BASE))
    spec = defaulted["spec"]
    assert spec["replicas"] == 2 and spec["loadRate"] == 1
    assert spec["historyLimit"] == 5  # from the schema's default
    assert spec["loadGenerator"] == {"payload": "iris", "endpoint": "predict"}
    assert spec["training"]["timeoutSeconds"] == 600


def test_defaults_do_not_change_the_input():
    obj = with_spec()
    before = copy.deepcopy(obj)
    validate(obj)
    assert obj == before


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"modelVersion": "V1"}, "spec.modelVersion in body should match"),
        ({"modelVersion": ""}, "should be at least 1 chars long"),
        ({"replicas": -1}, "spec.replicas in body should be greater than or equal to 0"),
        ({"replicas": 2.5}, "spec.replicas in body must be of type integer"),
        ({"replicas": True}, "spec.replicas in body must be of type integer"),
        ({"minAccuracy": 1.5}, "spec.minAccuracy in body should be less than or equal to 1"),
        ({"minAccuracy": "high"}, "spec.minAccuracy in body must be of type number"),
        ({"loadRate": -1}, "spec.loadRate in body should be greater than or equal to 0"),
        ({"replica": 2}, 'unknown field "spec.replica"'),
        (
            {"training": {"algorithm": "xgboost"}},
            'spec.training.algorithm: Unsupported value: "xgboost"',
        ),
        (
            {"training": {"dataset": {"builtin": "iris", "url": "https://x/y.csv"}}},
            "spec.training.dataset: Invalid value",
        ),
        (
            {"training": {"hyperparameters": {f"p{i}": i for i in range(33)}}},
            "spec.training.hyperparameters: Too many: 33: must have at most 32 items",
        ),
        (
            {"loadGenerator": {"endpoint": "/predict"}},
            "spec.loadGenerator.endpoint: Unsupported value",
        ),
        ({"replicas": None}, None),  # null means "use the default", as the API server does
    ],
)
def test_invalid_specs(changes, message):
    if message is None:
        assert validate(with_spec(**changes))["spec"]["replicas"] == 1
        return
    with pytest.raises(ValidationError) as info:
        validate(with_spec(**changes))
    assert message in str(info.value)
    assert str(info.value).startswith('ModelDeployment "iris" is invalid: ')


def test_every_problem_is_listed():
    with pytest.raises(ValidationError) as info:
        validate(with_spec(replicas=-1, minAccuracy=2, loadRate=-3))
    assert len(info.value.errors) == 3


@pytest.mark.parametrize(
    ("obj", "message"),
    [
        ({**BASE, "kind": "Deployment"}, "expected modelops.dev/v1alpha1 ModelDeployment"),
        ({**BASE, "metadata": {}}, "metadata.name: Required value"),
        ({**BASE, "metadata": {"name": "Iris"}}, "metadata.name must be at most 40 characters"),
        ({**BASE, "metadata": {"name": "a" * 41}}, "metadata.name must be at most 40"),
        ("just a string", "is not a mapping"),
    ],
)
def test_object_level_rules(obj, message):
    with pytest.raises(ValidationError, match=message):
        validate(obj)


def test_name_and_version_length_rule_spans_fields():
    obj = with_spec(modelVersion="v" * 40)
    obj["metadata"] = {"name": "n" * 20}
    with pytest.raises(ValidationError, match="together must be at most 55 characters"):
        validate(obj)
