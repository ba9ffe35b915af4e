"""Failures only a real cluster shows, on the product deployed as users deploy it (issue 14):
a rollout that never becomes ready, trainer pods deleted, evicted, out of memory or
unschedulable, a child the API server rejects, the operator's pod killed mid-rollout, and two
operator replicas handing over. Every assertion reads what the cluster holds (the API
server's objects and Lease, the kubelet's pod status, answers through a Service).

Independent scenarios run at once in their own namespaces (most of the time is spent
waiting for pods); the ones that kill the operator run alone, after them.
"""

from __future__ import annotations

import concurrent.futures
import json
import time
from typing import Any

import pytest

from modelops_testenv.product import SYSTEM_NAMESPACE, Product, wait

# The first test may wait for another session's node (15 min at most) and build the images.
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1800)]

OPERATOR_SELECTOR = "app.kubernetes.io/name=modelops-operator"
LEASE = "modelops-operator"
SETOSA = {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}
# Generous for two busy cores.
SERVE_TIMEOUT = 240.0
FIGURES: dict[str, float] = {}


def md(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "modelops.dev/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": name},
        "spec": {"modelVersion": "v1", "replicas": 1, "loadRate": 0, **spec},
    }


def apply(product: Product, ns: str, doc: dict[str, Any]) -> None:
    product.kubectl("apply", "-n", ns, "-f", "-", input=json.dumps(doc))


def patch(product: Product, ns: str, name: str, spec: dict[str, Any]) -> None:
    product.kubectl(
        "patch", "modeldeployment", name, "-n", ns, "--type=merge", "-p", json.dumps({"spec": spec})
    )


def pods(product: Product, ns: str, selector: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = product.kubectl.json("get", "pods", "-n", ns, "-l", selector)[
        "items"
    ]
    return found


def condition(md_: dict[str, Any], kind: str) -> dict[str, Any]:
    found = [c for c in (md_.get("status") or {}).get("conditions") or [] if c["type"] == kind]
    return found[0] if found else {}


def degraded_by(reason: str) -> Any:
    return lambda m: condition(m, "Degraded").get("reason") == reason


def run_parallel(**scenarios: Any) -> None:
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


# Scenarios that leave the operator alone --------------------------------------------------


def stuck_rollout(product: Product) -> None:
    """A serving.image that cannot be pulled: Degraded by the progress deadline, with the
    kubelet's reason; the pod of the last good image keeps answering."""
    ns = product.create_namespace("stuck-rollout")
    apply(product, ns, md("stuck", serving={"progressDeadlineSeconds": 15}))
    product.serving(ns, "stuck", "v1", 1, SERVE_TIMEOUT)
    repository = product.images["server"].rsplit(":", 1)[0]
    started = time.monotonic()
    patch(product, ns, "stuck", {"serving": {"image": f"{repository}:does-not-exist"}})
    got = product.wait_md(
        ns, "stuck", degraded_by("ProgressDeadlineExceeded"), 120, "Degraded by the deadline"
    )
    FIGURES["stuck rollout → Degraded (s, deadline 15 s)"] = time.monotonic() - started
    status = got["status"]
    assert status["phase"] == "Degraded" and status["servingVersion"] == "v1"
    message = condition(got, "Degraded")["message"]
    assert "spec.serving.progressDeadlineSeconds (15s)" in message, message
    assert "ErrImagePull" in message or "ImagePullBackOff" in message, message
    assert condition(got, "Progressing")["reason"] == "ProgressDeadlineExceeded"
    code, body = product.predict(ns, SETOSA, service="stuck")
    assert code == 200 and body["model_version"] == "v1", body
    # Back to the good image: the rollout completes and the condition clears.
    patch(product, ns, "stuck", {"serving": {"image": product.images["server"]}})
    product.wait_md(
        ns, "stuck", lambda m: condition(m, "Degraded").get("status") == "False", 120, "recovered"
    )


# A forest slow enough to be caught training (seconds on one core) whose model still fits
# a ConfigMap (0.3 MiB) and travels by the pod log (more than the 4 KiB termination message).
SLOW_TRAINING = {
    "algorithm": "random_forest",
    "hyperparameters": {"n_estimators": 1000, "max_depth": 2},
}
TRAINING_SAID = "modelops-trainer: training v1"  # once the trainer handles SIGTERM


def trainer_pods(product: Product, ns: str, name: str) -> list[dict[str, Any]]:
    return pods(product, ns, f"batch.kubernetes.io/job-name={name}-train-v1")


def training_pod(product: Product, ns: str, name: str) -> str:
    """The trainer pod once it says it trains (its log): it handles SIGTERM from then on."""

    def training() -> str | None:
        for pod in trainer_pods(product, ns, name):
            pod_name = pod["metadata"]["name"]
            if pod["status"].get("phase") != "Running" or pod["metadata"].get("deletionTimestamp"):
                continue
            log = product.kubectl.run("logs", "-n", ns, pod_name, "-c", "trainer").stdout
            if TRAINING_SAID in log:
                return str(pod_name)
        return None

    found: str = wait(training, 120, f"{ns}/{name}: the trainer training", interval=0.2)
    return found


def evict(product: Product, ns: str, pod: str) -> None:
    """What `kubectl drain` does: the Eviction API (the pod gets DisruptionTarget)."""
    eviction = {
        "apiVersion": "policy/v1",
        "kind": "Eviction",
        "metadata": {"name": pod, "namespace": ns},
    }
    product.kubectl(
        "create", "--raw", f"/api/v1/namespaces/{ns}/pods/{pod}/eviction", "-f", "-",
        input=json.dumps(eviction),
    )  # fmt: skip


def trained_anyway(product: Product, ns: str, name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The version trained and gated, nothing recorded failed; the status and the Job."""
    disrupted = time.monotonic()
    got = product.wait_md(
        ns,
        name,
        lambda m: bool((m.get("status") or {}).get("history")),
        240,
        "the version trained and gated",
    )
    assert [h["outcome"] for h in got["status"]["history"]] == ["Accepted"], got["status"]
    job = product.kubectl.json("get", "job", f"{name}-train-v1", "-n", ns)
    assert job["status"].get("succeeded") == 1, job["status"]
    assert not [c for c in job["status"]["conditions"] if c["type"] == "Failed"]
    events = product.kubectl.json("get", "events", "-n", ns)["items"]
    warnings = [f"{e['reason']}: {e['message']}" for e in events if e["type"] == "Warning"]
    FIGURES[f"trainer {name}: disrupted → trained and gated (s)"] = time.monotonic() - disrupted
    runs = got["status"].get("trainingRuns")
    print(f"\n{ns}: {runs} run(s), last Job failed={job['status'].get('failed')}; {warnings}")
    return got["status"], job["status"]


def trainer_deleted(product: Product) -> None:
    """`kubectl delete pod` mid-training: the trainer exits 143 on SIGTERM and the Job runs
    it again (a plain delete sets no DisruptionTarget); nothing is recorded as failed."""
    ns = product.create_namespace("trainer-deleted")
    apply(product, ns, md("deleted", training=SLOW_TRAINING))
    pod = training_pod(product, ns, "deleted")
    product.kubectl("delete", "pod", pod, "-n", ns, "--wait=false")
    status, job = trained_anyway(product, ns, "deleted")
    if status.get("trainingRuns", 1) == 1:  # else it had finished: its result was lost
        assert job.get("failed") == 1, job  # the deleted pod, retried by the Job


def trainer_evicted(product: Product) -> None:
    """Evicted mid-training (a node drain): the Job ignores the pod (DisruptionTarget) and
    runs it again."""
    ns = product.create_namespace("trainer-evicted")
    apply(product, ns, md("evicted", training=SLOW_TRAINING))
    evict(product, ns, training_pod(product, ns, "evicted"))
    status, job = trained_anyway(product, ns, "evicted")
    if status.get("trainingRuns", 1) == 1:
        assert not job.get("failed"), job  # ignored by the pod failure policy


def trainer_deleted_starting(product: Product) -> None:
    """Deleted before its trainer runs: the kubelet reports the container it never started as
    ContainerStatusUnknown (137), the pod failure policy fails the Job, and the operator runs
    the training again (or the Job does, if the pod went before the kubelet had it)."""
    ns = product.create_namespace("trainer-starting")
    apply(product, ns, md("starting"))
    (pod,) = wait(lambda: trainer_pods(product, ns, "starting"), 60, "the trainer pod")
    product.kubectl("delete", "pod", pod["metadata"]["name"], "-n", ns, "--wait=false")
    status, _ = trained_anyway(product, ns, "starting")
    assert status["trainingRuns"] in (1, 2), status


def trainer_out_of_memory(product: Product) -> None:
    ns = product.create_namespace("trainer-oom")
    resources = {"requests": {"cpu": "50m", "memory": "32Mi"}, "limits": {"memory": "40Mi"}}
    apply(product, ns, md("oom", training={"resources": resources}))
    got = product.wait_md(
        ns, "oom", lambda m: (m.get("status") or {}).get("phase") == "Failed", 180, "Failed"
    )
    entry = got["status"]["history"][0]
    assert entry["reason"] == "OOMKilled", entry
    assert "memory limit of 40Mi" in entry["message"], entry
    job = product.kubectl.json("get", "job", "oom-train-v1", "-n", ns)
    assert [c["reason"] for c in job["status"]["conditions"] if c["type"] == "Failed"] == [
        "PodFailurePolicy"
    ]


def trainer_unschedulable(product: Product) -> None:
    ns = product.create_namespace("trainer-unschedulable")
    resources = {"requests": {"memory": "900Gi"}, "limits": {"memory": "900Gi"}}
    apply(product, ns, md("unplaced", training={"resources": resources, "timeoutSeconds": 30}))
    got = product.wait_md(
        ns,
        "unplaced",
        lambda m: condition(m, "Trained").get("reason") == "Unschedulable",
        60,
        "the Trained condition saying the trainer cannot be scheduled",
    )
    assert "Insufficient memory" in condition(got, "Trained")["message"]
    # At the Job's deadline: the failure says why the pod never ran.
    got = product.wait_md(
        ns, "unplaced", lambda m: (m.get("status") or {}).get("phase") == "Failed", 120, "Failed"
    )
    entry = got["status"]["history"][0]
    assert entry["reason"] == "Unschedulable" and "never started" in entry["message"], entry


def child_rejected(product: Product) -> None:
    ns = product.create_namespace("child-rejected")
    bad = {"requests": {"memory": "2Gi"}, "limits": {"memory": "1Gi"}}
    started = time.monotonic()
    apply(product, ns, md("refused", training={"resources": bad}))
    got = product.wait_md(ns, "refused", degraded_by("ChildRejected"), 60, "ChildRejected")
    FIGURES["rejected child → condition (s)"] = time.monotonic() - started
    message = condition(got, "Degraded")["message"]
    assert "the API server rejected Job refused-train-v1" in message
    assert "must be less than or equal to memory limit" in message
    product.posted(ns, "ChildRejected")  # posted after the status that says so
    events = product.kubectl.json("get", "events", "-n", ns)["items"]
    assert [e["reason"] for e in events if e["type"] == "Warning"] == ["ChildRejected"]


def test_failures_are_reported_and_disruptions_run_again(deployed_product: Product) -> None:
    try:
        run_parallel(
            stuck_rollout=lambda: stuck_rollout(deployed_product),
            trainer_deleted=lambda: trainer_deleted(deployed_product),
            trainer_evicted=lambda: trainer_evicted(deployed_product),
            trainer_deleted_starting=lambda: trainer_deleted_starting(deployed_product),
            trainer_out_of_memory=lambda: trainer_out_of_memory(deployed_product),
            trainer_unschedulable=lambda: trainer_unschedulable(deployed_product),
            child_rejected=lambda: child_rejected(deployed_product),
        )
    finally:
        print(f"\nfigures: {json.dumps(FIGURES, indent=1)}")


# The operator killed; two replicas --------------------------------------------------------


def operator_pods(product: Product) -> list[dict[str, Any]]:
    return [
        p
        for p in pods(product, SYSTEM_NAMESPACE, OPERATOR_SELECTOR)
        if not p["metadata"].get("deletionTimestamp")
    ]


def lease_holder(product: Product) -> str:
    lease = product.kubectl.json("get", "lease", LEASE, "-n", SYSTEM_NAMESPACE)
    return str(lease["spec"].get("holderIdentity") or "")


def kill(product: Product, pod: str) -> None:
    """The pod gone at once, as a node failure or a forced eviction makes it."""
    product.kubectl(
        "delete", "pod", pod, "-n", SYSTEM_NAMESPACE, "--grace-period=0", "--force", "--wait=false"
    )


def scale_operator(product: Product, replicas: int) -> None:
    product.kubectl(
        "scale", "deployment/modelops-operator", "-n", SYSTEM_NAMESPACE, f"--replicas={replicas}"
    )
    product.kubectl(
        "rollout", "status", "deployment/modelops-operator", "-n", SYSTEM_NAMESPACE,
        "--timeout=180s", timeout=200,
    )  # fmt: skip


def test_operator_killed_mid_rollout_and_two_replicas_hand_over(deployed_product: Product) -> None:
    product = deployed_product
    ns = product.create_namespace("operator-killed")
    (leader,) = operator_pods(product)
    assert lease_holder(product) == leader["metadata"]["name"]
    apply(product, ns, md("resilient"))
    wait(
        lambda: pods(product, ns, "batch.kubernetes.io/job-name=resilient-train-v1"),
        120,
        "the trainer pod",
    )
    # 1. The only operator pod dies mid-rollout; its Deployment's next pod takes over.
    kill(product, leader["metadata"]["name"])
    product.serving(ns, "resilient", "v1", 1, SERVE_TIMEOUT)
    jobs = product.kubectl.json("get", "jobs", "-n", ns)["items"]
    assert [j["metadata"]["name"] for j in jobs] == ["resilient-train-v1"]
    assert jobs[0]["status"].get("succeeded") == 1
    trainers = pods(product, ns, "batch.kubernetes.io/job-name=resilient-train-v1")
    assert len(trainers) == 1, "trained once"
    assert lease_holder(product) != leader["metadata"]["name"]

    # 2. Two replicas: one leads, the other stands by and acts on nothing.
    scale_operator(product, 2)
    try:
        replicas = {p["metadata"]["name"] for p in operator_pods(product)}
        assert len(replicas) == 2
        holder = wait(
            lambda: lease_holder(product) in replicas and lease_holder(product), 60, "a leader"
        )
        (standby,) = replicas - {holder}
        wait(
            lambda: "standing by" in product.kubectl("logs", "-n", SYSTEM_NAMESPACE, standby),
            60,
            "the second replica standing by",
        )
        patch(product, ns, "resilient", {"replicas": 2})
        product.serving(ns, "resilient", "v1", 2, SERVE_TIMEOUT)
        assert "reconciled" not in product.kubectl("logs", "-n", SYSTEM_NAMESPACE, standby)
        # 3. The leader killed: the standby takes the Lease and acts.
        killed = time.monotonic()
        kill(product, holder)
        wait(lambda: lease_holder(product) == standby, 120, "the standby leading", interval=0.2)
        FIGURES["operator failover: leader killed → standby holds the Lease (s)"] = (
            time.monotonic() - killed
        )
        patch(product, ns, "resilient", {"replicas": 1})
        product.serving(ns, "resilient", "v1", 1, SERVE_TIMEOUT)
        FIGURES["operator failover: leader killed → a change applied (s)"] = (
            time.monotonic() - killed
        )
        assert "reconciled" in product.kubectl("logs", "-n", SYSTEM_NAMESPACE, standby)
    finally:
        scale_operator(product, 1)
        print(f"\nfigures: {json.dumps(FIGURES, indent=1)}")
