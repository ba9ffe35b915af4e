"""Comparing what the API server holds with what the operator wants (pure)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from decimal import Decimal, InvalidOperation
from typing import Any

from ..names import ANNOTATION_SHA256, LABEL_VERSION

_SUFFIXES: dict[str, int | Decimal] = {
    "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60,
    "n": Decimal("1e-9"), "u": Decimal("1e-6"), "m": Decimal("1e-3"),
    "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18,
}  # fmt: skip
_BY_LENGTH = sorted(_SUFFIXES, key=len, reverse=True)


def _quantity(value: Any) -> Decimal | None:
    text = str(value)
    for suffix in _BY_LENGTH:
        if text.endswith(suffix):
            try:
                return Decimal(text[: -len(suffix)]) * Decimal(_SUFFIXES[suffix])
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


def template_version(deployment: Mapping[str, Any] | None) -> str | None:
    """The model version a Deployment's pod template runs."""
    if deployment is None:
        return None
    template_labels = deployment["spec"]["template"]["metadata"].get("labels") or {}
    version = template_labels.get(LABEL_VERSION)
    return str(version) if version else None


def template_sha(deployment: Mapping[str, Any] | None) -> str:
    """The model digest a Deployment's pods are pinned to ("" when none)."""
    if deployment is None:
        return ""
    annotations = deployment["spec"]["template"]["metadata"].get("annotations") or {}
    return str(annotations.get(ANNOTATION_SHA256, ""))


def rolled_out(deployment: Mapping[str, Any] | None, version: str, replicas: int) -> bool:
    """The Deployment runs ``version`` on every replica, all available, no old pods left."""
    if deployment is None or template_version(deployment) != version:
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


def rollout_stalled(deployment: Mapping[str, Any] | None, version: str) -> str | None:
    """The Deployment controller's message when the rollout of ``version`` went past its
    progress deadline (``Progressing`` False, ``ProgressDeadlineExceeded``), else None."""
    if deployment is None or template_version(deployment) != version:
        return None
    status = deployment.get("status") or {}
    if status.get("observedGeneration", 0) < deployment["metadata"].get("generation", 0):
        return None  # the controller has not looked at the current template yet
    for cond in status.get("conditions") or []:
        if (
            cond.get("type") == "Progressing"
            and cond.get("status") == "False"
            and cond.get("reason") == "ProgressDeadlineExceeded"
        ):
            return str(cond.get("message") or "the rollout exceeded its progress deadline")
    return None


def _pod_problem(pod: Mapping[str, Any]) -> str:
    for status in pod.get("status", {}).get("containerStatuses") or []:
        waiting = (status.get("state") or {}).get("waiting") or {}
        last = (status.get("lastState") or {}).get("terminated") or {}
        if waiting.get("reason") == "CrashLoopBackOff" and last:
            return (
                f"container {status.get('name')} keeps exiting "
                f"({last.get('reason', 'Error')}, exit code {last.get('exitCode')})"
            )
        if waiting.get("reason"):
            return f"{waiting['reason']}: {waiting.get('message') or ''}".strip(": ")
        if (status.get("state") or {}).get("running") and not status.get("ready"):
            return "running but not ready (readiness probe failing)"
    for cond in pod.get("status", {}).get("conditions") or []:
        if cond.get("type") == "PodScheduled" and cond.get("status") == "False":
            return f"not scheduled: {cond.get('message') or cond.get('reason')}"
    return str(pod.get("status", {}).get("phase") or "Pending")


def stall_detail(pods: Sequence[Mapping[str, Any]], version: str) -> str:
    """What the new version's pods that are not ready say (the first of them), or ""."""
    for pod in sorted(pods, key=lambda p: str(p["metadata"]["name"])):
        labels = pod["metadata"].get("labels") or {}
        status = pod.get("status") or {}
        conditions = {c.get("type"): c.get("status") for c in status.get("conditions") or []}
        if labels.get(LABEL_VERSION) != version or conditions.get("Ready") == "True":
            continue
        if pod["metadata"].get("deletionTimestamp"):
            continue
        return f"pod {pod['metadata']['name']}: {_pod_problem(pod)}"
    return ""
