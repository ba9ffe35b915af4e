"""Reading a finished trainer Job's result (pure: the API module supplies the objects).

The trainer writes a JSON summary to its termination message; the artifact rides in it when it
fits, else in one framed line of the pod log. The operator only reads (no trainer API writes).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from modelops_contract import bundle
from modelops_contract.artifact import ArtifactError, accuracy_of

from ..names import TRAINER_WAITING_REASONS
from .render import CONFIGMAP_MAX_BYTES, artifact_bytes

OOM_KILLED = "OOMKilled"
REASON_DISRUPTED = "TrainerDisrupted"
REASON_UNSCHEDULABLE = "Unschedulable"
# What the trainer exits with on SIGTERM (modelops_trainer.cli.EXIT_TERMINATED).
EXIT_TERMINATED = 143
# 128 + SIGKILL: the kernel's OOM killer (reason OOMKilled), the kubelet at the end of a
# deleted pod's grace period, or the kubelet's stand-in for a container it never started
# or can no longer find (reason ContainerStatusUnknown).
EXIT_KILLED = 137


@dataclass(frozen=True)
class Succeeded:
    version: str
    accuracy: float
    metadata: dict[str, Any]
    model: bytes


@dataclass(frozen=True)
class Failed:
    version: str
    reason: str
    message: str


@dataclass(frozen=True)
class Disrupted:
    """The result was lost to the cluster, not to the training (a pod deleted before it could
    stop by itself, or deleted after it succeeded but before its result was read): the
    version is trained again, not recorded as failed."""

    version: str
    message: str


@dataclass(frozen=True)
class NeedsLog:
    """The summary is there but the artifact is not: read this pod's log and try again."""

    pod: str


Result = Succeeded | Failed | Disrupted
Outcome = Result | NeedsLog


def job_finished(job: Mapping[str, Any]) -> str | None:
    """'Complete', 'Failed' or None (still running) from the Job's conditions."""
    for condition in job.get("status", {}).get("conditions") or []:
        if condition.get("status") == "True" and condition.get("type") in ("Complete", "Failed"):
            return str(condition["type"])
    return None


def _job_condition(job: Mapping[str, Any], kind: str) -> Mapping[str, Any]:
    for condition in job.get("status", {}).get("conditions") or []:
        if condition.get("type") == kind and condition.get("status") == "True":
            return dict(condition)
    return {}


def _terminated(pod: Mapping[str, Any]) -> Mapping[str, Any] | None:
    for status in pod.get("status", {}).get("containerStatuses") or []:
        if status.get("name") == "trainer":
            terminated = (status.get("state") or {}).get("terminated")
            if terminated:
                return dict(terminated)
    return None


def _latest(pods: Sequence[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    ended = [p for p in pods if _terminated(p) is not None]
    if not ended:
        return None
    # The pod that succeeded holds the result, whatever disrupted pods ended near it (their
    # creation times have one-second resolution).
    return max(
        ended,
        key=lambda p: (
            (_terminated(p) or {}).get("exitCode") == 0,
            str(p["metadata"].get("creationTimestamp", "")),
        ),
    )


def _succeeded(pods: Sequence[Mapping[str, Any]]) -> bool:
    return any((_terminated(p) or {}).get("exitCode") == 0 for p in pods)


def _killed(terminated: Mapping[str, Any] | None) -> str:
    """How a container was SIGKILLed other than by the OOM killer ("" if it was not): a pod
    deleted before its trainer installed its SIGTERM handler (PID 1 ignores the signal until
    then) or before its container started (the kubelet reports ContainerStatusUnknown)."""
    if not terminated or terminated.get("exitCode") != EXIT_KILLED:
        return ""
    reason = str(terminated.get("reason") or "")
    if reason == OOM_KILLED:
        return ""
    return f"{reason or 'killed'}, exit code {EXIT_KILLED}"


def _memory_limit(pod: Mapping[str, Any] | None) -> str:
    for container in (pod or {}).get("spec", {}).get("containers") or []:
        if container.get("name") == "trainer":
            return str((container.get("resources") or {}).get("limits", {}).get("memory", ""))
    return ""


def _no_summary(
    version: str,
    job: Mapping[str, Any],
    finished: str,
    pods: Sequence[Mapping[str, Any]],
    pod: Mapping[str, Any] | None,
    terminated: Mapping[str, Any] | None,
) -> Failed | Disrupted:
    """Why a finished Job left no result summary (crash, OOM, deadline, disruption, old
    trainer image)."""
    if finished != "Failed" and not _succeeded(pods):
        return Disrupted(
            version,
            f"the trainer pod of {version} succeeded but was deleted (evicted, drained or "
            "removed by hand) before the operator read its result",
        )
    if finished != "Failed":
        return Failed(
            version,
            "NoResult",
            f"the trainer Job of {version} completed without a result summary in its "
            "termination message; check the trainer image version",
        )
    condition = _job_condition(job, "Failed")
    reason = str(condition.get("reason") or "TrainingFailed")
    stuck = trainer_stuck(pods) if reason == "DeadlineExceeded" and not terminated else None
    if stuck is not None:
        return Failed(
            version,
            stuck[0],
            f"training of {version} never started within spec.training.timeoutSeconds: "
            f"{stuck[1]}; fix it (resources, node capacity, trainer image), then set a new "
            "modelVersion",
        )
    if reason == "DeadlineExceeded":
        return Failed(
            version,
            reason,
            f"training of {version} ran longer than spec.training.timeoutSeconds; "
            "raise it or choose a cheaper algorithm, then set a new modelVersion",
        )
    if terminated and terminated.get("reason") == OOM_KILLED:
        limit = _memory_limit(pod)
        return Failed(
            version,
            OOM_KILLED,
            f"the trainer of {version} ran out of memory and was killed at its memory limit"
            + (f" of {limit}" if limit else "")
            + " (spec.training.resources.limits.memory); raise the limit or choose a smaller "
            "model, then set a new modelVersion",
        )
    killed = _killed(terminated)
    if reason == "PodFailurePolicy" and killed:
        return Disrupted(
            version,
            f"the trainer pod of {version} was killed before it could stop by itself "
            f"({killed}; not out of memory): deleted while starting",
        )
    if reason == "BackoffLimitExceeded" and (terminated or {}).get("exitCode") in (
        None,
        EXIT_TERMINATED,
    ):
        return Failed(
            version,
            REASON_DISRUPTED,
            f"the trainer pod of {version} was deleted before training finished, each time "
            "retried, until the Job's retries ran out; set a new modelVersion to try again",
        )
    if not terminated:
        return Failed(version, reason, str(condition.get("message") or "the trainer Job failed"))
    message = str(terminated.get("message") or "")
    detail = (
        f"trainer container ended with {terminated.get('reason', 'an error')} "
        f"(exit code {terminated.get('exitCode')})"
    )
    tail = message.strip().splitlines()[-1:] if message.strip() else []
    if tail:
        detail += f": {tail[0][:300]}"
    return Failed(version, "TrainerCrashed", detail)


def _summary(message: str) -> dict[str, Any] | None:
    try:
        loaded = json.loads(message) if message.strip().startswith("{") else None
    except json.JSONDecodeError:
        return None
    return loaded if isinstance(loaded, dict) else None


def _artifact(version: str, summary: Mapping[str, Any], packed: str) -> Succeeded | Failed:
    """The artifact a successful trainer handed over, checked against its summary."""
    try:
        metadata, model = bundle.unpack(packed)
    except ArtifactError as exc:
        return Failed(version, "ArtifactCorrupt", str(exc))
    if metadata.get("model_sha256") != summary.get("modelSha256"):
        return Failed(
            version,
            "ArtifactCorrupt",
            "the artifact does not match the modelSha256 the trainer reported",
        )
    if metadata.get("version") != version:
        return Failed(
            version,
            "ArtifactCorrupt",
            f"the artifact is of version {metadata.get('version')!r}, expected {version!r}",
        )
    size = artifact_bytes(metadata, model)
    if size > CONFIGMAP_MAX_BYTES:
        # The API server would refuse the ConfigMap on every pass: a result, not a retry.
        return Failed(
            version,
            "ArtifactTooLarge",
            f"the model of {version} is {size / 2**20:.2f} MiB, more than the "
            f"{CONFIGMAP_MAX_BYTES / 2**20:.0f} MiB a ConfigMap (the artifact store) holds; "
            "train a smaller model (e.g. fewer trees: spec.training.hyperparameters."
            "n_estimators, or max_depth) and set a new modelVersion",
        )
    return Succeeded(
        version=version, accuracy=accuracy_of(metadata), metadata=metadata, model=model
    )


def read_outcome(
    version: str,
    job: Mapping[str, Any],
    pods: Sequence[Mapping[str, Any]],
    log: str | None = None,
) -> Outcome | None:
    """The result of a finished trainer Job, or None while it runs."""
    finished = job_finished(job)
    if finished is None:
        return None
    pod = _latest(pods)
    terminated = _terminated(pod) if pod is not None else None
    summary = _summary((terminated or {}).get("message") or "")
    if summary is None:
        return _no_summary(version, job, finished, pods, pod, terminated)
    if summary.get("status") != "Succeeded":
        return Failed(
            version,
            str(summary.get("reason") or "TrainingFailed"),
            str(summary.get("message") or "training failed without a message"),
        )
    packed = summary.get(bundle.SUMMARY_KEY)
    if not packed:
        if log is None:
            assert pod is not None  # a summary came from a pod
            return NeedsLog(str(pod["metadata"]["name"]))
        packed = bundle.find_in_log(log)
        if not packed:
            # The pod (and its log) went, or the log was rotated, before it was read.
            return Disrupted(
                version,
                f"the trainer log of {version} has no artifact line (log rotated, or pod "
                "deleted before the operator read it)",
            )
    return _artifact(version, summary, str(packed))


def trainer_stuck(pods: Sequence[Mapping[str, Any]]) -> tuple[str, str] | None:
    """(reason, message) when the running Job's newest pod cannot start: it is not scheduled
    (the scheduler's message says why) or its container cannot be created."""
    # A pod being deleted counts too: the Job deletes its pods at the deadline, and an
    # unscheduled pod stays unscheduled until it is gone.
    if not pods:
        return None
    pod = max(pods, key=lambda p: str(p["metadata"].get("creationTimestamp", "")))
    name = pod["metadata"]["name"]
    for cond in pod.get("status", {}).get("conditions") or []:
        if cond.get("type") == "PodScheduled" and cond.get("status") == "False":
            why = str(cond.get("message") or cond.get("reason") or "no node fits").rstrip(".")
            return REASON_UNSCHEDULABLE, f"trainer pod {name} cannot be scheduled: {why}"
    for status in pod.get("status", {}).get("containerStatuses") or []:
        waiting = (status.get("state") or {}).get("waiting") or {}
        if waiting.get("reason") in TRAINER_WAITING_REASONS:
            why = f"{waiting['reason']}: {waiting.get('message') or ''}".strip(": ")
            return str(waiting["reason"]), f"trainer pod {name} cannot start: {why}"
    return None
