"""The reconcile plan: observed children + the custom resource → what to write (pure).

Level-based: everything is derived from what exists now plus the decisions recorded in the
status (the gate decides once per version; its verdict lives in ``status.history``). Nothing
here performs I/O; :mod:`modelops.engine` observes through a driver, calls :func:`plan` and has
the driver carry it out.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from .. import names
from ..settings import Settings
from ..spec import ModelDeploymentSpec
from . import phases, rollout, status
from .harvest import Result, job_finished
from .state import Observed, Plan, PlanState

Phase = Callable[[PlanState], None]

# In order: each phase reads what the ones before it decided.
PHASES: tuple[Phase, ...] = (
    phases.trust_artifacts,
    phases.check_policy,
    phases.announce_block,
    phases.recover_serving,
    phases.store_results,
    phases.run_gate,
    phases.start_training,
    phases.choose_target,
    rollout.plan_rollout,
    phases.converge_children,
    rollout.converge_candidate,
    phases.advance_serving,
    phases.check_progress,
    phases.prune,
    status.write_status,
)


def plan(
    cr: Mapping[str, Any],
    observed: Observed,
    outcomes: Mapping[str, Result],
    settings: Settings,
    now: str,
    analysis: rollout.QueryResults | None = None,
) -> Plan:
    """Everything one reconcile pass should write. ``now`` is an RFC 3339 timestamp;
    ``analysis`` the results of :func:`rollout.analysis_request`'s queries, when one was due."""
    state = PlanState.start(cr, observed, outcomes, settings, now, analysis)
    for phase in PHASES:
        phase(state)
    return state.result


def harvest_needed(cr: Mapping[str, Any], observed: Observed) -> list[str]:
    """Versions whose finished trainer Job must be read: results not yet recorded, or an
    accepted version whose artifact ConfigMap is gone (it is rebuilt from the Job)."""
    spec = ModelDeploymentSpec.from_dict(cr["spec"])
    status_ = cr.get("status") or {}
    history = list(status_.get("history") or [])
    recorded = {h["version"]: h for h in history}
    uid = str(cr["metadata"].get("uid", ""))
    wanted = {spec.model_version}
    if status_.get("servingVersion"):
        wanted.add(status_["servingVersion"])
    out = []
    for version in sorted(wanted):
        job = observed.jobs.get(version)
        stored = observed.artifacts.get(version)
        ours = stored is not None and phases.trusted(
            stored, uid, phases.known_sha(history, {}, version)
        )
        if job is None or ours or job_finished(job) is None:
            continue
        entry = recorded.get(version)
        # A ConfigMap that is not ours is checked against what our own Job produced.
        if entry is None or entry.get("outcome") == names.ACCEPTED or stored is not None:
            out.append(version)
    return out
