"""One reconcile pass, written once: observe → harvest → analyse → plan → write → status → events.

A :class:`Driver` is where the pass reads and writes: the cluster (:class:`modelops.kube.Kube`:
API reads and writes, Events) or local mode (:class:`modelops.local.driver.LocalDriver`:
processes and files). The pass itself, and the order in which a plan is carried out, live only
here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Any, Protocol

from modelops_contract.clock import now_rfc3339

from .core.harvest import NeedsLog, Result, read_outcome
from .core.plan import harvest_needed, plan
from .core.rollout import AnalysisRequest, QueryResults, analysis_request
from .core.state import Event, Observed, Plan, Ref
from .core.status import reject
from .settings import Settings


class Driver(Protocol):
    """What one reconcile pass needs from where the ModelDeployment lives."""

    settings: Settings

    def read(self, namespace: str, name: str) -> tuple[Mapping[str, Any], Observed] | None:
        """The resource and its children; None when it is gone (or being deleted)."""

    def trainer_pods(
        self, cr: Mapping[str, Any], version: str, job: Mapping[str, Any]
    ) -> Sequence[Mapping[str, Any]]:
        """The pods of a finished trainer Job (read consistently: a result is kept for good)."""

    def trainer_log(self, cr: Mapping[str, Any], version: str, pod: str) -> str:
        """The trainer's log ("" when it cannot be read)."""

    def create(self, cr: Mapping[str, Any], manifest: Mapping[str, Any]) -> None: ...

    def apply(self, cr: Mapping[str, Any], manifest: Mapping[str, Any]) -> None: ...

    def delete(self, cr: Mapping[str, Any], ref: Ref) -> None: ...

    def save_status(self, cr: Mapping[str, Any], status: Mapping[str, Any]) -> None: ...

    def emit(self, cr: Mapping[str, Any], event: Event) -> None: ...

    def analyse(self, cr: Mapping[str, Any], request: AnalysisRequest) -> QueryResults:
        """Run a rollout analysis' queries (errors come back in the result, not raised)."""


def harvest(driver: Driver, cr: Mapping[str, Any], observed: Observed) -> dict[str, Result]:
    """The results of finished trainer Jobs the plan has not recorded yet."""
    outcomes: dict[str, Result] = {}
    for version in harvest_needed(cr, observed):
        job = observed.jobs[version]
        pods = driver.trainer_pods(cr, version, job)
        outcome = read_outcome(version, job, pods)
        if isinstance(outcome, NeedsLog):
            text = driver.trainer_log(cr, version, outcome.pod)
            outcome = read_outcome(version, job, pods, log=text)
        if outcome is not None and not isinstance(outcome, NeedsLog):
            outcomes[version] = outcome
    return outcomes


class Rejected(Exception):
    """The API server refused a write for good (invalid, forbidden, too large): the same
    write would fail the same way until the spec changes. Raised by a driver's writes."""

    def __init__(self, kind: str, name: str, message: str) -> None:
        super().__init__(f"{kind} {name}: {message}")
        self.kind = kind
        self.name = name
        self.message = message


def carry_out(driver: Driver, cr: Mapping[str, Any], result: Plan, now: str = "") -> None:
    """Writes first, then the status that describes them, then the events that tell of it:
    whoever sees an event finds the children and the status already saying so. A child the
    API server rejects does not stop the others; the status then reports it."""
    rejected: list[tuple[str, str, str]] = []
    writes: list[tuple[str, str, Callable[[], None]]] = [
        *((m["kind"], m["metadata"]["name"], partial(driver.create, cr, m)) for m in result.create),
        *((m["kind"], m["metadata"]["name"], partial(driver.apply, cr, m)) for m in result.apply),
        *((r.kind, r.name, partial(driver.delete, cr, r)) for r in result.delete),
    ]
    for kind, name, write in writes:
        try:
            write()
        except Rejected as exc:
            rejected.append((kind, name, exc.message))
    if rejected:
        reject(cr.get("status") or {}, result, rejected, now or now_rfc3339())
    if result.status_changed:
        driver.save_status(cr, result.status)
    for event in result.events:
        driver.emit(cr, event)


def reconcile(driver: Driver, namespace: str, name: str) -> tuple[Mapping[str, Any], Plan] | None:
    """One level-based pass; the resource and what the pass did (None: the resource is gone)."""
    found = driver.read(namespace, name)
    if found is None:
        return None
    cr, observed = found
    outcomes = harvest(driver, cr, observed)
    now = now_rfc3339()
    request = analysis_request(cr, driver.settings, now)
    analysis = None
    if request is not None:
        refused = QueryResults(error=request.problem) if request.problem else None
        analysis = refused or driver.analyse(cr, request)
    result = plan(cr, observed, outcomes, driver.settings, now, analysis)
    carry_out(driver, cr, result, now)
    return cr, result
