"""The phases of one plan, in the order :data:`modelops.core.plan.PHASES` runs them.

Each phase is a pure function of the shared :class:`~modelops.core.state.PlanState`: it reads
what the earlier phases decided and records its own decisions (and the writes they need) there.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from modelops_contract.gate import GatePolicy, decide
from modelops_contract.urls import url_problem

from .. import names
from . import render
from .drift import drifted, rolled_out, rollout_stalled, stall_detail, template_version
from .harvest import REASON_DISRUPTED, REASON_UNSCHEDULABLE, Disrupted, Failed, Succeeded
from .state import PlanState, Ref


def artifact_accuracy(cm: Mapping[str, Any] | None) -> float | None:
    if cm is None:
        return None
    raw = (cm.get("metadata", {}).get("annotations") or {}).get(names.ANNOTATION_ACCURACY)
    try:
        return float(raw) if raw is not None else None
    except ValueError:
        return None


def artifact_sha(cm: Mapping[str, Any] | None) -> str:
    if cm is None:
        return ""
    return str((cm.get("metadata", {}).get("annotations") or {}).get(names.ANNOTATION_SHA256, ""))


def known_sha(history: list[dict[str, Any]], outcomes: Mapping[str, Any], version: str) -> str:
    """The model digest the operator itself knows for `version`: from its record in the
    status, or from the result of its own trainer Job read in this pass; "" if neither."""
    recorded = next((h for h in reversed(history) if h.get("version") == version), None)
    if recorded and recorded.get("modelSha256"):
        return str(recorded["modelSha256"])
    outcome = outcomes.get(version)
    if isinstance(outcome, Succeeded):
        return str(outcome.metadata.get("model_sha256", ""))
    return ""


def trusted(cm: Mapping[str, Any], uid: str, sha: str) -> bool:
    """An artifact ConfigMap the operator stored for this resource: it names the resource as
    its controller, and it holds the model digest the operator knows for that version. (A
    name, labels or an owner reference alone can be copied by anyone who can create
    ConfigMaps; the digest comes from the operator's own record. The server is pinned to the
    same digest and checks the bytes themselves.)"""
    owners = cm.get("metadata", {}).get("ownerReferences") or []
    owned = any(o.get("uid") == uid and o.get("controller") for o in owners)
    return bool(uid and sha) and owned and artifact_sha(cm) == sha


def trust_artifacts(state: PlanState) -> None:
    """Set apart artifact ConfigMaps the operator did not store: they never serve or gate."""
    uid = str(state.cr["metadata"].get("uid", ""))
    for version, cm in sorted(state.artifacts.items()):
        if not trusted(cm, uid, known_sha(state.history, state.outcomes, version)):
            state.foreign[version] = state.artifacts.pop(version)
    if state.version in state.foreign:
        cm_name = render.artifact_name(state.name, state.version)
        state.blocked = (
            names.REASON_ARTIFACT_NOT_TRUSTED,
            f"ConfigMap {cm_name} exists but was not stored by the operator for this "
            f"ModelDeployment (no owner reference to it, or a model digest the operator did "
            f"not record), so {state.version} is neither trained nor served from it; delete it "
            f"(kubectl delete configmap {cm_name} -n {state.namespace}) and the operator "
            f"trains {state.version} itself",
        )


def check_policy(state: PlanState) -> None:
    """The admin's rules for what a ModelDeployment may ask for (settings, docs/security.md)."""
    if state.blocked is not None:
        return
    settings, spec = state.settings, state.spec
    image = spec.serving.image
    if image and not settings.image_allowed(image):
        state.blocked = (
            names.REASON_IMAGE_NOT_ALLOWED,
            f"spec.serving.image {image} is not allowed by the operator's settings "
            f"({settings.image_rule}); use an allowed image or ask the cluster admin",
        )
        return
    url = spec.training.dataset.url
    problem = url and url_problem(url, settings.dataset_url_schemes, settings.dataset_url_hosts)
    if problem:
        state.blocked = (names.REASON_DATASET_URL_NOT_ALLOWED, f"spec.training.{problem}")


def announce_block(state: PlanState) -> None:
    """One Warning Event when a block starts (the condition keeps saying it afterwards)."""
    if state.blocked is None:
        return
    before = {c.get("type"): c for c in state.old.get("conditions") or []}
    degraded = before.get(names.CONDITION_DEGRADED) or {}
    reason, message = state.blocked
    if degraded.get("reason") != reason or degraded.get("status") != "True":
        state.event(names.WARNING, reason, message)


def recover_serving(state: PlanState) -> None:
    """Status lost (e.g. the resource restored from Git): what the Deployment runs serves."""
    server = state.observed.server
    if state.serving is not None or state.history or server is None:
        return
    deployed = template_version(server)
    if deployed and rolled_out(server, deployed, int(server["spec"].get("replicas", 1))):
        state.serving = deployed
        state.serving_accuracy = artifact_accuracy(state.artifacts.get(deployed))


def store_results(state: PlanState) -> None:
    """Results of finished trainer Jobs: store artifacts, record failures, run again the
    trainings whose result a disruption lost."""
    for version, outcome in sorted(state.outcomes.items()):
        if isinstance(outcome, Succeeded):
            if version in state.artifacts or version in state.foreign:
                continue
            cm = render.artifact_configmap(state.cr, version, outcome.metadata, outcome.model)
            state.result.create.append(cm)
            state.artifacts[version] = cm
            state.event(
                names.NORMAL,
                names.EVENT_ARTIFACT_STORED,
                f"model {version} stored in ConfigMap {cm['metadata']['name']} "
                f"(accuracy {outcome.accuracy:.4f})",
            )
        elif state.recorded(version) is not None:
            # Decided already; a lost result of it is reported as the artifact's absence.
            continue
        elif isinstance(outcome, Disrupted):
            _run_again(state, outcome)
        else:
            _record_failure(state, _never_started(state, outcome))


def _record_failure(state: PlanState, outcome: Failed) -> None:
    state.record(
        {
            "version": outcome.version,
            "outcome": names.OUTCOME_FAILED,
            "reason": outcome.reason,
            "message": outcome.message,
            "time": state.now,
        }
    )
    state.event(
        names.WARNING,
        names.EVENT_TRAINING_FAILED,
        f"training {outcome.version} failed: {outcome.message}",
    )


def training_runs(state: PlanState) -> int:
    """How many trainer Jobs of the candidate version have been started (status.trainingRuns),
    the one this pass creates included."""
    old = state.old
    same = old.get("candidateVersion") == state.version
    before = int(old.get("trainingRuns") or 0) if same else 0
    if state.job_created:
        return before + 1
    if state.version in state.observed.jobs:
        return max(before, 1)  # a status written before the field existed
    return before


def _run_again(state: PlanState, outcome: Disrupted) -> None:
    """The candidate's result was lost to the cluster: delete its Job, and start_training
    creates it again in the next pass; after render.TRAINER_RUNS runs the version fails."""
    version = outcome.version
    if version != state.version:
        return
    runs = training_runs(state)
    if runs >= render.TRAINER_RUNS:
        message = (
            f"{outcome.message}; all {runs} runs of {version} were disrupted; set a new "
            "modelVersion to try again"
        )
        _record_failure(state, Failed(version, REASON_DISRUPTED, message))
        return
    uid = str(state.observed.jobs[version]["metadata"].get("uid") or "")
    # The uid: a Job created meanwhile under the same name (the next run) is not deleted.
    state.result.delete.append(Ref("batch/v1", "Job", render.job_name(state.name, version), uid))
    state.disruption = outcome.message
    state.event(
        names.WARNING,
        REASON_DISRUPTED,
        f"{outcome.message}; training {version} again (run {runs + 1} of {render.TRAINER_RUNS})",
    )


def _never_started(state: PlanState, outcome: Failed) -> Failed:
    """A deadline that passed while the trainer pod could not start says why it never ran
    (the Trained condition recorded it while the Job waited), not "ran longer than"."""
    if outcome.reason != "DeadlineExceeded" or outcome.version != state.version:
        return outcome
    before = {c.get("type"): c for c in state.old.get("conditions") or []}
    trained = before.get(names.CONDITION_TRAINED) or {}
    if trained.get("reason") not in (REASON_UNSCHEDULABLE, *names.TRAINER_WAITING_REASONS):
        return outcome
    return Failed(
        outcome.version,
        str(trained["reason"]),
        f"training of {outcome.version} never started within spec.training.timeoutSeconds: "
        f"{trained.get('message')}; fix it (resources, node capacity, trainer image), then "
        "set a new modelVersion",
    )


def run_gate(state: PlanState) -> None:
    """The gate decides once per version; its verdict is kept in the history."""
    version = state.version
    state.entry = state.recorded(version)
    # The Job's own result first: a stored ConfigMap's annotations are only its copy.
    outcome = state.outcomes.get(version)
    state.candidate_accuracy = (
        outcome.accuracy
        if isinstance(outcome, Succeeded)
        else artifact_accuracy(state.artifacts.get(version))
    )
    if state.blocked is not None and state.entry is None:
        return
    if state.entry is not None:
        if state.entry.get("accuracy") is not None:
            state.candidate_accuracy = float(state.entry["accuracy"])
        return
    if state.candidate_accuracy is None:
        return
    serving = state.serving
    decision = decide(
        state.candidate_accuracy,
        state.serving_accuracy if serving and serving != version else None,
        GatePolicy(
            min_accuracy=state.spec.min_accuracy,
            regression_tolerance=state.spec.gate.regression_tolerance,
            significant_improvement=state.spec.gate.significant_improvement,
        ),
    )
    state.entry = {
        "version": version,
        "accuracy": state.candidate_accuracy,
        "outcome": names.ACCEPTED if decision.accepted else names.REJECTED,
        "reason": str(decision.reason),
        "message": decision.message,
        "modelSha256": artifact_sha(state.artifacts.get(version)),
        "time": state.now,
    }
    state.record(state.entry)
    if decision.accepted:
        kind = names.WARNING if decision.warning else names.NORMAL
        state.event(kind, names.EVENT_GATE_ACCEPTED, f"{version}: {decision.message}")
    else:
        state.event(names.WARNING, names.EVENT_GATE_REJECTED, f"{version}: {decision.message}")


def start_training(state: PlanState) -> None:
    """The trainer Job: one per version, only while its result is unknown."""
    version = state.version
    if (
        state.blocked is not None
        or state.entry is not None
        or version in state.artifacts
        or version in state.observed.jobs
        or version in state.outcomes
    ):
        return
    state.result.create.append(render.trainer_job(state.cr, state.spec, state.settings))
    state.event(
        names.NORMAL,
        names.EVENT_TRAINING_STARTED,
        f"training {version} ({state.spec.training.algorithm}) in Job "
        f"{render.job_name(state.name, version)}",
    )


def choose_target(state: PlanState) -> None:
    """Which version the servers should run: the candidate once accepted, else the serving one."""
    accepted = state.verdict == names.ACCEPTED
    state.artifact_missing = accepted and state.version not in state.artifacts
    state.target = state.version if accepted and not state.artifact_missing else state.serving


def converge_children(state: PlanState) -> None:
    """Apply the long-lived children that are missing or drifted; delete unwanted ones."""
    observed, cr, spec, settings = state.observed, state.cr, state.spec, state.settings
    wanted: list[tuple[dict[str, Any], dict[str, Any] | None]] = [
        (render.service(cr, spec), observed.service)
    ]
    loadgen = None
    if state.target is not None:
        # The digest the server is pinned to: the operator's own record, never the store's.
        sha = known_sha(state.history, state.outcomes, state.target)
        server = render.server_deployment(
            cr, spec, settings, state.target, sha, state.stable_replicas, state.shadow_url,
            render.kept_selector(state.name, observed.server),
        )  # fmt: skip
        if state.blocked is None or observed.server is None:
            wanted.append((server, observed.server))
        # Load only once something serves: before, every request would fail.
        if state.serving is not None or rolled_out(observed.server, state.target, spec.replicas):
            loadgen = render.loadgen_deployment(cr, spec, settings)
    if loadgen is not None:
        wanted.append((loadgen, observed.loadgen))
    elif observed.loadgen is not None:
        state.result.delete.append(Ref("apps/v1", "Deployment", render.loadgen_name(state.name)))
    if observed.monitoring_crds:
        wanted.append((render.service_monitor(cr, spec), observed.service_monitor))
        if loadgen is not None:
            wanted.append((render.pod_monitor(cr, spec, settings), observed.pod_monitor))
        elif observed.pod_monitor is not None:
            state.result.delete.append(
                Ref("monitoring.coreos.com/v1", "PodMonitor", render.loadgen_name(state.name))
            )
    state.result.apply.extend(want for want, have in wanted if drifted(want, have))


def advance_serving(state: PlanState) -> None:
    """Serving moves forward once the Deployment has fully rolled out."""
    target = state.target
    if target is None or not rolled_out(state.observed.server, target, state.spec.replicas):
        return
    served = state.recorded(target)
    if state.serving != target:
        state.serving = target
        state.serving_accuracy = (
            float(served["accuracy"])
            if served and served.get("accuracy") is not None
            else artifact_accuracy(state.artifacts.get(target))
        )
        accuracy = state.serving_accuracy
        state.event(
            names.NORMAL,
            names.EVENT_ROLLED_OUT,
            f"now serving {target}"
            + (f" (accuracy {accuracy:.4f})" if accuracy is not None else ""),
        )
    if served is not None and not served.get("servedAt"):
        served["servedAt"] = state.now


def check_progress(state: PlanState) -> None:
    """A rollout of the target that went past its progress deadline is reported (Degraded,
    one Warning Event); the pods of the version that serves keep answering meanwhile."""
    target, server = state.target, state.observed.server
    if target is None or any(
        m["kind"] == "Deployment" and m["metadata"]["name"] == render.server_name(state.name)
        for m in state.result.apply
    ):
        return
    message = rollout_stalled(server, target)
    if message is None:
        return
    detail = stall_detail(state.observed.server_pods, target)
    state.stalled = (
        f"the servers of {target} did not become ready within "
        f"spec.serving.progressDeadlineSeconds ({state.spec.serving.progress_deadline_seconds}s): "
        f"{detail or message}"
    )
    before = {c.get("type"): c for c in state.old.get("conditions") or []}
    degraded = before.get(names.CONDITION_DEGRADED) or {}
    if degraded.get("reason") != names.REASON_PROGRESS_DEADLINE:
        state.event(names.WARNING, names.EVENT_ROLLOUT_STALLED, state.stalled)


def prune(state: PlanState) -> None:
    """Keep ``spec.historyLimit`` versions; delete the Jobs and artifacts of older ones."""
    state.history = state.history[: state.spec.history_limit]
    keep = {h["version"] for h in state.history} | {state.version}
    keep |= {v for v in (state.serving, state.target) if v}
    for version in sorted(set(state.observed.jobs) - keep):
        state.result.delete.append(Ref("batch/v1", "Job", render.job_name(state.name, version)))
    # Only the operator's own artifacts: a foreign ConfigMap is reported, never deleted.
    for version in sorted(set(state.observed.artifacts) - keep - set(state.foreign)):
        state.result.delete.append(
            Ref("v1", "ConfigMap", render.artifact_name(state.name, version))
        )
