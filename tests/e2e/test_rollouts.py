"""Shadow and Canary rollouts judged by live accuracy on a real cluster.

The operator pod queries the shipped Prometheus (which found the server pods by itself); the
load generator sends its requests through the one Service and feedback for each labelled
prediction. Three scenarios run at once, each in its own namespace:

- canary: a good candidate promoted through both steps with no failed client request, and the
  operator's pod killed mid-step (the new pod resumes the same step and its pause);
- live accuracy: a candidate trained on mislabelled data (its own test split has the same
  bug, so the offline gate accepts it) rolled back by its live accuracy, the stable version
  serving throughout; the time to detect and roll back is measured;
- shadow: the candidate answers copies only; clients see the stable version's answers, the
  candidate's live accuracy is measured, the client's latency stays within a stated bound.

A candidate rolled back on latency or error ratio is tested against the real API server
(tests/operator/test_rollout_cluster.py): no model the trainer makes is reliably slow here.
"""

from __future__ import annotations

import csv
import io
import json
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from modelops_testenv.product import SYSTEM_NAMESPACE, Product, wait

from .test_lifecycle import (
    FIGURES,
    SERVE_TIMEOUT,
    apply,
    history_entry,
    items,
    loadgen_counts,
    no_failures,
    patch_md,
    resent,
    run_parallel,
    sample,
    seconds_between,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900, func_only=True)]

# Prometheus scrapes every 15 s: an analysis needs two scrapes of each version in its window,
# and retries every 10 s until it has them.
PAUSE = 20
ANALYSIS = {"minSamples": 20, "maxAccuracyDrop": 0.05, "maxLatencyP99Seconds": 2.0}
# Clients reconnect this often, so a step's weight reaches the load generator within seconds.
SERVING = {"maxConnectionAgeSeconds": 2}
LOAD = 20
# From a candidate's step start to its verdict: the pause, scrapes, retries, a slow machine.
VERDICT_TIMEOUT = PAUSE + 120
SWAPPED = {"versicolor": "virginica", "virginica": "versicolor"}
COLUMNS = ("sepal length (cm)", "sepal width (cm)", "petal length (cm)", "petal width (cm)")
OPERATOR_SELECTOR = "app.kubernetes.io/name=modelops-operator"
SETOSA = {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}


def generator_counts(product: Product, ns: str) -> dict[str, float]:
    """The load generator's counters once its pod runs and answers (it starts once a version
    serves, so it may still be starting)."""
    found: dict[str, float] = wait(
        lambda: (c := loadgen_counts(product, ns, "iris")).get("pod") is not None and c,
        120,
        f"{ns}: the load generator's counters",
    )
    return found


def rollout(md: dict[str, Any]) -> dict[str, Any]:
    found: dict[str, Any] = (md.get("status") or {}).get("rollout") or {}
    return found


def step_started(version: str, step: int) -> Any:
    def check(md: dict[str, Any]) -> bool:
        r = rollout(md)
        return r.get("version") == version and r.get("step") == step and "stepStartedAt" in r

    return check


def in_state(state: str) -> Any:
    return lambda md: rollout(md).get("state") == state


def answers(product: Product, ns: str, n: int) -> dict[str, Any]:
    """``n`` predictions from the namespace's client pod through the Service, each on a new
    connection (the Service's rules pick a pod each time): the versions that answered, and the
    client's latency (ms, median and p90)."""
    out = product.exec_python(ns, _ANSWERS, "http://iris:8000/predict", json.dumps(SETOSA), str(n))
    got: dict[str, Any] = json.loads(out)
    return got


def service_endpoints(product: Product, ns: str) -> set[str]:
    """The pod names behind the Service ``iris`` (its EndpointSlices, ready or not)."""
    slices = items(product, ns, "endpointslices", "kubernetes.io/service-name=iris")
    return {
        e["targetRef"]["name"]
        for s in slices
        for e in s.get("endpoints") or []
        if e.get("targetRef")
    }


def pod_names(product: Product, ns: str, selector: str) -> set[str]:
    return {
        p["metadata"]["name"]
        for p in items(product, ns, "pods", selector)
        if not p["metadata"].get("deletionTimestamp")
    }


# Canary: a good candidate through every step; the operator killed mid-step ------------------


def lease_holder(product: Product) -> str:
    lease = product.kubectl.json("get", "lease", "modelops-operator", "-n", SYSTEM_NAMESPACE)
    return str(lease["spec"].get("holderIdentity") or "")


def kill_operator(product: Product) -> float:
    """The operator's pod gone at once (a node failure, no Lease released); returns once a
    new pod holds the Lease (the seconds that took)."""
    started = time.monotonic()
    (pod,) = pod_names(product, SYSTEM_NAMESPACE, OPERATOR_SELECTOR)
    product.kubectl(
        "delete", "pod", pod, "-n", SYSTEM_NAMESPACE, "--grace-period=0", "--force", "--wait=false"
    )
    wait(
        lambda: lease_holder(product) in pod_names(product, SYSTEM_NAMESPACE, OPERATOR_SELECTOR)
        - {pod}, 120, "a new operator pod holding the Lease",
    )  # fmt: skip
    return time.monotonic() - started


def canary_promoted(product: Product, ns: str, others_decided: threading.Event) -> None:
    canary = {"strategy": "Canary", "steps": [50, 99], "pauseSeconds": PAUSE, "analysis": ANALYSIS}
    apply(product, ns, sample(replicas=2, loadRate=LOAD, rollout=canary, serving=SERVING))
    product.serving(ns, "iris", "v1", 2, SERVE_TIMEOUT)
    before = generator_counts(product, ns)
    patch_md(product, ns, "iris", {"modelVersion": "v2", "training": {
        "hyperparameters": {"n_neighbors": 7}}})  # fmt: skip
    md = product.wait_md(ns, "iris", step_started("v2", 1), SERVE_TIMEOUT, "canary step 1")
    assert (rollout(md)["weight"], md["status"]["servingVersion"]) == (50, "v1")
    # Both versions answer clients of the one Service, by replica weight.
    assert set(answers(product, ns, 30)["versions"]) == {"v1", "v2"}
    candidates = pod_names(product, ns, "modelops.dev/track=candidate")
    assert len(candidates) == 1 and candidates <= service_endpoints(product, ns)

    md = product.wait_md(ns, "iris", step_started("v2", 2), VERDICT_TIMEOUT, "canary step 2")
    assert rollout(md)["weight"] == 67 and rollout(md)["lastAnalysis"]["result"] == "Passed"
    assert len(pod_names(product, ns, "modelops.dev/track=candidate")) == 2
    started = rollout(md)["stepStartedAt"]
    # The other scenarios' verdicts first if they come soon (their time to decide is measured
    # without a restart); the kill must fall inside this step's pause.
    FIGURES["canary: the other scenarios had decided before the kill"] = float(
        others_decided.wait(PAUSE / 2)
    )
    FIGURES["canary: operator pod killed → a new pod holds the Lease (s)"] = kill_operator(product)
    time.sleep(5)  # the new leader's first pass over every resource
    md = product.md(ns, "iris")
    # Resumed: the same step, its pause from when it began (not started over, not step 1).
    assert rollout(md)["step"] == 2 and rollout(md)["version"] == "v2", rollout(md)
    assert rollout(md).get("stepStartedAt", started) == started, rollout(md)
    md = product.wait_md(
        ns, "iris", lambda md: in_state("Promoted")(md) and md["status"]["phase"] == "Serving",
        VERDICT_TIMEOUT + SERVE_TIMEOUT, "v2 promoted",
    )  # fmt: skip
    assert md["status"]["servingVersion"] == "v2" and md["status"]["ready"] == "2/2"
    # The step the killed operator was in ran once: one analysis passed it, no step restarted.
    passed = [e["message"] for e in product.posted(ns, "AnalysisPassed")]
    assert len(passed) == 1 and "step 1/2" in passed[0], passed
    assert len(product.posted(ns, "Promoted")) == 1
    product.wait_md(
        ns, "iris", lambda md: not pod_names(product, ns, "modelops.dev/track=candidate"),
        120, "the candidate's pods gone",
    )  # fmt: skip
    after = generator_counts(product, ns)
    assert after["pod"] == before["pod"], "the load generator was not restarted"
    FIGURES["canary: requests answered through both steps and the promotion"] = (
        after["ok"] - before["ok"]
    )
    FIGURES["canary: requests resent after a kept-alive close"] = resent(before, after)
    no_failures(product, ns, before, after)


# Live accuracy: a mislabelled candidate rolled back ------------------------------------------


def swapped_dataset(product: Product, ns: str) -> None:
    """Iris with versicolor and virginica swapped (a labelling bug) in a ConfigMap: the
    trainer's own test split has the same bug, so the gate accepts what it learnt."""
    from modelops_loadgen.payloads import load_iris_rows

    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow([*COLUMNS, "species"])
    for row in load_iris_rows():
        writer.writerow([*(f"{v:g}" for v in row.features), SWAPPED.get(row.species, row.species)])
    cm = {
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "iris-swapped"}, "data": {"dataset.csv": out.getvalue()},
    }  # fmt: skip
    product.kubectl("apply", "-n", ns, "-f", "-", input=json.dumps(cm))


def live_accuracy_rollback(product: Product, ns: str) -> None:
    swapped_dataset(product, ns)
    canary = {"strategy": "Canary", "steps": [50], "pauseSeconds": PAUSE, "analysis": ANALYSIS}
    apply(product, ns, sample(replicas=2, loadRate=LOAD, rollout=canary, serving=SERVING))
    product.serving(ns, "iris", "v1", 2, SERVE_TIMEOUT)
    before = generator_counts(product, ns)
    asked = time.monotonic()
    patch_md(product, ns, "iris", {
        "modelVersion": "v2", "gate": {"regressionTolerance": 0.1},
        "training": {"dataset": {"builtin": None, "configMap": {"name": "iris-swapped"}}},
    })  # fmt: skip
    md = product.wait_md(ns, "iris", step_started("v2", 1), SERVE_TIMEOUT, "v2's canary step")
    started = rollout(md)["stepStartedAt"]
    assert md["status"]["gate"]["result"] == "Accepted"  # it passed the offline gate
    md = product.wait_md(ns, "iris", in_state("RolledBack"), VERDICT_TIMEOUT, "v2 rolled back")
    FIGURES["live accuracy: v2 asked → rolled back, training included (s)"] = (
        time.monotonic() - asked
    )
    entry = history_entry(md, "v2")
    assert (entry["outcome"], entry["reason"]) == ("RolledBack", "LiveAccuracyBelowStable")
    FIGURES["live accuracy: canary step start → rolled back (s)"] = seconds_between(
        started, entry["time"]
    )
    analysis = rollout(md)["lastAnalysis"]
    assert analysis["candidateLiveAccuracy"] < 0.8 < analysis["stableLiveAccuracy"], analysis
    assert min(analysis["candidateSamples"], analysis["stableSamples"]) >= 20, analysis
    assert md["status"]["phase"] == "Degraded" and md["status"]["servingVersion"] == "v1"
    (event,) = product.posted(ns, "RolledBack")
    assert event["type"] == "Warning" and "live accuracy of v2" in event["message"]
    md = product.wait_md(
        ns, "iris", lambda md: md["status"].get("ready") == "2/2"
        and not pod_names(product, ns, "modelops.dev/track=candidate"), 120,
        "v1 on both replicas, the candidate gone",
    )  # fmt: skip
    assert set(answers(product, ns, 10)["versions"]) == {"v1"}
    after = generator_counts(product, ns)
    assert after["pod"] == before["pod"], "the load generator was not restarted"
    no_failures(product, ns, before, after)  # the stable version served throughout


# Shadow: copies only ---------------------------------------------------------------------------


def shadow_measured(product: Product, ns: str) -> None:
    shadow = {"strategy": "Shadow", "pauseSeconds": PAUSE, "analysis": ANALYSIS}
    apply(product, ns, sample(replicas=1, loadRate=LOAD, rollout=shadow, serving=SERVING))
    product.serving(ns, "iris", "v1", 1, SERVE_TIMEOUT)
    alone = answers(product, ns, 60)
    before = generator_counts(product, ns)
    patch_md(product, ns, "iris", {"modelVersion": "v2", "training": {
        "hyperparameters": {"n_neighbors": 7}}})  # fmt: skip
    md = product.wait_md(ns, "iris", step_started("v2", 1), SERVE_TIMEOUT, "v2 shadowing")
    assert rollout(md)["weight"] == 0 and md["status"]["servingVersion"] == "v1"
    # The candidate is not behind the Service: clients get the stable version's answers only.
    candidates = pod_names(product, ns, "modelops.dev/track=candidate")
    assert len(candidates) == 1 and not candidates & service_endpoints(product, ns)
    shadowed = answers(product, ns, 60)
    assert set(shadowed["versions"]) == {"v1"}, shadowed
    # Stated bound: copying does not delay the client's answer (it is sent after it): the
    # median stays within twice the median without a shadow, plus 20 ms for a busy machine.
    FIGURES["shadow: client median latency without a shadow (ms)"] = alone["median_ms"]
    FIGURES["shadow: client median latency with a shadow (ms)"] = shadowed["median_ms"]
    assert shadowed["median_ms"] <= 2 * alone["median_ms"] + 20, (alone, shadowed)
    md = product.wait_md(
        ns, "iris", lambda md: in_state("Promoted")(md) and md["status"]["phase"] == "Serving",
        VERDICT_TIMEOUT + SERVE_TIMEOUT, "v2 promoted after its shadow analysis",
    )  # fmt: skip
    analysis = rollout(md)["lastAnalysis"]
    assert analysis["result"] == "Passed" and analysis["candidateSamples"] >= 20, analysis
    assert analysis["candidateLiveAccuracy"] >= 0.9 and analysis["agreement"] >= 0.9, analysis
    # Those samples are the stable servers' judgement of the candidate's answers (the series
    # of replaced pods are stale now: their last values, read over a range).
    judged = product.query(
        f'sum(max_over_time(api_shadow_feedback_total{{namespace="{ns}",shadow_version="v2"}}'
        "[15m]))"
    )
    assert judged and float(judged[0]["value"][1]) >= ANALYSIS["minSamples"], judged
    after = generator_counts(product, ns)
    assert after["pod"] == before["pod"], "the load generator was not restarted"
    no_failures(product, ns, before, after)


def deciding(
    scenario: Callable[[Product, str], None], product: Product, ns: str, decided: threading.Event
) -> Callable[[], None]:
    """The scenario, then `decided` set, whatever its outcome (the canary waits for it)."""

    def run() -> None:
        try:
            scenario(product, ns)
        finally:
            decided.set()

    return run


def test_rollouts_on_a_real_cluster(deployed_product: Product) -> None:
    product = deployed_product
    ns = {
        name: product.create_namespace(f"rollout-{name}") for name in ("canary", "live", "shadow")
    }
    live_decided, shadow_decided = threading.Event(), threading.Event()
    both = threading.Event()

    def when_both() -> None:
        live_decided.wait(SERVE_TIMEOUT + VERDICT_TIMEOUT)
        shadow_decided.wait(SERVE_TIMEOUT + VERDICT_TIMEOUT)
        both.set()

    threading.Thread(target=when_both, daemon=True).start()
    try:
        run_parallel(
            canary=lambda: canary_promoted(product, ns["canary"], both),
            live=deciding(live_accuracy_rollback, product, ns["live"], live_decided),
            shadow=deciding(shadow_measured, product, ns["shadow"], shadow_decided),
        )
    finally:
        figures = json.dumps(FIGURES, indent=1, ensure_ascii=False)
        print(f"\nfigures ({product.cluster}): {figures}")


# Runs in the client pod: n predictions, a new connection each; versions and latency.
_ANSWERS = r"""
import http.client, json, sys, time, urllib.parse
url, body, n = urllib.parse.urlsplit(sys.argv[1]), sys.argv[2].encode(), int(sys.argv[3])
versions, took = [], []
for _ in range(n):
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=20)
    started = time.perf_counter()
    conn.request("POST", url.path, body, {"Content-Type": "application/json"})
    resp = conn.getresponse()
    answer = json.loads(resp.read())
    took.append((time.perf_counter() - started) * 1e3)
    conn.close()
    assert resp.status == 200, (resp.status, answer)
    versions.append(answer["model_version"])
took.sort()
print(json.dumps({"versions": sorted(set(versions)), "median_ms": took[len(took) // 2],
                  "p90_ms": took[int(len(took) * 0.9)]}))
"""
