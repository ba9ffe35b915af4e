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

# The budget of the test itself: the session fixture may wait for the machine's one real node
# (another run holding it) and build images first.
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600, func_only=True)]

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
    server's pod proxy: what the generator itself counted), plus its target and achieved
    rates; {"ok": 0} while it has no running pod answering yet."""
    pods = [
        p
        for p in items(
            product,
            namespace,
            "pods",
            f"modelops.dev/name={name},app.kubernetes.io/component=loadgen",
        )
        if not p["metadata"].get("deletionTimestamp")
        and p["status"].get("phase") == "Running"
        and p["status"].get("podIP")
    ]
    if not pods:
        return {"ok": 0.0}
    (pod,) = pods
    pod_name = pod["metadata"]["name"]
    read = product.kubectl.run(
        "get", "--raw", f"/api/v1/namespaces/{namespace}/pods/{pod_name}:9100/proxy/metrics"
    )
    if read.returncode != 0:  # just started: not listening yet (no "pod" key: not comparable)
        return {"ok": 0.0}
    text = read.stdout
    counts: dict[str, float] = {"ok": 0.0}
    for line in text.splitlines():
        if m := re.match(r'loadgen_requests_total\{code="[^"]*",outcome="([a-z_]+)"\} (\S+)', line):
            counts[m.group(1)] = counts.get(m.group(1), 0.0) + float(m.group(2))
        elif m := re.match(r"loadgen_requests_resent_total (\S+)", line):
            counts["resent"] = float(m.group(1))  # answered, after a kept-alive close: not lost
        elif m := re.match(r"loadgen_(target|achieved)_rate (\S+)", line):
            counts[f"{m.group(1)}_rate"] = float(m.group(2))
    counts["pod"] = float(hash(pod_name))  # the same pod before and after: counters comparable
    return counts


def failed(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """Requests that did not succeed between two readings, by outcome."""
    skip = {"ok", "pod", "resent", "target_rate", "achieved_rate"}
    return {
        k: after[k] - before.get(k, 0.0)
        for k in after
        if k not in skip and after[k] - before.get(k, 0.0) > 0
    }


def resent(before: dict[str, float], after: dict[str, float]) -> float:
    """Requests the generator sent twice because a kept-alive connection closed unanswered."""
    return after.get("resent", 0.0) - before.get("resent", 0.0)


def no_failures(
    product: Product, ns: str, before: dict[str, float], after: dict[str, float]
) -> None:
    """No request failed between the two readings (else: the generator's own error log)."""
    lost = failed(before, after)
    if lost:
        logs = product.kubectl.run(
            "logs", "-n", ns, "-l", "app.kubernetes.io/component=loadgen", "--tail=20"
        )
        raise AssertionError(f"requests failed: {lost}\nload generator log:\n{logs.stdout}")


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
        "NAME", "VERSION", "SERVING", "ACCURACY", "GATE", "READY", "PHASE", "STEP", "WEIGHT",
        "ANALYSIS", "AGE",
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
    # The load generator sends at loadRate to the Service (its own counters); it starts once
    # a version serves, so not one of its requests fails.
    wait(
        lambda: loadgen_counts(product, ns, "iris").get("ok", 0) >= 3,
        60,
        "the load generator's first answers",
    )
    counts = loadgen_counts(product, ns, "iris")
    assert counts["target_rate"] == 1.0
    no_failures(product, ns, {}, counts)

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


# Rollouts under load: a rejected version never serves; a good one and replica changes lose
# no request -----------------------------------------------------------------------------------

KNN = {"algorithm": "knn", "hyperparameters": {"n_neighbors": 5, "max_depth": None}}
# Accuracy 0.67 on the sample's split: below minAccuracy and worse than the serving 0.97.
STUMP = {"algorithm": "decision_tree", "hyperparameters": {"n_neighbors": None, "max_depth": 1}}
SERVER = "app.kubernetes.io/component=server"


def server_pods(product: Product, ns: str, name: str, version: str | None = None) -> list[Any]:
    selector = f"modelops.dev/name={name},{SERVER}"
    if version:
        selector += f",modelops.dev/version={version}"
    return items(product, ns, "pods", selector)


def history_entry(md: dict[str, Any], version: str) -> dict[str, Any]:
    entry: dict[str, Any] = next(h for h in md["status"]["history"] if h["version"] == version)
    return entry


def seconds_between(start: str, end: str) -> float:
    parse = lambda t: time.mktime(time.strptime(t[:19], "%Y-%m-%dT%H:%M:%S"))  # noqa: E731
    return parse(end) - parse(start)


def settle_scale(product: Product, ns: str, replicas: int) -> None:
    """``kubectl scale md`` and wait until exactly ``replicas`` server pods exist (the others
    terminated, not only unready)."""
    product.kubectl("scale", "md", "iris", "-n", ns, f"--replicas={replicas}")
    product.serving(ns, "iris", "v3", replicas, SERVE_TIMEOUT)
    wait(
        lambda: len(server_pods(product, ns, "iris")) == replicas,
        120,
        f"{replicas} server pods left",
    )


def rollouts_under_load(product: Product, ns: str) -> None:
    apply(product, ns, sample(replicas=2, loadRate=20))
    product.serving(ns, "iris", "v1", 2, SERVE_TIMEOUT)
    wait(lambda: loadgen_counts(product, ns, "iris").get("ok", 0) >= 20, 60, "load flowing")
    before = loadgen_counts(product, ns, "iris")
    assert before["target_rate"] == 20.0
    no_failures(product, ns, {}, before)  # not one since it started

    # A version below minAccuracy (and worse than what serves) is rejected and never serves.
    patch_md(product, ns, "iris", {"modelVersion": "v2", "training": STUMP})
    md = product.wait_md(
        ns, "iris",
        lambda md: (md.get("status") or {}).get("gate", {}).get("result") == "Rejected"
        and md["status"].get("candidateVersion") == "v2",
        SERVE_TIMEOUT, "v2 rejected",
    )  # fmt: skip
    status = md["status"]
    assert (status["phase"], status["servingVersion"]) == ("Degraded", "v1"), status
    assert history_entry(md, "v2")["reason"] == "AccuracyBelowMinimum"
    assert not server_pods(product, ns, "iris", "v2")
    assert not items(product, ns, "replicasets", f"{SERVER},modelops.dev/version=v2")
    status_code, body = product.predict(ns, SETOSA)
    assert (status_code, body["model_version"]) == (200, "v1"), body

    # A good version rolls out while the load generator sends 20 req/s: no request fails.
    started = time.monotonic()
    patch_md(product, ns, "iris", {"modelVersion": "v3", "training": KNN})
    md = product.serving(ns, "iris", "v3", 2, SERVE_TIMEOUT)
    FIGURES["rollout: modelVersion changed → Serving, training included (s)"] = (
        time.monotonic() - started
    )
    entry = history_entry(md, "v3")
    FIGURES["rollout: gate accepted → Serving (s, status times)"] = seconds_between(
        entry["time"], entry["servedAt"]
    )
    wait(lambda: not server_pods(product, ns, "iris", "v1"), 120, "v1's pods gone")
    time.sleep(2)  # answers to requests sent before the last v1 pod went
    after = loadgen_counts(product, ns, "iris")
    assert after["pod"] == before["pod"], "the load generator was not restarted"
    FIGURES["rollout v1 → v3: requests answered"] = after["ok"] - before["ok"]
    FIGURES["rollout v1 → v3: requests failed"] = sum(failed(before, after).values())
    FIGURES["rollout v1 → v3: requests resent"] = resent(before, after)
    no_failures(product, ns, before, after)
    # It kept its rate meanwhile (over its last 10 s; generous for two busy cores).
    assert after["achieved_rate"] >= 10, after
    status_code, body = product.predict(ns, SETOSA)
    assert (status_code, body["model_version"]) == (200, "v3"), body

    # Replica changes under the same load: no request fails either.
    before = after
    settle_scale(product, ns, 3)
    settle_scale(product, ns, 1)
    time.sleep(2)
    after = loadgen_counts(product, ns, "iris")
    FIGURES["scale 2 → 3 → 1: requests answered"] = after["ok"] - before["ok"]
    FIGURES["scale 2 → 3 → 1: requests failed"] = sum(failed(before, after).values())
    FIGURES["scale 2 → 3 → 1: requests resent"] = resent(before, after)
    no_failures(product, ns, before, after)


# Both artifact paths; a model too big for the artifact store ----------------------------------


def artifact_paths(product: Product, ns: str) -> None:
    """A random forest does not fit the 4 KiB termination message: the operator reads the
    artifact from the trainer pod's log. One too big for a ConfigMap ends with a condition."""
    forest = {"algorithm": "random_forest", "hyperparameters": {}}
    apply(product, ns, sample("forest", replicas=1, loadRate=0, training=forest))
    product.serving(ns, "forest", "v1", 1, SERVE_TIMEOUT)
    (pod,) = items(product, ns, "pods", "batch.kubernetes.io/job-name=forest-train-v1")
    terminated = pod["status"]["containerStatuses"][0]["state"]["terminated"]
    summary = json.loads(terminated["message"])
    assert summary["status"] == "Succeeded" and "artifactBundle" not in summary
    cm = product.kubectl.json("get", "configmap", "forest-model-v1", "-n", ns)
    model = next(iter(cm["binaryData"].values()))
    assert len(model) * 3 // 4 > 4096, "the model itself is bigger than a termination message"
    assert cm["metadata"]["annotations"]["modelops.dev/model-sha256"] == summary["modelSha256"]
    status_code, body = product.predict(ns, SETOSA, service="forest")
    assert (status_code, body["species"]) == (200, "setosa"), body

    # 1600 trees: about 1.3 MB, more than a ConfigMap holds.
    huge = {"algorithm": "random_forest", "hyperparameters": {"n_estimators": 1600}}
    patch_md(product, ns, "forest", {"modelVersion": "v2", "training": huge})
    md = product.wait_md(
        ns, "forest",
        lambda md: any(h["version"] == "v2" for h in (md.get("status") or {}).get("history", [])),
        SERVE_TIMEOUT, "v2's outcome",
    )  # fmt: skip
    entry = history_entry(md, "v2")
    assert (entry["outcome"], entry["reason"]) == ("Failed", "ArtifactTooLarge"), entry
    assert "ConfigMap" in entry["message"] and "n_estimators" in entry["message"], entry
    conditions = {c["type"]: c for c in md["status"]["conditions"]}
    assert conditions["Degraded"]["status"] == "True"
    assert "ArtifactTooLarge" in conditions["Degraded"]["reason"] + conditions["Trained"]["reason"]
    assert (md["status"]["phase"], md["status"]["servingVersion"]) == ("Degraded", "v1")
    # No retry loop: the Job is not made again, the status stands still, one Warning.
    job_uid = product.kubectl.json("get", "job", "forest-train-v2", "-n", ns)["metadata"]["uid"]
    version = md["metadata"]["resourceVersion"]
    time.sleep(8)
    assert product.md(ns, "forest")["metadata"]["resourceVersion"] == version
    again = product.kubectl.json("get", "job", "forest-train-v2", "-n", ns)
    assert again["metadata"]["uid"] == job_uid
    assert product.kubectl.run("get", "configmap", "forest-model-v2", "-n", ns).returncode != 0
    events = product.kubectl.json(
        "get", "events", "-n", ns, "--field-selector", "type=Warning,involvedObject.name=forest"
    )["items"]
    assert len([e for e in events if "v2" in e["message"]]) == 1, events


def test_the_lifecycle_on_a_real_cluster(deployed_product: Product) -> None:
    product = deployed_product
    namespaces = {
        name: product.create_namespace(name) for name in ("sample", "rollout", "artifacts")
    }
    run_parallel(
        sample=lambda: sample_lifecycle(product, namespaces["sample"]),
        rollout=lambda: rollouts_under_load(product, namespaces["rollout"]),
        artifacts=lambda: artifact_paths(product, namespaces["artifacts"]),
    )
    print(f"\nfigures ({product.cluster}): {json.dumps(FIGURES, indent=1, ensure_ascii=False)}")
