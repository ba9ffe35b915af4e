"""The lifecycle of a ModelDeployment on a real cluster, with the product as users deploy it.

The operator runs as a pod under its own ServiceAccount (config/overlays/e2e); trainer Jobs,
model servers and load generators are real pods of the product's images; Prometheus is a pod
with the shipped configuration and rules. Every assertion reads what the cluster holds: the
API server's objects, the kubelet's pod status and termination messages, Prometheus's HTTP API,
the load generator's own counters, answers to requests sent from a pod through a Service.

Scenarios run in their own namespaces, in parallel threads of one test where they are
independent (the machine has two cores and most of the time is spent waiting for pods).
"""

from __future__ import annotations

import concurrent.futures
import json
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from modelops_testenv.product import Product, wait

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "config/samples/modelops_v1alpha1_modeldeployment.yaml"
ALERTS = ROOT / "config/prometheus/rules/alerts.yaml"
SETOSA = {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}
# Generous for two busy cores: a first version trains, then two servers start and warm up.
SERVE_TIMEOUT = 240.0
# Prometheus scrapes every 15 s (config/prometheus/prometheus.yml) and discovers pods on watch.
SCRAPE_TIMEOUT = 120.0
# Seconds measured by the tests, printed at the end of the session (-s) for the reports.
FIGURES: dict[str, float] = {}


def sample(name: str = "iris", **spec: Any) -> dict[str, Any]:
    """The shipped sample, with ``spec`` changes."""
    doc: dict[str, Any] = yaml.safe_load(SAMPLE.read_text())
    doc["metadata"]["name"] = name
    doc["spec"].update(spec)
    return doc


def apply(product: Product, namespace: str, doc: dict[str, Any]) -> None:
    product.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(doc))


def patch_md(product: Product, namespace: str, name: str, spec: dict[str, Any]) -> None:
    product.kubectl(
        "patch", "modeldeployment", name, "-n", namespace, "--type=merge",
        "-p", json.dumps({"spec": spec}),
    )  # fmt: skip


def items(product: Product, namespace: str, kind: str, selector: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = product.kubectl.json(
        "get", kind, "-n", namespace, "-l", selector
    )["items"]
    return found


def loadgen_counts(product: Product, namespace: str, name: str) -> dict[str, float]:
    """The load generator pod's own request counters by outcome (read through the API
    server's pod proxy: what the generator itself counted), plus its target rate."""
    (pod,) = [
        p
        for p in items(
            product,
            namespace,
            "pods",
            f"modelops.dev/name={name},app.kubernetes.io/component=loadgen",
        )
        if not p["metadata"].get("deletionTimestamp")
    ]
    pod_name = pod["metadata"]["name"]
    text = product.kubectl(
        "get", "--raw", f"/api/v1/namespaces/{namespace}/pods/{pod_name}:9100/proxy/metrics"
    )
    counts: dict[str, float] = {"pod": 0.0}
    for line in text.splitlines():
        if m := re.match(r'loadgen_requests_total\{code="[^"]*",outcome="([a-z_]+)"\} (\S+)', line):
            counts[m.group(1)] = counts.get(m.group(1), 0.0) + float(m.group(2))
        elif m := re.match(r"loadgen_target_rate (\S+)", line):
            counts["target_rate"] = float(m.group(1))
    counts["pod"] = float(hash(pod_name))  # the same pod before and after: counters comparable
    return counts


def failed(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """Requests that did not succeed between two readings, by outcome."""
    skip = {"ok", "pod", "target_rate"}
    return {
        k: after[k] - before.get(k, 0.0)
        for k in after
        if k not in skip and after[k] - before.get(k, 0.0) > 0
    }


def run_parallel(**scenarios: Callable[[], None]) -> None:
    """Run independent scenarios at once; fail with every scenario's error."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=len(scenarios)) as pool:
        futures = {name: pool.submit(fn) for name, fn in scenarios.items()}
        errors = []
        for name, future in futures.items():
            try:
                future.result()
            except BaseException as exc:  # every scenario's failure is reported
                errors.append(f"--- scenario {name}: {type(exc).__name__}: {exc}")
    if errors:
        pytest.fail("\n".join(errors), pytrace=False)


# The sample: train → artifact → serve → predict → scrape → scale → delete -------------------


def check_trained_through_termination_message(product: Product, ns: str) -> dict[str, Any]:
    """The trainer Job's pod ran to completion and its termination message (the kubelet's
    copy) carries the summary and the artifact."""
    job = product.kubectl.json("get", "job", "iris-train-v1", "-n", ns)
    assert job["status"].get("succeeded") == 1
    (pod,) = items(product, ns, "pods", "batch.kubernetes.io/job-name=iris-train-v1")
    assert pod["status"]["phase"] == "Succeeded"
    terminated = pod["status"]["containerStatuses"][0]["state"]["terminated"]
    summary: dict[str, Any] = json.loads(terminated["message"])
    assert summary["status"] == "Succeeded" and summary["version"] == "v1"
    assert summary["accuracy"] >= 0.85
    assert summary.get("artifactBundle"), "a knn model fits the termination message"
    return summary


def check_artifact_and_servers(product: Product, ns: str, summary: dict[str, Any]) -> None:
    cm = product.kubectl.json("get", "configmap", "iris-model-v1", "-n", ns)
    assert cm["immutable"] is True
    assert cm["metadata"]["annotations"]["modelops.dev/model-sha256"] == summary["modelSha256"]
    assert cm["binaryData"], "the model's bytes are stored"
    pods = items(product, ns, "pods", "modelops.dev/name=iris,app.kubernetes.io/component=server")
    assert len(pods) == 2
    for pod in pods:
        (container,) = pod["spec"]["containers"]
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
        ready = {c["type"]: c["status"] for c in pod["status"]["conditions"]}
        assert ready["Ready"] == "True"
        volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
        assert volumes["model"]["configMap"]["name"] == "iris-model-v1"
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert env["MODELOPS_SERVER_MODEL_SHA256"] == summary["modelSha256"]


def check_columns(product: Product, ns: str, accuracy: float) -> None:
    header, row = product.kubectl("get", "md", "-n", ns).splitlines()
    assert header.split() == [
        "NAME", "VERSION", "SERVING", "ACCURACY", "GATE", "READY", "PHASE", "AGE",
    ]  # fmt: skip
    cells = row.split()
    assert cells[:3] + cells[4:7] == ["iris", "v1", "v1", "Accepted", "2/2", "Serving"], row
    assert float(cells[3]) == pytest.approx(accuracy, abs=1e-4), row


def check_prometheus(product: Product, ns: str, replicas: int) -> None:
    """Prometheus found every server pod and the operator by itself (kubernetes_sd on pod
    labels, no target written for them): the number of server pods with
    api_predictions_total is the number of replicas; every alert rule is loaded."""
    promql = f'count(count by (pod) (api_predictions_total{{namespace="{ns}"}}))'

    def counted() -> bool:
        result = product.query(promql)
        return bool(result) and int(float(result[0]["value"][1])) == replicas

    try:
        wait(counted, SCRAPE_TIMEOUT, f"{replicas} server pods scraped", interval=3)
    except TimeoutError as exc:
        raise AssertionError(f"{exc}: {product.query(promql)}") from None
    targets = product.prometheus_get("targets", state="active")["activeTargets"]
    by_component: dict[str, list[dict[str, Any]]] = {}
    for target in targets:
        by_component.setdefault(target["labels"].get("component", ""), []).append(target)
    servers = [t for t in by_component.get("server", []) if t["labels"].get("namespace") == ns]
    assert len(servers) == replicas and all(t["health"] == "up" for t in servers)
    assert all(t["discoveredLabels"].get("__meta_kubernetes_pod_ip") for t in servers)
    operator = by_component.get("operator", [])
    assert len(operator) == 1 and operator[0]["health"] == "up", operator
    loaded = {
        rule["name"]: rule["health"]
        for group in product.prometheus_get("rules")["groups"]
        for rule in group["rules"]
    }
    shipped = {
        rule["alert"]
        for group in yaml.safe_load(ALERTS.read_text())["groups"]
        for rule in group["rules"]
        if "alert" in rule
    }
    assert shipped and shipped <= set(loaded), shipped - set(loaded)
    assert {loaded[a] for a in shipped} <= {"ok", "unknown"}


def children(product: Product, ns: str) -> list[str]:
    found = product.kubectl(
        "get", "jobs,configmaps,deployments,replicasets,services,pods", "-n", ns,
        "-l", "modelops.dev/name=iris", "-o", "name",
    )  # fmt: skip
    return found.split()


def sample_lifecycle(product: Product, ns: str) -> None:
    started = time.monotonic()
    apply(product, ns, sample())
    product.serving(ns, "iris", "v1", 2, SERVE_TIMEOUT)
    FIGURES["sample apply → Serving (s)"] = time.monotonic() - started
    summary = check_trained_through_termination_message(product, ns)
    check_artifact_and_servers(product, ns, summary)
    check_columns(product, ns, summary["accuracy"])
    status, body = product.predict(ns, SETOSA)
    assert (status, body["species"], body["model_version"]) == (200, "setosa", "v1"), body
    # The load generator sends at loadRate to the Service (its own counters).
    wait(
        lambda: loadgen_counts(product, ns, "iris").get("ok", 0) >= 3,
        60,
        "the load generator's first answers",
    )
    counts = loadgen_counts(product, ns, "iris")
    assert counts["target_rate"] == 1.0
    assert not failed({}, counts), counts

    # kubectl scale (the scale subresource) → a third server, scraped like the others.
    product.kubectl("scale", "md", "iris", "-n", ns, "--replicas=3")
    product.serving(ns, "iris", "v1", 3, SERVE_TIMEOUT)
    deployment = product.kubectl.json("get", "deployment", "iris-server", "-n", ns)
    assert deployment["spec"]["replicas"] == 3
    check_prometheus(product, ns, replicas=3)

    # loadRate 0: no load generator at all.
    patch_md(product, ns, "iris", {"loadRate": 0})
    wait(
        lambda: not items(product, ns, "deployments,pods", "app.kubernetes.io/component=loadgen"),
        90,
        "the load generator gone",
    )

    # A deleted child is put back.
    product.kubectl("delete", "service", "iris", "-n", ns, "--wait=false")
    product.kubectl("delete", "deployment", "iris-server", "-n", ns, "--wait=false")
    wait(
        lambda: product.kubectl.run("get", "service", "iris", "-n", ns).returncode == 0,
        60,
        "the Service put back",
    )
    product.serving(ns, "iris", "v1", 3, SERVE_TIMEOUT)
    status, body = product.predict(ns, SETOSA)
    assert (status, body["model_version"]) == (200, "v1"), body

    # Deleting the ModelDeployment deletes everything it made.
    product.kubectl("delete", "md", "iris", "-n", ns, "--timeout=60s")
    wait(lambda: not children(product, ns), 120, "every child of iris gone")


def test_the_sample_trains_serves_scales_and_goes(deployed_product: Product) -> None:
    ns = deployed_product.create_namespace("sample")
    sample_lifecycle(deployed_product, ns)
    print(f"\nfigures: {json.dumps(FIGURES, indent=1)}")
