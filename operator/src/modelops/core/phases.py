"""The phases of one plan, in the order :data:`modelops.core.plan.PHASES` runs them.

Each phase is a pure function of the shared :class:`~modelops.core.state.PlanState`: it reads
what the earlier phases decided and records its own decisions (and the writes they need) there.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from modelops_contract.gate import GatePolicy, decide

from .. import names
from . import render
from .drift import drifted, rolled_out, template_version
from .harvest import Succeeded
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
    """Results of finished trainer Jobs: store artifacts, record failures."""
    for version, outcome in sorted(state.outcomes.items()):
        if isinstance(outcome, Succeeded):
            if version in state.artifacts:
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
        elif state.recorded(version) is None:
            state.record(
                {
                    "version": version,
                    "outcome": names.OUTCOME_FAILED,
                    "reason": outcome.reason,
                    "message": outcome.message,
                    "time": state.now,
                }
            )
            state.event(
                names.WARNING,
                names.EVENT_TRAINING_FAILED,
                f"training {version} failed: {outcome.message}",
            )


def run_gate(state: PlanState) -> None:
    """The gate decides once per version; its verdict is kept in the history."""
    version = state.version
    state.entry = state.recorded(version)
    state.candidate_accuracy = artifact_accuracy(state.artifacts.get(version))
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
        state.entry is not None
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
        recorded = state.recorded(state.target) or {}
        sha = artifact_sha(state.artifacts.get(state.target)) or str(
            recorded.get("modelSha256", "")
        )
        server = render.server_deployment(cr, spec, settings, state.target, sha)
        wanted.append((server, observed.server))
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


def prune(state: PlanState) -> None:
    """Keep ``spec.historyLimit`` versions; delete the Jobs and artifacts of older ones."""
    state.history = state.history[: state.spec.history_limit]
    keep = {h["version"] for h in state.history} | {state.version}
    keep |= {v for v in (state.serving, state.target) if v}
    for version in sorted(set(state.observed.jobs) - keep):
        state.result.delete.append(Ref("batch/v1", "Job", render.job_name(state.name, version)))
    for version in sorted(set(state.observed.artifacts) - keep):
        state.result.delete.append(
            Ref("v1", "ConfigMap", render.artifact_name(state.name, version))
        )
