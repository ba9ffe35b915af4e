"""The last phase of a plan: the status that describes it (phase, gate, conditions)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .. import names
from . import harvest, phases, render
from .state import Event, Plan, PlanState


def condition(kind: str, status: str, reason: str, message: str, generation: int) -> dict[str, Any]:
    return {
        "type": kind,
        "status": status,
        "reason": reason,
        "message": message,
        "observedGeneration": generation,
    }


def phase_of(state: PlanState) -> str:
    version, verdict = state.version, state.verdict
    if state.blocked is not None:
        return names.DEGRADED if state.serving else names.FAILED
    if state.entry is None:
        # Training from the pass that creates the Job (no extra status write a pass later).
        started = version in state.observed.jobs or state.job_created or version in state.outcomes
        return names.TRAINING if started else names.PENDING
    if (
        verdict in (names.OUTCOME_FAILED, names.REJECTED, names.OUTCOME_ROLLED_BACK)
        or state.artifact_missing
    ):
        return names.DEGRADED if state.serving else names.FAILED
    if state.stalled is not None:
        return names.DEGRADED if state.serving else names.FAILED
    if state.serving == version:
        return names.SERVING
    return names.ROLLING_OUT


def gate_of(state: PlanState) -> dict[str, Any]:
    entry = state.entry
    if entry is None and state.blocked is not None:
        reason, message = state.blocked
        gate = {"result": names.GATE_PENDING, "reason": reason, "message": message}
    elif entry is None:
        gate = {
            "result": names.GATE_PENDING,
            "reason": names.REASON_TRAINING,
            "message": f"{state.version} is training",
        }
    elif state.verdict == names.OUTCOME_ROLLED_BACK:
        # The gate accepted it; the live analysis rolled it back (status.rollout says why).
        gate = {
            "result": names.ACCEPTED,
            "reason": entry.get("gateReason", ""),
            "message": entry.get("gateMessage", ""),
        }
    else:
        result = names.ACCEPTED if state.verdict == names.ACCEPTED else names.REJECTED
        gate = {"result": result, "reason": entry["reason"], "message": entry["message"]}
    gate["version"] = state.version
    return gate


def trainer_stuck(state: PlanState) -> tuple[str, str] | None:
    """Why the running trainer Job of the candidate cannot start, if it cannot."""
    if state.version not in state.observed.jobs or state.version in state.outcomes:
        return None
    stuck = harvest.trainer_stuck(state.observed.training_pods)
    if stuck is None and not state.observed.training_pods:
        # The pod is gone (the Job deletes it at its deadline, before it reports Failed): what
        # was said about it stays until the Job's verdict, which repeats it.
        before = {c.get("type"): c for c in state.old.get("conditions") or []}
        trained = before.get(names.CONDITION_TRAINED) or {}
        if trained.get("reason") in (harvest.REASON_UNSCHEDULABLE, *names.TRAINER_WAITING_REASONS):
            return str(trained["reason"]), str(trained.get("message") or "")
    if stuck is None:
        return None
    reason, message = stuck
    return reason, (
        f"{message}; the Job fails after spec.training.timeoutSeconds "
        f"({state.spec.training.timeout_seconds}s) unless it starts"
    )


def runs_note(state: PlanState) -> str:
    """' (run N of M: ...)' once a version is trained again after a disruption, else ''."""
    runs = phases.training_runs(state)
    if runs <= 1:
        return ""
    return (
        f" (run {runs} of {render.TRAINER_RUNS}: the result of the run before was lost to a "
        "disruption)"
    )


def training_message(state: PlanState) -> str:
    version = state.version
    if state.disruption is not None:
        return f"training {version} again: {state.disruption}"
    return f"training {version}{runs_note(state)}"


def trained_condition(state: PlanState) -> dict[str, Any]:
    entry, version, generation = state.entry, state.version, state.generation
    if entry is None and state.blocked is not None:
        reason, message = state.blocked
        return condition(names.CONDITION_TRAINED, "False", reason, message, generation)
    if entry is None:
        stuck = trainer_stuck(state)
        if stuck is not None:
            # A rerun's pod that cannot start still says it is a rerun (once: kept messages
            # come back through trainer_stuck).
            reason, message = stuck
            note = runs_note(state)
            message = message if note in message else message + note
            return condition(names.CONDITION_TRAINED, "False", reason, message, generation)
        started = version in state.observed.jobs or state.job_created
        reason = names.REASON_TRAINING if started else names.REASON_PENDING
        return condition(
            names.CONDITION_TRAINED, "False", reason, training_message(state), generation
        )
    if state.verdict == names.OUTCOME_FAILED:
        return condition(
            names.CONDITION_TRAINED, "False", entry["reason"], entry["message"], generation
        )
    return condition(
        names.CONDITION_TRAINED,
        "True",
        names.REASON_SUCCEEDED,
        f"{version} trained: accuracy {float(entry['accuracy']):.4f}",
        generation,
    )


def accepted_condition(state: PlanState) -> dict[str, Any]:
    entry = state.entry
    if entry is None or state.verdict == names.OUTCOME_FAILED:
        return condition(
            names.CONDITION_ACCEPTED,
            "Unknown",
            names.REASON_TRAINING if entry is None else names.REASON_TRAINING_FAILED,
            "the gate runs once training has succeeded",
            state.generation,
        )
    if state.verdict == names.OUTCOME_ROLLED_BACK:
        return condition(
            names.CONDITION_ACCEPTED,
            "True",
            str(entry.get("gateReason", "")),
            str(entry.get("gateMessage", "")),
            state.generation,
        )
    return condition(
        names.CONDITION_ACCEPTED,
        "True" if state.verdict == names.ACCEPTED else "False",
        entry["reason"],
        entry["message"],
        state.generation,
    )


def _deployment_available(deployment: Mapping[str, Any] | None) -> tuple[bool, str, str]:
    if deployment is None:
        return False, names.REASON_NO_MODEL, "no model version has been accepted yet"
    for cond in (deployment.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Available":
            ok = cond.get("status") == "True"
            return ok, str(cond.get("reason") or ""), str(cond.get("message") or "")
    return False, names.REASON_PENDING, "the server Deployment reports no availability yet"


def server_replicas(state: PlanState) -> tuple[int, int]:
    """(replicas, readyReplicas) of the server Deployment, when one should run."""
    server = state.observed.server if state.target is not None else None
    status = (server or {}).get("status") or {}
    return int(status.get("replicas", 0)), int(status.get("readyReplicas", 0))


def available_condition(state: PlanState) -> dict[str, Any]:
    server = state.observed.server if state.target is not None else None
    available, reason, message = _deployment_available(server)
    if server is not None:
        _, ready = server_replicas(state)
        message = f"{ready}/{state.spec.replicas} server replicas ready" + (
            f" ({message})" if message and not available else ""
        )
    return condition(
        names.CONDITION_AVAILABLE,
        "True" if available else "False",
        reason or names.REASON_UNKNOWN,
        message,
        state.generation,
    )


def progressing_condition(state: PlanState, phase: str) -> dict[str, Any]:
    version = state.version
    progressing = phase in names.PROGRESSING_PHASES
    if state.stalled is not None:
        return condition(
            names.CONDITION_PROGRESSING,
            "False",
            names.REASON_PROGRESS_DEADLINE,
            state.stalled,
            state.generation,
        )
    rollout = state.rollout_status or {}
    rolling = f"rolling the servers out to {version}"
    if rollout.get("version") == version and rollout.get("message"):
        rolling = str(rollout["message"])
    message = {
        names.PENDING: f"creating the trainer Job for {version}",
        names.TRAINING: f"training {version}",
        names.ROLLING_OUT: rolling,
    }.get(phase, f"{state.serving or 'nothing'} is serving; nothing in progress")
    return condition(
        names.CONDITION_PROGRESSING,
        "True" if progressing else "False",
        phase if progressing else names.REASON_SETTLED,
        message,
        state.generation,
    )


def degraded_condition(state: PlanState, phase: str) -> dict[str, Any]:
    if phase not in (names.DEGRADED, names.FAILED):
        return condition(
            names.CONDITION_DEGRADED, "False", names.REASON_AS_EXPECTED, "", state.generation
        )
    if state.blocked is not None:
        why, text = state.blocked
    elif state.stalled is not None and state.verdict not in (names.OUTCOME_FAILED, names.REJECTED):
        why, text = names.REASON_PROGRESS_DEADLINE, state.stalled
    elif state.artifact_missing:
        why = names.REASON_ARTIFACT_MISSING
        text = (
            f"the stored model of {state.version} and its trainer Job are gone; set a new "
            "modelVersion to train again"
        )
    else:
        assert state.entry is not None
        why, text = state.entry["reason"], state.entry["message"]
    if state.serving:
        text += f" (still serving {state.serving})"
    return condition(names.CONDITION_DEGRADED, "True", why, text, state.generation)


def stamp_transitions(
    conditions: list[dict[str, Any]], old: Mapping[str, Any], now: str
) -> list[dict[str, Any]]:
    """lastTransitionTime: kept while a condition's status stays, ``now`` when it changes."""
    previous = {c.get("type"): c for c in old.get("conditions") or []}
    for cond in conditions:
        before = previous.get(cond["type"])
        if before is not None and before.get("status") == cond["status"]:
            cond["lastTransitionTime"] = before.get("lastTransitionTime", now)
        else:
            cond["lastTransitionTime"] = now
    return conditions


def write_status(state: PlanState) -> None:
    """The next status, and whether it differs from the one found."""
    phase = phase_of(state)
    conditions = [
        trained_condition(state),
        accepted_condition(state),
        available_condition(state),
        progressing_condition(state, phase),
        degraded_condition(state, phase),
    ]
    replicas, ready = server_replicas(state)
    status: dict[str, Any] = {
        "observedGeneration": state.generation,
        "phase": phase,
        "candidateVersion": state.version,
        "gate": gate_of(state),
        "replicas": replicas,
        "readyReplicas": ready,
        "ready": f"{ready}/{state.spec.replicas}",
        "selector": render.selector_string(render.server_selector(state.name)),
        "endpoint": render.endpoint(state.name, state.namespace, state.spec.serving.port),
        "history": state.history,
        "conditions": stamp_transitions(conditions, state.old, state.now),
    }
    runs = phases.training_runs(state)
    if runs:
        status["trainingRuns"] = runs
    if state.candidate_accuracy is not None:
        status["candidateAccuracy"] = state.candidate_accuracy
    if state.serving:
        status["servingVersion"] = state.serving
    if state.serving_accuracy is not None and state.serving:
        status["accuracy"] = state.serving_accuracy
    if state.rollout_status:
        status["rollout"] = state.rollout_status
    state.result.status = status
    state.result.status_changed = status != state.old


def reject(
    old: Mapping[str, Any], result: Plan, rejected: Sequence[tuple[str, str, str]], now: str
) -> None:
    """The API server refused children of ``result`` ((kind, name, its message) each): the
    status says so at once, and the Events of what did not happen are dropped. Retrying
    would only fail again; the next pass (a spec change, a resync) tries once more, and finds
    the same status (nothing written) while the spec stays as it is."""
    kind, name, message = rejected[0]
    text = f"the API server rejected {kind} {name}: {message}"
    if len(rejected) > 1:
        text += (
            f" (and {len(rejected) - 1} more: "
            + ", ".join(f"{k} {n}" for k, n, _ in rejected[1:])
            + ")"
        )
    text += "; fix the ModelDeployment's spec (the operator renders it as is)"
    status = dict(result.status)
    serving = status.get("servingVersion")
    status["phase"] = names.DEGRADED if serving else names.FAILED
    generation = int(status.get("observedGeneration", 1))
    rejected_kinds = {k for k, _, _ in rejected}
    conditions = []
    for cond in status.get("conditions") or []:
        kind_ = cond["type"]
        if kind_ == names.CONDITION_DEGRADED or kind_ == names.CONDITION_PROGRESSING:
            flag = "True" if kind_ == names.CONDITION_DEGRADED else "False"
            cond = condition(kind_, flag, names.REASON_CHILD_REJECTED, text, generation)
        elif (
            kind_ == names.CONDITION_TRAINED
            and "Job" in rejected_kinds
            and cond["status"] != "True"
        ):
            cond = condition(kind_, "False", names.REASON_CHILD_REJECTED, text, generation)
        conditions.append(cond)
    status["conditions"] = stamp_transitions(conditions, old, now)
    if "Job" in rejected_kinds:  # the run it counted did not start
        same = old.get("candidateVersion") == status.get("candidateVersion")
        status.pop("trainingRuns", None)
        if same and old.get("trainingRuns"):
            status["trainingRuns"] = old["trainingRuns"]
    lost = {"Job": names.EVENT_TRAINING_STARTED, "ConfigMap": names.EVENT_ARTIFACT_STORED}
    dropped = {lost[k] for k in rejected_kinds if k in lost}
    events = [e for e in result.events if e.reason not in dropped]
    before = {c.get("type"): c for c in old.get("conditions") or []}
    if (before.get(names.CONDITION_DEGRADED) or {}).get("message") != text:
        events.append(Event(names.WARNING, names.EVENT_CHILD_REJECTED, text))
    result.events = events
    result.status = status
    result.status_changed = status != old
