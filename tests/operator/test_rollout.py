"""Shadow and Canary rollouts (core/rollout.py): the analysis from query results, the steps,
promotion and rollback, over plain data (pure; no cluster, no Prometheus)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from modelops import names
from modelops.core import render, rollout
from modelops.core.plan import plan
from modelops.core.rollout import Figures, QueryResults
from modelops.core.state import Observed
from modelops.settings import Settings
from modelops.spec import Analysis, ModelDeploymentSpec

from .test_reconcile import available

pytestmark = pytest.mark.unit

SETTINGS = Settings()
PROM = Settings(prometheus_url="http://prom:9090")
T0 = "2026-01-01T00:00:00Z"
T1 = "2026-01-01T00:00:30Z"  # within the pause
T2 = "2026-01-01T00:01:05Z"  # past a 60 s pause
T3 = "2026-01-01T00:01:20Z"  # RETRY_SECONDS after T2
ANALYSIS = Analysis("", 100, 0.02, 0.9, 0.01, 0.5)


# ---- figures and the decision ----------------------------------------------------------------


def vectors(
    cand=(97, 100), stable=(96, 100), errors=0, requests=200, p99=0.002, shadow=(0, 0)
) -> QueryResults:
    """Query results as Prometheus gives them: candidate v2 vs stable v1."""
    feedback = []
    for version, (correct, total) in (("v2", cand), ("v1", stable)):
        feedback += [
            ({"model_version": version, "result": "correct"}, float(correct)),
            ({"model_version": version, "result": "incorrect"}, float(total - correct)),
        ]
    return QueryResults(
        {
            "feedback": feedback,
            "shadow": [
                ({"shadow_version": "v2", "result": "agree"}, float(shadow[0])),
                ({"shadow_version": "v2", "result": "disagree"}, float(shadow[1])),
                ({"shadow_version": "", "result": "dropped"}, 5.0),
            ],
            "requests": [
                ({"version": "v2", "code": "200"}, float(requests - errors)),
                ({"version": "v2", "code": "503"}, float(errors)),
                ({"version": "v1", "code": "500"}, 50.0),  # the stable's errors are not its
            ],
            "latency": [({"version": "v2"}, p99), ({"version": "v1"}, 9.0)],
        }
    )


def judged(results: QueryResults, strategy=names.STRATEGY_CANARY) -> rollout.Verdict:
    return rollout.judge(rollout.figures(results, "v1", "v2"), ANALYSIS, strategy, "v1", "v2")


def test_figures_read_each_version_from_the_vectors():
    f = rollout.figures(vectors(cand=(90, 120), errors=4, shadow=(45, 5)), "v1", "v2")
    assert (f.candidate_correct, f.candidate_samples) == (90, 120)
    assert (f.stable_correct, f.stable_samples) == (96, 100)
    assert f.candidate_accuracy == 0.75 and f.stable_accuracy == 0.96
    assert f.agreement == 0.9 and f.compared == 50
    assert f.error_ratio == 4 / 200
    assert f.latency_p99 == 0.002
    nan = QueryResults({"latency": [({"version": "v2"}, float("nan"))]})
    assert rollout.figures(nan, "v1", "v2").latency_p99 is None  # no requests in the window


def test_a_shadow_candidate_is_judged_by_what_the_stable_servers_counted():
    results = vectors(cand=(10, 12))  # its own count: only the relays that found their replica
    results.vectors["shadow_feedback"] = [
        ({"shadow_version": "v2", "result": "correct"}, 80.0),
        ({"shadow_version": "v2", "result": "incorrect"}, 20.0),
    ]
    shadowed = rollout.figures(results, "v1", "v2", shadow=True)
    assert (shadowed.candidate_correct, shadowed.candidate_samples) == (80, 100)
    assert (shadowed.stable_correct, shadowed.stable_samples) == (96, 100)
    canary = rollout.figures(results, "v1", "v2")  # a canary serves clients: its own count
    assert (canary.candidate_correct, canary.candidate_samples) == (10, 12)
    # Stable servers of a build that did not judge: no such series, the candidate's own count.
    older = rollout.figures(vectors(cand=(10, 12)), "v1", "v2", shadow=True)
    assert (older.candidate_correct, older.candidate_samples) == (10, 12)


def test_queries_select_the_resource_and_window():
    q = rollout.queries("ml", "iris", 60)
    assert set(q) == {"feedback", "shadow", "shadow_feedback", "requests", "latency"}
    for text in q.values():
        assert 'namespace="ml",modeldeployment="iris"' in text and "[60s]" in text
    assert "api_feedback_total" in q["feedback"] and "model_version" in q["feedback"]
    assert "/healthz" in q["requests"]  # probes are left out of the error ratio


def test_a_candidate_as_good_as_stable_passes():
    verdict = judged(vectors())
    assert verdict.result == names.ANALYSIS_PASSED
    assert verdict.reason == names.REASON_WITHIN_THRESHOLDS
    assert "0.9700 vs 0.9600" in verdict.message


def test_worse_live_accuracy_fails_once_both_have_enough_samples():
    verdict = judged(vectors(cand=(70, 100)))
    assert verdict.result == names.ANALYSIS_FAILED
    assert verdict.reason == names.REASON_LIVE_ACCURACY
    assert "0.7000" in verdict.message and "0.9600" in verdict.message
    few = judged(vectors(cand=(7, 10)))  # as bad, but 10 samples of 100
    assert few.result == names.ANALYSIS_INCONCLUSIVE
    assert "v2 has 10 of 100 feedback samples" in few.message


def test_a_drop_within_sampling_noise_is_not_a_rollback():
    # Seen on the real node: an equally good candidate, 89 of 98 rows right against the
    # stable's 546 of 569 (a point drop of 0.053 over a 0.05 limit), is noise at 98 rows.
    noisy = Analysis("", 20, 0.05, 0.9, 0.01, 0.5)
    verdict = rollout.judge(
        rollout.figures(vectors(cand=(89, 98), stable=(546, 569)), "v1", "v2"),
        noisy, names.STRATEGY_CANARY, "v1", "v2",
    )  # fmt: skip
    assert verdict.result == names.ANALYSIS_PASSED, verdict.message
    # The same sample sizes show a real drop: 70 of 98.
    worse = rollout.figures(vectors(cand=(70, 98), stable=(546, 569)), "v1", "v2")
    assert rollout.judge(worse, noisy, names.STRATEGY_CANARY, "v1", "v2").result == "Failed"
    # Enough rows make a small drop over the limit certain: 0.90 against 0.96 on 10,000 each.
    many = rollout.figures(vectors(cand=(9000, 10000), stable=(9600, 10000)), "v1", "v2")
    assert 0.05 < rollout.accuracy_drop_beyond_noise(many) < 0.06
    assert rollout.judge(many, noisy, names.STRATEGY_CANARY, "v1", "v2").result == "Failed"
    # 20 of 20 right is not certainty: the bound stays below the point drop.
    perfect = rollout.figures(vectors(cand=(19, 20), stable=(20, 20)), "v1", "v2")
    assert rollout.accuracy_drop_beyond_noise(perfect) < 0.05


def test_agreement_fails_only_beyond_sampling_noise():
    # 17 of 20 agreeing (85 %) against a 90 % minimum is noise; 12 of 20 is not.
    close = judged(vectors(shadow=(17, 3)), names.STRATEGY_SHADOW)
    assert close.result == names.ANALYSIS_PASSED, close.message
    far = judged(vectors(shadow=(12, 8)), names.STRATEGY_SHADOW)
    assert (far.result, far.reason) == (names.ANALYSIS_FAILED, names.REASON_AGREEMENT)


def test_errors_and_latency_fail_without_waiting_for_feedback():
    errors = judged(vectors(cand=(0, 0), errors=30))
    assert (errors.result, errors.reason) == (names.ANALYSIS_FAILED, names.REASON_ERROR_RATIO)
    assert "15.00% of 200 requests" in errors.message
    slow = judged(vectors(cand=(0, 0), p99=0.9))
    assert (slow.result, slow.reason) == (names.ANALYSIS_FAILED, names.REASON_LATENCY)
    # A handful of requests is not enough to call an error ratio.
    assert judged(vectors(cand=(0, 0), errors=3, requests=5)).result == "Inconclusive"


def test_agreement_counts_in_shadow_only():
    disagreeing = vectors(shadow=(40, 60))
    shadow = judged(disagreeing, names.STRATEGY_SHADOW)
    assert (shadow.result, shadow.reason) == (names.ANALYSIS_FAILED, names.REASON_AGREEMENT)
    assert judged(disagreeing, names.STRATEGY_CANARY).result == names.ANALYSIS_PASSED
    nothing_compared = judged(vectors(), names.STRATEGY_SHADOW)
    assert nothing_compared.result == names.ANALYSIS_INCONCLUSIVE
    assert judged(vectors(shadow=(99, 1)), names.STRATEGY_SHADOW).result == "Passed"


def test_analysis_record_keeps_the_figures():
    record = rollout.analysis_record(judged(vectors()), 2, T2, 7)
    assert record["result"] == "Passed" and record["step"] == 2 and record["time"] == T2
    assert record["candidateLiveAccuracy"] == 0.97 and record["stableLiveAccuracy"] == 0.96
    assert record["candidateSamples"] == 100 and record["errorRatio"] == 0.0
    assert "agreement" not in record  # not measured in a Canary
    assert record["generation"] == 7
    unavailable = rollout.Verdict("Unavailable", "x", "y")
    assert rollout.analysis_record(unavailable, 1, T2, 1)["candidateSamples"] == 0


@pytest.mark.parametrize(
    ("replicas", "steps", "expected"),
    [
        (4, (25, 50), [(1, 3, 25), (2, 2, 50)]),
        (1, (25, 50), [(1, 1, 50), (1, 1, 50)]),  # one replica each: the Service splits 50/50
        (10, (10, 30, 90), [(1, 9, 10), (3, 7, 30), (9, 1, 90)]),
    ],
)
def test_canary_steps_by_replica_weight(replicas, steps, expected):
    got = [
        rollout.step_replicas(names.STRATEGY_CANARY, steps, replicas, i + 1)
        for i in range(len(steps))
    ]
    assert got == expected
    assert rollout.step_replicas(names.STRATEGY_SHADOW, steps, replicas, 1) == (
        replicas,
        replicas,
        0,
    )


def test_unsorted_steps_are_taken_in_order():
    spec = ModelDeploymentSpec.from_dict(
        {"modelVersion": "v1", "rollout": {"strategy": "Canary", "steps": [50, 10, 50]}}
    )
    assert spec.rollout.steps == (10, 50)


# ---- the phases, through plan() --------------------------------------------------------------


def cr(strategy="Canary", rollout_status=None, replicas=4, **rollout_spec) -> dict[str, Any]:
    status = {
        "servingVersion": "v1",
        "accuracy": 0.95,
        "history": [accepted("v2", 0.96), accepted("v1", 0.95)],
    }
    if rollout_status is not None:
        status["rollout"] = rollout_status
    return {
        "apiVersion": "modelops.dev/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": "iris", "namespace": "ml", "uid": "u-1", "generation": 2},
        "spec": {
            "modelVersion": "v2",
            "replicas": replicas,
            "rollout": {"strategy": strategy, "pauseSeconds": 60, **rollout_spec},
        },
        "status": status,
    }


def accepted(version: str, accuracy: float) -> dict[str, Any]:
    return {
        "version": version,
        "accuracy": accuracy,
        "outcome": names.ACCEPTED,
        "reason": "Improved",
        "message": f"accuracy {accuracy}",
        "modelSha256": f"sha-{version}",
        "time": T0,
    }


def artifact(resource: dict[str, Any], version: str) -> dict[str, Any]:
    metadata = {
        "metrics": {"test_accuracy": 0.95},
        "model_sha256": f"sha-{version}",
        "created_at": T0,
        "version": version,
    }
    return render.artifact_configmap(resource, version, metadata, b"model")


def observed(resource, stable=("v1", 4), candidate=None, shadow=False) -> Observed:
    """What the API server holds: the stable Deployment (version, replicas) fully available,
    and the candidate's with ``candidate`` replicas when given."""
    spec = ModelDeploymentSpec.from_dict(resource["spec"])
    server = render.server_deployment(
        resource, spec, SETTINGS, stable[0], f"sha-{stable[0]}", stable[1]
    )
    cand = None
    if candidate is not None:
        cand = available(
            render.candidate_deployment(
                resource, spec, SETTINGS, "v2", "sha-v2", candidate, shadow=shadow
            )
        )
    return Observed(
        artifacts={v: artifact(resource, v) for v in ("v1", "v2")},
        server=available(server),
        service=render.service(resource, spec),
        candidate=cand,
    )


def applied(p, name: str) -> dict[str, Any] | None:
    return next((m for m in p.apply if m["metadata"]["name"] == name), None)


def reasons(p) -> list[str]:
    return [e.reason for e in p.events]


@pytest.mark.parametrize(
    "resource", [cr(strategy="Direct"), cr(replicas=0)], ids=["direct", "zero"]
)
def test_direct_is_todays_rollout(resource):
    p = plan(resource, observed(resource), {}, SETTINGS, T0)
    server = applied(p, "iris-server")
    assert (
        server is not None
        and server["spec"]["template"]["metadata"]["labels"][names.LABEL_VERSION] == "v2"
    )
    assert applied(p, "iris-candidate") is None and "rollout" not in p.status


def test_canary_starts_beside_the_stable_version():
    resource = cr()
    p = plan(resource, observed(resource), {}, SETTINGS, T0)
    server = applied(p, "iris-server")
    assert server is not None and server["spec"]["replicas"] == 3  # v1 keeps 3 of 4
    assert server["spec"]["template"]["metadata"]["labels"][names.LABEL_VERSION] == "v1"
    candidate = applied(p, "iris-candidate")
    assert candidate is not None and candidate["spec"]["replicas"] == 1
    pod_labels = candidate["spec"]["template"]["metadata"]["labels"]
    # Selected by the one Service (its selector ⊆ the pod's labels), owned by its own selector.
    assert render.server_selector("iris").items() <= pod_labels.items()
    assert candidate["spec"]["selector"]["matchLabels"] == {
        names.LABEL_NAME: "iris",
        names.LABEL_TRACK: names.TRACK_CANDIDATE,
    }
    assert pod_labels[names.LABEL_VERSION] == "v2"
    assert reasons(p) == [names.EVENT_ROLLOUT_STARTED]
    record = p.status["rollout"]
    assert record["state"] == "Progressing" and record["progress"] == "1/2"
    assert record["weight"] == 25 and "stepStartedAt" not in record
    assert p.status["phase"] == names.ROLLING_OUT and p.status["servingVersion"] == "v1"


def step_record(step=1, started=T0, state="Progressing", **extra) -> dict[str, Any]:
    return {
        "strategy": "Canary", "version": "v2", "stableVersion": "v1", "state": state,
        "step": step, "steps": 2, "stepStartedAt": started, **extra,
    }  # fmt: skip


def test_the_pause_starts_when_the_step_is_ready_and_asks_for_a_pass_at_its_end():
    resource = cr(rollout_status=step_record(started=None))
    p = plan(resource, observed(resource, ("v1", 3), 1), {}, SETTINGS, T0)
    assert p.status["rollout"]["stepStartedAt"] == T0
    assert p.requeue_after == 60
    later = cr(rollout_status=p.status["rollout"])
    assert rollout.analysis_request(later, PROM, T1) is None  # still pausing
    p = plan(later, observed(later, ("v1", 3), 1), {}, SETTINGS, T1)
    assert p.requeue_after == 30 and not p.events


def test_analysis_is_due_after_the_pause_against_the_configured_prometheus():
    resource = cr(rollout_status=step_record())
    request = rollout.analysis_request(resource, PROM, T2)
    assert request is not None and request.prometheus_url == "http://prom:9090"
    assert "[60s]" in request.queries["feedback"] and request.problem == ""
    assert rollout.analysis_request(cr(strategy="Direct"), PROM, T2) is None


def test_a_spec_may_name_only_a_prometheus_the_admin_allows():
    own = cr(rollout_status=step_record(), analysis={"prometheusURL": "http://mine:9090"})
    refused = rollout.analysis_request(own, PROM, T2)
    assert refused is not None and refused.prometheus_url == "http://mine:9090"
    assert "MODELOPS_PROMETHEUS_ALLOWED_URLS" in refused.problem
    allowing = Settings(prometheus_url="http://prom:9090", prometheus_allowed_urls=("http://mine",))
    allowed = rollout.analysis_request(own, allowing, T2)
    assert allowed is not None and allowed.problem == ""


def test_a_passed_step_moves_to_the_next():
    resource = cr(rollout_status=step_record())
    p = plan(resource, observed(resource, ("v1", 3), 1), {}, SETTINGS, T2, vectors())
    record = p.status["rollout"]
    assert record["step"] == 2 and "stepStartedAt" not in record
    assert record["lastAnalysis"]["result"] == "Passed"
    assert reasons(p) == [names.EVENT_ANALYSIS_PASSED]
    assert applied(p, "iris-candidate")["spec"]["replicas"] == 2  # type: ignore[index]
    assert applied(p, "iris-server")["spec"]["replicas"] == 2  # type: ignore[index]


def test_an_inconclusive_step_waits_and_asks_again():
    resource = cr(rollout_status=step_record())
    few = vectors(cand=(5, 5))
    p = plan(resource, observed(resource, ("v1", 3), 1), {}, SETTINGS, T2, few)
    record = p.status["rollout"]
    assert record["step"] == 1 and record["lastAnalysis"]["result"] == "Inconclusive"
    assert record["stepStartedAt"] == T0 and p.requeue_after == rollout.RETRY_SECONDS
    assert not p.events


def test_the_last_step_promotes_then_the_candidate_goes():
    resource = cr(rollout_status=step_record(step=2))
    p = plan(resource, observed(resource, ("v1", 2), 2), {}, SETTINGS, T2, vectors())
    assert p.status["rollout"]["state"] == names.ROLLOUT_PROMOTING
    assert reasons(p) == [names.EVENT_PROMOTED]
    server = applied(p, "iris-server")
    assert server is not None and server["spec"]["replicas"] == 4
    assert server["spec"]["template"]["metadata"]["labels"][names.LABEL_VERSION] == "v2"
    assert not [r for r in p.delete if r.name == "iris-candidate"]  # serves until v2 is out
    # The stable Deployment rolled to v2: serving moves, the candidate is deleted.
    after = cr(rollout_status=p.status["rollout"])
    p = plan(after, observed(after, ("v2", 4), 2), {}, SETTINGS, T2)
    assert p.status["servingVersion"] == "v2" and names.EVENT_ROLLED_OUT in reasons(p)
    done = cr(rollout_status=p.status["rollout"])
    done["status"]["servingVersion"] = "v2"
    p = plan(done, observed(done, ("v2", 4), 2), {}, SETTINGS, T2)
    assert p.status["rollout"]["state"] == names.ROLLOUT_PROMOTED
    assert p.status["phase"] == names.SERVING
    assert [r.name for r in p.delete if r.kind == "Deployment"] == ["iris-candidate"]


def test_a_failed_analysis_rolls_back_at_once():
    resource = cr(rollout_status=step_record())
    bad = vectors(cand=(60, 150))
    p = plan(resource, observed(resource, ("v1", 3), 1), {}, SETTINGS, T2, bad)
    record = p.status["rollout"]
    assert record["state"] == names.ROLLOUT_ROLLED_BACK and record["weight"] == 0
    assert reasons(p) == [names.EVENT_ROLLED_BACK]
    server = applied(p, "iris-server")
    assert server is not None and server["spec"]["replicas"] == 4  # v1 takes every replica
    assert server["spec"]["template"]["metadata"]["labels"][names.LABEL_VERSION] == "v1"
    assert [r.name for r in p.delete if r.kind == "Deployment"] == ["iris-candidate"]
    entry = p.status["history"][0]
    assert entry["outcome"] == names.OUTCOME_ROLLED_BACK
    assert entry["reason"] == names.REASON_LIVE_ACCURACY and entry["gateReason"] == "Improved"
    assert p.status["phase"] == names.DEGRADED and p.status["servingVersion"] == "v1"
    assert p.status["gate"]["result"] == names.ACCEPTED  # the offline gate did accept it
    degraded = {c["type"]: c for c in p.status["conditions"]}[names.CONDITION_DEGRADED]
    assert (
        degraded["reason"] == names.REASON_LIVE_ACCURACY
        and "still serving v1" in (degraded["message"])
    )
    # Later passes keep it rolled back (the verdict is in the history).
    after = copy.deepcopy(resource)
    after["status"].update(history=p.status["history"], rollout=record)
    p = plan(after, observed(after, ("v1", 4)), {}, SETTINGS, T2)
    assert p.status["rollout"]["state"] == names.ROLLOUT_ROLLED_BACK and not p.events
    assert applied(p, "iris-candidate") is None


def test_an_unreachable_prometheus_pauses_and_says_so_once():
    resource = cr(rollout_status=step_record())
    away = QueryResults(error="Prometheus at http://prom:9090 cannot be reached (refused)")
    p = plan(resource, observed(resource, ("v1", 3), 1), {}, SETTINGS, T2, away)
    record = p.status["rollout"]
    assert record["state"] == names.ROLLOUT_PAUSED
    assert record["lastAnalysis"]["result"] == names.ANALYSIS_UNAVAILABLE
    assert "cannot be reached" in record["message"] and "the rollout waits" in record["message"]
    assert reasons(p) == [names.EVENT_ROLLOUT_PAUSED]
    assert applied(p, "iris-server") is None  # v1 keeps its 3, the candidate its 1
    again = cr(rollout_status=record)
    assert rollout.analysis_request(again, PROM, T2) is None  # asked just now
    assert rollout.analysis_request(again, PROM, T3) is not None
    fixed = copy.deepcopy(again)
    fixed["metadata"]["generation"] += 1  # e.g. prometheusURL corrected: tried at once
    assert rollout.analysis_request(fixed, PROM, T2) is not None
    p = plan(again, observed(again, ("v1", 3), 1), {}, SETTINGS, T3, away)
    assert not p.events and p.status["rollout"]["state"] == names.ROLLOUT_PAUSED
    # Prometheus is back: the analysis decides.
    p = plan(again, observed(again, ("v1", 3), 1), {}, SETTINGS, T3, vectors())
    assert p.status["rollout"]["state"] == "Progressing" and p.status["rollout"]["step"] == 2


def test_a_restarted_operator_resumes_at_the_recorded_step():
    """Everything a rollout remembers is in status.rollout: a new operator process plans
    from it alone, at the same step and with the same pause."""
    resource = cr(rollout_status=step_record(step=2, started=T0))
    p = plan(resource, observed(resource, ("v1", 2), 2), {}, SETTINGS, T1)
    record = p.status["rollout"]
    assert (record["step"], record["stepStartedAt"], record["weight"]) == (2, T0, 50)
    assert applied(p, "iris-candidate") is None and applied(p, "iris-server") is None
    assert not p.events and p.requeue_after == 30


def test_shadow_copies_from_the_stable_servers_to_the_candidate_service():
    resource = cr(strategy="Shadow")
    p = plan(resource, observed(resource), {}, SETTINGS, T0)
    server = applied(p, "iris-server")
    assert server is not None and server["spec"]["replicas"] == 4
    env = {
        e["name"]: e["value"] for e in server["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert env["MODELOPS_SERVER_SHADOW_URL"] == "http://iris-candidate.ml.svc:8000"
    candidate = applied(p, "iris-candidate")
    assert candidate is not None and candidate["kind"] == "Deployment"
    pod_labels = candidate["spec"]["template"]["metadata"]["labels"]
    assert pod_labels[names.LABEL_COMPONENT] == names.COMPONENT_SHADOW  # not in the Service
    assert not render.server_selector("iris").items() <= pod_labels.items()
    service = next(m for m in p.apply if m["kind"] == "Service" and m is not applied(p, "iris"))
    assert service["metadata"]["name"] == "iris-candidate"
    assert service["spec"]["selector"] == {
        names.LABEL_NAME: "iris",
        names.LABEL_TRACK: names.TRACK_CANDIDATE,
    }
    assert p.status["rollout"]["progress"] == "1/1" and p.status["rollout"]["weight"] == 0


def test_shadow_promotion_drops_the_copies():
    resource = cr(strategy="Shadow", rollout_status={**step_record(), "strategy": "Shadow",
                                                      "steps": 1})  # fmt: skip
    p = plan(
        resource, observed(resource, ("v1", 4), 4, shadow=True), {}, SETTINGS, T2,
        vectors(shadow=(200, 0)),
    )  # fmt: skip
    assert p.status["rollout"]["state"] == names.ROLLOUT_PROMOTING
    server = applied(p, "iris-server")
    assert server is not None
    env = {e["name"] for e in server["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert "MODELOPS_SERVER_SHADOW_URL" not in env


def test_a_new_candidate_replaces_a_finished_record():
    old = {**step_record(), "version": "v0", "state": names.ROLLOUT_PROMOTED}
    resource = cr(rollout_status=old)
    p = plan(resource, observed(resource), {}, SETTINGS, T0)
    assert p.status["rollout"]["version"] == "v2" and p.status["rollout"]["step"] == 1


def test_figures_default_to_nothing():
    assert Figures().candidate_accuracy is None and Figures().error_ratio is None


def test_a_stable_deployment_made_before_the_track_label_keeps_its_selector():
    """Its selector is immutable: a canary beside it changes its replicas only (no selector
    the API server would refuse, no new pod labels that would restart its pods)."""
    import dataclasses

    resource = cr()
    before = observed(resource)
    assert before.server is not None
    legacy = copy.deepcopy(before.server)
    legacy["spec"]["selector"]["matchLabels"] = render.server_selector("iris")
    del legacy["spec"]["template"]["metadata"]["labels"][names.LABEL_TRACK]
    p = plan(resource, dataclasses.replace(before, server=legacy), {}, SETTINGS, T0)
    server = applied(p, "iris-server")
    assert server is not None and server["spec"]["replicas"] == 3
    assert server["spec"]["selector"]["matchLabels"] == render.server_selector("iris")
    assert names.LABEL_TRACK not in server["spec"]["template"]["metadata"]["labels"]
    candidate = applied(p, "iris-candidate")
    assert candidate is not None
    assert candidate["spec"]["selector"]["matchLabels"] == render.candidate_selector("iris")


@pytest.mark.parametrize(
    ("pause", "scrape", "window"),
    [(60, "15s", 60), (20, "15s", 45), (10, "500ms", 10), (30, "1m", 180)],
)
def test_the_window_holds_enough_scrapes(pause, scrape, window):
    """The window is the pause, but never fewer than three scrapes of each version."""
    resource = cr(rollout_status=step_record())
    resource["spec"]["rollout"]["pauseSeconds"] = pause
    resource["spec"]["monitoring"] = {"scrapeInterval": scrape}
    assert rollout.analysis_window(ModelDeploymentSpec.from_dict(resource["spec"])) == window
    request = rollout.analysis_request(resource, PROM, "2026-01-01T01:00:00Z")
    assert request is not None and f"[{window}s]" in request.queries["feedback"]
