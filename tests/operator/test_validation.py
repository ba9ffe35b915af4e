"""The API server rejects malformed ModelDeployments with clear messages (issue 6, test 8)."""

from __future__ import annotations

import base64
import json

import pytest

from modelops.core.render import CONFIGMAP_MAX_BYTES

pytestmark = pytest.mark.integration

GOOD = {"modelVersion": "v1"}

CASES = [
    ("missing-version", {"replicas": 1}, "spec.modelVersion: Required value"),
    ("bad-version", {"modelVersion": "V1_final"}, "spec.modelVersion"),
    ("negative-replicas", {**GOOD, "replicas": -1}, "spec.replicas"),
    ("accuracy-above-one", {**GOOD, "minAccuracy": 1.5}, "spec.minAccuracy"),
    ("negative-load", {**GOOD, "loadRate": -2}, "spec.loadRate"),
    ("unknown-algorithm", {**GOOD, "training": {"algorithm": "svm"}}, 'Unsupported value: "svm"'),
    (
        "two-datasets",
        {**GOOD, "training": {"dataset": {"builtin": "iris", "url": "https://x.invalid/a.csv"}}},
        "set exactly one of dataset.builtin, dataset.configMap or dataset.url",
    ),
    ("ftp-dataset", {**GOOD, "training": {"dataset": {"url": "ftp://x/a.csv"}}}, "url"),
    ("test-size", {**GOOD, "training": {"testSize": 0.9}}, "spec.training.testSize"),
    ("low-port", {**GOOD, "serving": {"port": 80}}, "spec.serving.port"),
    ("scrape-interval", {**GOOD, "monitoring": {"scrapeInterval": "often"}}, "scrapeInterval"),
    ("history-zero", {**GOOD, "historyLimit": 0}, "spec.historyLimit"),
    ("bad-quantity", {**GOOD, "serving": {"resources": {"limits": {"cpu": "lots"}}}}, "cpu"),
    ("unknown-field", {**GOOD, "replica": 2}, 'unknown field "spec.replica"'),
    (
        "name-plus-version-too-long",
        {"modelVersion": "v" + "1" * 39},
        "metadata.name and spec.modelVersion together must be at most 55 characters",
    ),
]


@pytest.mark.parametrize(("name", "spec", "expected"), CASES, ids=[c[0] for c in CASES])
def test_malformed_is_rejected(cluster, name, spec, expected):
    manifest = {
        "apiVersion": "modelops.dev/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": f"md-{name}"[:40].rstrip("-"), "namespace": cluster.ns},
        "spec": spec,
    }
    proc = cluster.plane.kubectl("apply", "-f", "-", input=json.dumps(manifest), check=False)
    assert proc.returncode != 0, f"{name} was accepted"
    assert expected in proc.stderr, proc.stderr


def test_name_must_be_a_dns_label(cluster):
    manifest = {
        "apiVersion": "modelops.dev/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": "iris.v2", "namespace": cluster.ns},
        "spec": GOOD,
    }
    proc = cluster.plane.kubectl("apply", "-f", "-", input=json.dumps(manifest), check=False)
    assert proc.returncode != 0
    assert "metadata.name must be at most 40 characters" in proc.stderr


def test_defaults_come_from_the_schema(cluster):
    """What the API server stores equals modelops.spec.apply_defaults (local mode's view)."""
    from modelops.spec import apply_defaults

    cluster.create_md("defaults", {"modelVersion": "v1"})
    stored = cluster.md("defaults")["spec"]
    assert stored == apply_defaults({"modelVersion": "v1"})
    cluster.create_md(
        "partial",
        {
            "modelVersion": "v1",
            "training": {"algorithm": "random_forest"},
            "serving": {"port": 9000},
        },
    )
    partial = {
        "modelVersion": "v1",
        "training": {"algorithm": "random_forest"},
        "serving": {"port": 9000},
    }
    assert cluster.md("partial")["spec"] == apply_defaults(partial)


def test_samples_are_accepted_and_trained(cluster, operator, wait):
    """Every sample in config/samples is valid for the API server and gets a trainer Job."""
    from pathlib import Path

    import yaml

    root = Path(__file__).resolve().parents[2] / "config" / "samples"
    cluster.kubectl("apply", "-n", cluster.ns, "-k", str(root))
    files = sorted(p for p in root.glob("*.yaml") if p.name != "kustomization.yaml")
    for path in files:  # the rollout strategies' samples, beside the kustomization's
        cluster.kubectl("apply", "-n", cluster.ns, "-f", str(path))
    names = [yaml.safe_load(path.read_text())["metadata"]["name"] for path in files]
    assert len(names) == 3  # one per rollout strategy
    for name in names:
        version = cluster.md(name)["spec"]["modelVersion"]
        wait(lambda n=name, v=version: cluster.job(n, v), 30, f"Job of sample {name}")


def test_the_artifact_size_limit_is_the_api_servers(kubectl, namespace):
    """The operator refuses a model before the ConfigMap would be: the limit it uses is the
    real API server's (a ConfigMap of exactly that many bytes is accepted, one more refused)."""

    def configmap(name: str, size: int) -> str:
        data = {"a.json": "{}"}
        blob = base64.b64encode(b"\0" * (size - len("{}"))).decode()
        body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}}
        return json.dumps({**body, "data": data, "binaryData": {"m.bin": blob}})

    kubectl("create", "-n", namespace, "-f", "-", input=configmap("fits", CONFIGMAP_MAX_BYTES))
    refused = kubectl.run(
        "create", "-n", namespace, "-f", "-", input=configmap("over", CONFIGMAP_MAX_BYTES + 1)
    )
    assert refused.returncode != 0 and "1048576" in refused.stderr, refused.stderr
