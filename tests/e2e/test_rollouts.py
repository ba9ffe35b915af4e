"""A Canary rollout judged by live accuracy on a real cluster: the operator pod queries the
shipped Prometheus (which discovered the server pods by itself), rolls back a candidate trained
on mislabelled data that the offline gate accepted, promotes a good one, and the load
generator's requests through the Service never fail."""

from __future__ import annotations

import csv
import io
import json
import time
from typing import Any

import pytest

from modelops_testenv.product import Product

from .test_lifecycle import (
    FIGURES,
    SERVE_TIMEOUT,
    apply,
    history_entry,
    loadgen_counts,
    no_failures,
    patch_md,
    sample,
    seconds_between,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

# Two of Prometheus's 15 s scrapes of each version fit in the window.
PAUSE = 40
CANARY = {
    "strategy": "Canary", "steps": [50], "pauseSeconds": PAUSE,
    "analysis": {"minSamples": 50, "maxAccuracyDrop": 0.05, "maxLatencyP99Seconds": 2.0},
}  # fmt: skip
SWAPPED = {"versicolor": "virginica", "virginica": "versicolor"}
COLUMNS = ("sepal length (cm)", "sepal width (cm)", "petal length (cm)", "petal width (cm)")


def swapped_dataset(product: Product, ns: str) -> None:
    """Iris with versicolor and virginica swapped (a labelling bug) in a ConfigMap: its own
    test split has the same bug, so the gate accepts what it trains."""
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


def rollout(md: dict[str, Any]) -> dict[str, Any]:
    found: dict[str, Any] = (md.get("status") or {}).get("rollout") or {}
    return found


def test_canary_rolls_back_on_live_accuracy_then_promotes(deployed_product: Product) -> None:
    product = deployed_product
    ns = product.create_namespace("canary")
    swapped_dataset(product, ns)
    apply(product, ns, sample(replicas=2, loadRate=20, rollout=CANARY))
    product.serving(ns, "iris", "v1", 2, SERVE_TIMEOUT)
    before = loadgen_counts(product, ns, "iris")

    patch_md(product, ns, "iris", {
        "modelVersion": "v2", "gate": {"regressionTolerance": 0.1},
        "training": {"dataset": {"builtin": None, "configMap": {"name": "iris-swapped"}}},
    })  # fmt: skip
    md = product.wait_md(
        ns, "iris", lambda md: bool(rollout(md).get("stepStartedAt")) and
        rollout(md).get("version") == "v2", SERVE_TIMEOUT, "v2's canary step",
    )  # fmt: skip
    started = rollout(md)["stepStartedAt"]
    assert rollout(md)["weight"] == 50 and md["status"]["servingVersion"] == "v1"
    md = product.wait_md(
        ns, "iris", lambda md: rollout(md).get("state") == "RolledBack", PAUSE + 120,
        "v2 rolled back",
    )  # fmt: skip
    entry = history_entry(md, "v2")
    assert (entry["outcome"], entry["reason"]) == ("RolledBack", "LiveAccuracyBelowStable")
    analysis = rollout(md)["lastAnalysis"]
    assert analysis["candidateLiveAccuracy"] < 0.8 < analysis["stableLiveAccuracy"], analysis
    FIGURES["canary: step start → rolled back (s)"] = seconds_between(started, entry["time"])
    assert md["status"]["phase"] == "Degraded" and md["status"]["servingVersion"] == "v1"
    product.wait_md(
        ns, "iris",
        lambda md: product.kubectl.run("get", "deployment", "iris-candidate", "-n", ns)
        .returncode != 0, 120, "the candidate Deployment gone",
    )  # fmt: skip

    patch_md(product, ns, "iris", {
        "modelVersion": "v3", "gate": {"regressionTolerance": 0},
        "training": {"dataset": {"builtin": "iris", "configMap": None},
                     "hyperparameters": {"n_neighbors": 7}},
    })  # fmt: skip
    t0 = time.monotonic()
    md = product.wait_md(
        ns, "iris", lambda md: rollout(md).get("state") == "Promoted"
        and md["status"].get("phase") == "Serving", SERVE_TIMEOUT + PAUSE + 120, "v3 promoted",
    )  # fmt: skip
    FIGURES["canary: v3 asked → promoted, training included (s)"] = time.monotonic() - t0
    assert md["status"]["servingVersion"] == "v3"
    assert rollout(md)["lastAnalysis"]["result"] == "Passed"
    time.sleep(2)
    after = loadgen_counts(product, ns, "iris")
    assert after["pod"] == before["pod"], "the load generator was not restarted"
    FIGURES["canary: requests answered"] = after["ok"] - before["ok"]
    no_failures(product, ns, before, after)
    print(f"\nfigures ({product.cluster}): {json.dumps(FIGURES, indent=1, ensure_ascii=False)}")
