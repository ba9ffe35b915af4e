"""modelops.spec: the shipped CRD copy, schema defaults and typed models; settings."""

from pathlib import Path

import pytest
import yaml

from modelops import spec as specmod
from modelops.settings import Settings, SettingsError
from modelops.spec import ModelDeploymentSpec, apply_defaults

ROOT = Path(__file__).resolve().parents[2]


def test_packaged_crd_is_identical_to_crds_dir():
    source = (ROOT / "crds" / "modelops.dev_modeldeployments.yaml").read_text()
    assert specmod.crd_text() == source, "copy crds/ into operator/src/modelops/crd/"


def test_crd_shape():
    crd = yaml.safe_load(specmod.crd_text())
    version = crd["spec"]["versions"][0]
    assert crd["spec"]["names"]["shortNames"] == ["md", "mdep"]
    assert version["subresources"]["scale"] == {
        "specReplicasPath": ".spec.replicas",
        "statusReplicasPath": ".status.replicas",
        "labelSelectorPath": ".status.selector",
    }
    names = [c["name"].upper() for c in version["additionalPrinterColumns"]]
    assert names == [
        "VERSION", "SERVING", "ACCURACY", "GATE", "READY", "PHASE", "STEP", "WEIGHT", "ANALYSIS",
        "CANDIDATE-LIVE", "STABLE-LIVE", "AGE",
    ]  # fmt: skip


def _walk(schema, path="spec"):
    yield path, schema
    for name, sub in (schema.get("properties") or {}).items():
        yield from _walk(sub, f"{path}.{name}")


def test_every_spec_and_status_field_is_described():
    root = specmod.openapi_schema()
    for top in ("spec", "status"):
        missing = [p for p, s in _walk(root["properties"][top], top) if not s.get("description")]
        assert not missing, f"fields without description: {missing}"


def test_defaults_fill_nested_objects():
    spec = apply_defaults({"modelVersion": "v1"})
    assert spec["replicas"] == 1 and spec["minAccuracy"] == 0.85 and spec["loadRate"] == 1
    assert spec["training"]["algorithm"] == "knn"
    assert spec["training"]["dataset"] == {"builtin": "iris"}
    assert spec["training"]["resources"]["limits"]["memory"] == "1Gi"
    assert spec["gate"] == {"regressionTolerance": 0, "significantImprovement": 0.005}
    assert spec["serving"]["port"] == 8000
    assert spec["serving"]["batching"] == {"maxBatchSize": 1024}
    assert spec["loadGenerator"] == {"payload": "iris", "endpoint": "predict"}
    assert spec["monitoring"] == {"scrapeInterval": "15s"}
    assert spec["rollout"] == {
        "strategy": "Direct",
        "steps": [25, 50],
        "pauseSeconds": 60,
        "analysis": {
            "minSamples": 100,
            "maxAccuracyDrop": 0.02,
            "minAgreement": 0.9,
            "maxErrorRatio": 0.01,
            "maxLatencyP99Seconds": 0.5,
        },
    }


def test_defaults_keep_what_is_set_and_do_not_mutate():
    raw = {"modelVersion": "v2", "replicas": 0, "training": {"dataset": {"url": "https://a/b.csv"}}}
    spec = apply_defaults(raw)
    assert spec["replicas"] == 0
    assert spec["training"]["dataset"] == {"url": "https://a/b.csv"}  # no builtin added
    assert spec["training"]["seed"] == 42
    assert raw == {
        "modelVersion": "v2",
        "replicas": 0,
        "training": {"dataset": {"url": "https://a/b.csv"}},
    }


def test_configmap_dataset_key_default():
    spec = apply_defaults(
        {"modelVersion": "v1", "training": {"dataset": {"configMap": {"name": "d"}}}}
    )
    assert spec["training"]["dataset"]["configMap"] == {"name": "d", "key": "dataset.csv"}


def test_typed_model():
    spec = ModelDeploymentSpec.from_dict(
        {"modelVersion": "v3", "loadRate": 2.5, "training": {"hyperparameters": {"n_neighbors": 7}}}
    )
    assert spec.model_version == "v3" and spec.load_rate == 2.5
    assert spec.training.hyperparameters == {"n_neighbors": 7}
    assert spec.training.resources.to_dict()["requests"] == {"cpu": "100m", "memory": "256Mi"}
    with pytest.raises(ValueError, match="modelVersion is required"):
        ModelDeploymentSpec.from_dict({"replicas": 1})


def test_settings_from_env():
    s = Settings.from_env(
        {
            "MODELOPS_SERVER_IMAGE": "reg/server:1",
            "MODELOPS_WATCH_NAMESPACES": "a, b,",
            "MODELOPS_RESYNC_SECONDS": "60",
            "MODELOPS_STANDALONE": "true",
        }
    )
    assert s.server_image == "reg/server:1" and s.namespaces == ("a", "b")
    assert s.resync_seconds == 60 and s.standalone
    assert Settings.from_env({}).trainer_image.startswith("modelops-trainer:")
    with pytest.raises(SettingsError, match="MODELOPS_RESYNC_SECONDS"):
        Settings.from_env({"MODELOPS_RESYNC_SECONDS": "fast"})
    with pytest.raises(SettingsError, match="MODELOPS_IMAGE_PULL_POLICY"):
        Settings.from_env({"MODELOPS_IMAGE_PULL_POLICY": "Sometimes"})
    with pytest.raises(SettingsError, match="MODELOPS_STANDALONE"):
        Settings.from_env({"MODELOPS_STANDALONE": "maybe"})


def test_leader_lease_settings():
    base = Settings.from_env({})
    assert (base.lease_name, base.lease_namespace) == ("modelops-operator", "modelops-system")
    assert base.lease_duration_seconds == 15 and not base.standalone
    # In a pod the Lease is in its own namespace (downward API); an explicit setting wins.
    assert Settings.from_env({"POD_NAMESPACE": "ops"}).lease_namespace == "ops"
    both = {"POD_NAMESPACE": "ops", "MODELOPS_LEASE_NAMESPACE": "elect"}
    assert Settings.from_env(both).lease_namespace == "elect"
    with pytest.raises(SettingsError, match="MODELOPS_LEASE_DURATION_SECONDS"):
        Settings.from_env({"MODELOPS_LEASE_DURATION_SECONDS": "1"})
