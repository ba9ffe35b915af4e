"""What the planner reads and writes: the observed children, the plan, and the one small state
object the plan's phases share (pure data, no I/O)."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..settings import Settings
from ..spec import ModelDeploymentSpec
from .harvest import Result

if TYPE_CHECKING:
    from .rollout import QueryResults


@dataclass(frozen=True)
class Observed:
    """The children of one ModelDeployment as the API server (or local mode) holds them."""

    jobs: dict[str, dict[str, Any]] = field(default_factory=dict)  # by model version
    # Artifact ConfigMaps by model version; metadata is enough (the planner reads annotations).
    artifacts: dict[str, dict[str, Any]] = field(default_factory=dict)
    server: dict[str, Any] | None = None
    service: dict[str, Any] | None = None
    loadgen: dict[str, Any] | None = None
    service_monitor: dict[str, Any] | None = None
    pod_monitor: dict[str, Any] | None = None
    # The candidate of a Shadow or Canary rollout: its Deployment, and its Service (Shadow).
    candidate: dict[str, Any] | None = None
    candidate_service: dict[str, Any] | None = None
    # Whether the prometheus-operator CRDs (ServiceMonitor/PodMonitor) are installed.
    monitoring_crds: bool = False
    # Pods of the spec version's trainer Job while it runs (why it may not start).
    training_pods: tuple[dict[str, Any], ...] = ()
    # Server pods, read only while the server Deployment reports a stalled rollout.
    server_pods: tuple[dict[str, Any], ...] = ()


@dataclass(frozen=True)
class Event:
    type: str  # Normal or Warning
    reason: str
    message: str


@dataclass(frozen=True)
class Ref:
    api_version: str
    kind: str
    name: str
    # When set, only the object of this uid is deleted (not one created since under its name).
    uid: str = ""


@dataclass
class Plan:
    create: list[dict[str, Any]] = field(default_factory=list)  # create-only (Job, artifact)
    apply: list[dict[str, Any]] = field(default_factory=list)  # missing or drifted: apply
    delete: list[Ref] = field(default_factory=list)
    status: dict[str, Any] = field(default_factory=dict)
    status_changed: bool = False
    events: list[Event] = field(default_factory=list)
    # Run another pass after this many seconds even if nothing changes (a rollout's pause).
    requeue_after: float | None = None

    @property
    def writes(self) -> int:
        return (
            len(self.create)
            + len(self.apply)
            + len(self.delete)
            + int(self.status_changed)
            + len(self.events)
        )


@dataclass
class PlanState:
    """Inputs of one plan and the decisions its phases have made so far.

    Phases run in order (:data:`modelops.core.plan.PHASES`); each reads what earlier ones
    decided and adds its own. ``result`` is what the pass will write.
    """

    cr: Mapping[str, Any]
    spec: ModelDeploymentSpec
    observed: Observed
    outcomes: Mapping[str, Result]
    settings: Settings
    now: str
    old: dict[str, Any]  # the status as found
    history: list[dict[str, Any]]  # newest first; entries are the ones written back
    artifacts: dict[str, dict[str, Any]]  # observed, plus those this pass creates
    serving: str | None
    serving_accuracy: float | None
    entry: dict[str, Any] | None = None  # the gate's record of the candidate version
    candidate_accuracy: float | None = None
    target: str | None = None  # the version the servers should run
    artifact_missing: bool = False  # accepted, but its stored model and Job are gone
    # ConfigMaps under an artifact's name that the operator did not store (never used).
    foreign: dict[str, dict[str, Any]] = field(default_factory=dict)
    # (reason, message) when the spec cannot proceed: nothing new is trained or rolled out.
    blocked: tuple[str, str] | None = None
    # Why the candidate's last run is run again (its result was lost to a disruption).
    disruption: str | None = None
    # Why the servers' rollout of the target stalled (past its progress deadline), if it did.
    stalled: str | None = None
    # Shadow/Canary rollout (core/rollout.py): the analysis' query results (None: none was due),
    # status.rollout, and the server children it wants.
    analysis: QueryResults | None = None
    rollout_status: dict[str, Any] | None = None
    candidate_replicas: int = 0  # 0: no candidate Deployment
    candidate_shadow: bool = False
    stable_replicas: int | None = None  # None: spec.replicas
    shadow_url: str = ""  # the stable servers copy live requests here
    result: Plan = field(default_factory=Plan)

    @classmethod
    def start(
        cls,
        cr: Mapping[str, Any],
        observed: Observed,
        outcomes: Mapping[str, Result],
        settings: Settings,
        now: str,
        analysis: QueryResults | None = None,
    ) -> PlanState:
        old: dict[str, Any] = copy.deepcopy(cr.get("status") or {})
        return cls(
            cr=cr,
            spec=ModelDeploymentSpec.from_dict(cr["spec"]),
            observed=observed,
            outcomes=outcomes,
            settings=settings,
            now=now,
            old=old,
            history=[dict(h) for h in old.get("history") or []],
            artifacts=dict(observed.artifacts),
            serving=old.get("servingVersion") or None,
            serving_accuracy=old.get("accuracy"),
            analysis=analysis,
        )

    @property
    def name(self) -> str:
        return str(self.cr["metadata"]["name"])

    @property
    def namespace(self) -> str:
        return str(self.cr["metadata"]["namespace"])

    @property
    def generation(self) -> int:
        return int(self.cr["metadata"].get("generation", 1))

    @property
    def version(self) -> str:
        """The candidate: spec.modelVersion."""
        return self.spec.model_version

    def recorded(self, version: str) -> dict[str, Any] | None:
        """The history entry of ``version`` (the same dict that is written back)."""
        # The oldest match, as a {version: entry} map of the history would give.
        return next((h for h in reversed(self.history) if h["version"] == version), None)

    def record(self, entry: dict[str, Any]) -> None:
        self.history.insert(0, entry)

    def event(self, type_: str, reason: str, message: str) -> None:
        self.result.events.append(Event(type_, reason, message))

    @property
    def job_created(self) -> bool:
        return any(m["kind"] == "Job" for m in self.result.create)

    @property
    def verdict(self) -> str | None:
        return str(self.entry["outcome"]) if self.entry else None
