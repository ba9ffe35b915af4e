"""The reconcile plan: observed children + the custom resource → what to write (pure).

Level-based: everything is derived from what exists now plus the decisions recorded in the
status (the gate decides once per version; its verdict lives in ``status.history``). Nothing
here performs I/O; :mod:`modelops.kube` observes, calls :func:`plan` and carries it out.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from modelops_contract.gate import GatePolicy, decide

from . import render
from .harvest import Failed, Succeeded, job_finished
from .settings import Settings
from .spec import ModelDeploymentSpec

CONDITION_TYPES = ("Trained", "Accepted", "Available", "Progressing", "Degraded")


@dataclass(frozen=True)
class Observed:
    """The children of one ModelDeployment as the API server holds them."""

    jobs: dict[str, dict[str, Any]] = field(default_factory=dict)  # by model version
    artifacts: dict[str, dict[str, Any]] = field(default_factory=dict)  # by model version
    server: dict[str, Any] | None = None
    service: dict[str, Any] | None = None
    loadgen: dict[str, Any] | None = None
    service_monitor: dict[str, Any] | None = None
    pod_monitor: dict[str, Any] | None = None
    # Whether the prometheus-operator CRDs (ServiceMonitor/PodMonitor) are installed.
    monitoring_crds: bool = False


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


@dataclass
class Plan:
    create: list[dict[str, Any]] = field(default_factory=list)  # create-only (Job, artifact)
    apply: list[dict[str, Any]] = field(default_factory=list)  # missing or drifted: apply
    delete: list[Ref] = field(default_factory=list)
    status: dict[str, Any] = field(default_factory=dict)
    status_changed: bool = False
    events: list[Event] = field(default_factory=list)

    @property
    def writes(self) -> int:
        return (
            len(self.create)
            + len(self.apply)
            + len(self.delete)
            + int(self.status_changed)
            + len(self.events)
        )


# Harvest ------------------------------------------------------------------------------------


def harvest_needed(cr: Mapping[str, Any], observed: Observed) -> list[str]:
    """Versions whose finished trainer Job must be read: results not yet recorded, or an
    accepted version whose artifact ConfigMap is gone (it is rebuilt from the Job)."""
    spec = ModelDeploymentSpec.from_dict(cr["spec"])
    status = cr.get("status") or {}
    recorded = {h["version"]: h for h in status.get("history") or []}
    wanted = {spec.model_version}
    if status.get("servingVersion"):
        wanted.add(status["servingVersion"])
    out = []
    for version in sorted(wanted):
        job = observed.jobs.get(version)
        if job is None or version in observed.artifacts or job_finished(job) is None:
            continue
        entry = recorded.get(version)
        if entry is None or entry.get("outcome") == "Accepted":
            out.append(version)
    return out


# Drift --------------------------------------------------------------------------------------


def _quantity(value: Any) -> Decimal | None:
    suffixes: dict[str, int | Decimal] = {
        "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60,
        "n": Decimal("1e-9"), "u": Decimal("1e-6"), "m": Decimal("1e-3"),
        "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18,
    }  # fmt: skip
    text = str(value)
    for suffix in sorted(suffixes, key=len, reverse=True):
        if text.endswith(suffix):
            try:
                return Decimal(text[: -len(suffix)]) * Decimal(suffixes[suffix])
            except InvalidOperation:
                return None
    try:
        return Decimal(text)
    except InvalidOperation:
        return None


def contains(actual: Any, desired: Any) -> bool:
    """Whether ``actual`` holds everything ``desired`` sets (the API server adds defaults;
    quantities may come back canonicalised, e.g. 0.5 → 500m)."""
    if isinstance(desired, dict):
        return isinstance(actual, dict) and all(
            k in actual and contains(actual[k], v) for k, v in desired.items()
        )
    if isinstance(desired, list):
        return (
            isinstance(actual, list)
            and len(actual) == len(desired)
            and all(contains(a, d) for a, d in zip(actual, desired, strict=True))
        )
    if actual == desired:
        return True
    if isinstance(desired, str | int) and isinstance(actual, str | int):
        left, right = _quantity(actual), _quantity(desired)
        return left is not None and left == right
    return False


def drifted(desired: Mapping[str, Any], actual: Mapping[str, Any] | None) -> bool:
    if actual is None:
        return True
    keys = [k for k in desired if k not in ("apiVersion", "kind", "status")]
    return not all(k in actual and contains(actual[k], desired[k]) for k in keys)


# Plan ---------------------------------------------------------------------------------------


def _accuracy(cm: Mapping[str, Any] | None) -> float | None:
    if cm is None:
        return None
    raw = (cm.get("metadata", {}).get("annotations") or {}).get(render.ANNOTATION_ACCURACY)
    try:
        return float(raw) if raw is not None else None
    except ValueError:
        return None


def _sha(cm: Mapping[str, Any] | None) -> str:
    if cm is None:
        return ""
    return str((cm.get("metadata", {}).get("annotations") or {}).get(render.ANNOTATION_SHA256, ""))


def _template_version(deployment: Mapping[str, Any] | None) -> str | None:
    if deployment is None:
        return None
    template_labels = deployment["spec"]["template"]["metadata"].get("labels") or {}
    version = template_labels.get(render.LABEL_VERSION)
    return str(version) if version else None


def rolled_out(deployment: Mapping[str, Any] | None, version: str, replicas: int) -> bool:
    """The Deployment runs ``version`` on every replica, all available, no old pods left."""
    if deployment is None or _template_version(deployment) != version:
        return False
    status = deployment.get("status") or {}
    if status.get("observedGeneration", 0) < deployment["metadata"].get("generation", 0):
        return False
    if int(deployment["spec"].get("replicas", 1)) != replicas:
        return False
    return (
        int(status.get("updatedReplicas", 0)) >= replicas
        and int(status.get("replicas", 0)) == replicas
        and int(status.get("availableReplicas", 0)) >= replicas
    )


def _deployment_available(deployment: Mapping[str, Any] | None) -> tuple[bool, str, str]:
    if deployment is None:
        return False, "NoModel", "no model version has been accepted yet"
    for condition in (deployment.get("status") or {}).get("conditions") or []:
        if condition.get("type") == "Available":
            ok = condition.get("status") == "True"
            return ok, str(condition.get("reason") or ""), str(condition.get("message") or "")
    return False, "Pending", "the server Deployment reports no availability yet"


def _condition(
    kind: str, status: str, reason: str, message: str, generation: int
) -> dict[str, Any]:
    return {
        "type": kind,
        "status": status,
        "reason": reason,
        "message": message,
        "observedGeneration": generation,
    }


def plan(
    cr: Mapping[str, Any],
    observed: Observed,
    outcomes: Mapping[str, Succeeded | Failed],
    settings: Settings,
    now: str,
) -> Plan:
    """Everything one reconcile pass should write. ``now`` is an RFC 3339 timestamp."""
    result = Plan()
    meta = cr["metadata"]
    name, namespace = meta["name"], meta["namespace"]
    generation = int(meta.get("generation", 1))
    spec = ModelDeploymentSpec.from_dict(cr["spec"])
    old: dict[str, Any] = copy.deepcopy(cr.get("status") or {})
    history: list[dict[str, Any]] = [dict(h) for h in old.get("history") or []]
    by_version = {h["version"]: h for h in history}
    version = spec.model_version
    serving: str | None = old.get("servingVersion") or None
    serving_accuracy: float | None = old.get("accuracy")
    artifacts = dict(observed.artifacts)

    if serving is None and not history and observed.server is not None:
        # Status lost (e.g. the resource restored from Git): what the Deployment runs serves.
        deployed = _template_version(observed.server)
        if deployed and rolled_out(
            observed.server, deployed, int(observed.server["spec"].get("replicas", 1))
        ):
            serving, serving_accuracy = deployed, _accuracy(artifacts.get(deployed))

    # 1. Results of finished Jobs: store artifacts, record failures.
    for ver, outcome in sorted(outcomes.items()):
        if isinstance(outcome, Succeeded):
            if ver not in artifacts:
                cm = render.artifact_configmap(cr, ver, outcome.metadata, outcome.model)
                result.create.append(cm)
                artifacts[ver] = cm
                result.events.append(
                    Event(
                        "Normal",
                        "ArtifactStored",
                        f"model {ver} stored in ConfigMap {cm['metadata']['name']} "
                        f"(accuracy {outcome.accuracy:.4f})",
                    )
                )
        elif ver not in by_version:
            failure: dict[str, Any] = {
                "version": ver,
                "outcome": "Failed",
                "reason": outcome.reason,
                "message": outcome.message,
                "time": now,
            }
            history.insert(0, failure)
            by_version[ver] = failure
            result.events.append(
                Event("Warning", "TrainingFailed", f"training {ver} failed: {outcome.message}")
            )

    # 2. The gate, once per version.
    entry: dict[str, Any] | None = by_version.get(version)
    candidate_accuracy = _accuracy(artifacts.get(version))
    if entry is None and candidate_accuracy is not None:
        compare_with = serving_accuracy if serving and serving != version else None
        decision = decide(
            candidate_accuracy,
            compare_with,
            GatePolicy(
                min_accuracy=spec.min_accuracy,
                regression_tolerance=spec.gate.regression_tolerance,
                significant_improvement=spec.gate.significant_improvement,
            ),
        )
        entry = {
            "version": version,
            "accuracy": candidate_accuracy,
            "outcome": "Accepted" if decision.accepted else "Rejected",
            "reason": str(decision.reason),
            "message": decision.message,
            "modelSha256": _sha(artifacts.get(version)),
            "time": now,
        }
        history.insert(0, entry)
        by_version[version] = entry
        if decision.accepted:
            kind = "Warning" if decision.warning else "Normal"
            result.events.append(Event(kind, "GateAccepted", f"{version}: {decision.message}"))
        else:
            result.events.append(Event("Warning", "GateRejected", f"{version}: {decision.message}"))
    elif entry is not None and entry.get("accuracy") is not None:
        candidate_accuracy = float(entry["accuracy"])

    # 3. The trainer Job: one per version, only while its result is unknown.
    job = observed.jobs.get(version)
    if entry is None and version not in artifacts and job is None and version not in outcomes:
        result.create.append(render.trainer_job(cr, spec, settings))
        result.events.append(
            Event(
                "Normal",
                "TrainingStarted",
                f"training {version} ({spec.training.algorithm}) in Job "
                f"{render.job_name(name, version)}",
            )
        )

    # 4. Which version the servers should run.
    accepted = entry is not None and entry.get("outcome") == "Accepted"
    artifact_missing = accepted and version not in artifacts
    if accepted and not artifact_missing:
        target: str | None = version
    else:
        target = serving

    # 5. Desired long-lived children.
    desired: list[dict[str, Any]] = [render.service(cr, spec)]
    actual: list[dict[str, Any] | None] = [observed.service]
    loadgen = None
    if target is not None:
        sha = _sha(artifacts.get(target)) or str(by_version.get(target, {}).get("modelSha256", ""))
        desired.append(render.server_deployment(cr, spec, settings, target, sha))
        actual.append(observed.server)
        loadgen = render.loadgen_deployment(cr, spec, settings)
    if loadgen is not None:
        desired.append(loadgen)
        actual.append(observed.loadgen)
    elif observed.loadgen is not None:
        result.delete.append(Ref("apps/v1", "Deployment", render.loadgen_name(name)))
    if observed.monitoring_crds:
        desired.append(render.service_monitor(cr, spec))
        actual.append(observed.service_monitor)
        if loadgen is not None:
            desired.append(render.pod_monitor(cr, spec, settings))
            actual.append(observed.pod_monitor)
        elif observed.pod_monitor is not None:
            result.delete.append(
                Ref("monitoring.coreos.com/v1", "PodMonitor", render.loadgen_name(name))
            )
    for want, have in zip(desired, actual, strict=True):
        if drifted(want, have):
            result.apply.append(want)

    # 6. Serving moves forward once the Deployment has fully rolled out.
    if target is not None and rolled_out(observed.server, target, spec.replicas):
        if serving != target:
            serving = target
            served = by_version.get(target)
            serving_accuracy = (
                float(served["accuracy"])
                if served and served.get("accuracy") is not None
                else _accuracy(artifacts.get(target))
            )
            result.events.append(
                Event(
                    "Normal",
                    "RolledOut",
                    f"now serving {target}"
                    + (
                        f" (accuracy {serving_accuracy:.4f})"
                        if serving_accuracy is not None
                        else ""
                    ),
                )
            )
        served = by_version.get(target)
        if served is not None and not served.get("servedAt"):
            served["servedAt"] = now

    # 7. History and pruning of older versions.
    history = history[: spec.history_limit]
    keep = {h["version"] for h in history} | {version} | {v for v in (serving, target) if v}
    for ver in sorted(set(observed.jobs) - keep):
        result.delete.append(Ref("batch/v1", "Job", render.job_name(name, ver)))
    for ver in sorted(set(observed.artifacts) - keep):
        result.delete.append(Ref("v1", "ConfigMap", render.artifact_name(name, ver)))

    # 8. Phase, gate and conditions.
    verdict = entry.get("outcome") if entry else None
    job_created = any(m["kind"] == "Job" for m in result.create)
    if entry is None:
        # Training from the pass that creates the Job (no extra status write a pass later).
        phase = "Training" if job is not None or job_created or version in outcomes else "Pending"
    elif verdict in ("Failed", "Rejected") or artifact_missing:
        phase = "Degraded" if serving else "Failed"
    elif serving == version:
        phase = "Serving"
    else:
        phase = "RollingOut"

    if entry is None:
        gate = {"result": "Pending", "reason": "Training", "message": f"{version} is training"}
    elif verdict == "Accepted":
        gate = {"result": "Passed", "reason": entry["reason"], "message": entry["message"]}
    else:
        gate = {"result": "Rejected", "reason": entry["reason"], "message": entry["message"]}
    gate["version"] = version

    conditions = []
    if entry is None:
        trained = _condition(
            "Trained",
            "False",
            "Training" if job or job_created else "Pending",
            f"training {version}",
            generation,
        )
    elif verdict == "Failed":
        trained = _condition("Trained", "False", entry["reason"], entry["message"], generation)
    else:
        trained = _condition(
            "Trained",
            "True",
            "Succeeded",
            f"{version} trained: accuracy {float(entry['accuracy']):.4f}",
            generation,
        )
    conditions.append(trained)
    if entry is None or verdict == "Failed":
        conditions.append(
            _condition(
                "Accepted",
                "Unknown",
                "Training" if entry is None else "TrainingFailed",
                "the gate runs once training has succeeded",
                generation,
            )
        )
    else:
        conditions.append(
            _condition(
                "Accepted",
                "True" if verdict == "Accepted" else "False",
                entry["reason"],
                entry["message"],
                generation,
            )
        )
    server_observed = observed.server if target is not None else None
    available, reason, message = _deployment_available(server_observed)
    ready_replicas = int(((server_observed or {}).get("status") or {}).get("readyReplicas", 0))
    replicas = int(((server_observed or {}).get("status") or {}).get("replicas", 0))
    if server_observed is not None:
        message = f"{ready_replicas}/{spec.replicas} server replicas ready" + (
            f" ({message})" if message and not available else ""
        )
    conditions.append(
        _condition(
            "Available", "True" if available else "False", reason or "Unknown", message, generation
        )
    )
    progressing = phase in ("Pending", "Training", "RollingOut")
    progress_message = {
        "Pending": f"creating the trainer Job for {version}",
        "Training": f"training {version}",
        "RollingOut": f"rolling the servers out to {version}",
    }.get(phase, f"{serving or 'nothing'} is serving; nothing in progress")
    conditions.append(
        _condition(
            "Progressing",
            "True" if progressing else "False",
            phase if progressing else "Settled",
            progress_message,
            generation,
        )
    )
    if phase in ("Degraded", "Failed"):
        if artifact_missing:
            why, text = (
                "ArtifactMissing",
                f"the stored model of {version} and its trainer Job are gone; set a new "
                "modelVersion to train again",
            )
        else:
            assert entry is not None
            why, text = entry["reason"], entry["message"]
        if serving:
            text += f" (still serving {serving})"
        conditions.append(_condition("Degraded", "True", why, text, generation))
    else:
        conditions.append(_condition("Degraded", "False", "AsExpected", "", generation))

    previous = {c.get("type"): c for c in old.get("conditions") or []}
    for condition in conditions:
        before = previous.get(condition["type"])
        if before is not None and before.get("status") == condition["status"]:
            condition["lastTransitionTime"] = before.get("lastTransitionTime", now)
        else:
            condition["lastTransitionTime"] = now

    status: dict[str, Any] = {
        "observedGeneration": generation,
        "phase": phase,
        "candidateVersion": version,
        "gate": gate,
        "replicas": replicas,
        "readyReplicas": ready_replicas,
        "ready": f"{ready_replicas}/{spec.replicas}",
        "selector": render.selector_string(render.server_selector(name)),
        "endpoint": render.endpoint(name, namespace, spec.serving.port),
        "history": history,
        "conditions": conditions,
    }
    if candidate_accuracy is not None:
        status["candidateAccuracy"] = candidate_accuracy
    if serving:
        status["servingVersion"] = serving
    if serving_accuracy is not None and serving:
        status["accuracy"] = serving_accuracy
    result.status = status
    result.status_changed = status != old
    return result
