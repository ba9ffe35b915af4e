"""Shadow and Canary rollouts, judged by live accuracy (pure: no I/O).

A version the gate accepted does not replace the serving (stable) one at once when
``spec.rollout.strategy`` is Shadow or Canary. It runs beside it as the candidate: in Shadow it
gets a copy of every live request from the stable servers; in Canary it takes ``steps[i]``
percent of the server replicas behind the one Service. Each step runs ``pauseSeconds`` with its
replicas ready, then the analysis reads what Prometheus recorded over that window — live
accuracy of candidate and stable (from clients' feedback), agreement with the stable answers
(Shadow), the candidate's 5xx ratio and p99 latency — and decides: pass → the next step, then
promote; fail → roll back to the stable version at once; too few samples → the step goes on;
Prometheus unreachable → the rollout pauses and says so.

The engine asks :func:`analysis_request` whether an analysis is due before a pass (the driver
runs the queries), then :func:`plan_rollout` and :func:`converge_candidate` run as phases of
the plan with the results. Everything the rollout must remember lives in ``status.rollout``, so
an operator restarted mid-canary resumes at the same step.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from .. import names
from ..settings import Settings
from ..spec import Analysis, ModelDeploymentSpec
from . import render
from .drift import drifted, rolled_out
from .phases import known_sha
from .state import PlanState, Ref

# Error ratio and latency are judged once the candidate has answered this many requests.
MIN_REQUESTS = 20
# One-sided 95 % confidence: a candidate fails on live accuracy or agreement only when its
# figure is worse than the threshold beyond what sampling noise explains (a few dozen
# feedback rows make an equal model look a few points worse now and then).
CONFIDENCE_Z = 1.645
# While an analysis is due but cannot decide (too few samples, Prometheus away): ask again.
RETRY_SECONDS = 10.0
# Probes and scrapes would dilute the error ratio (as in the recording rules).
_NOT_API = "/metrics|/healthz|/readyz|/v2/health/live|/v2/health/ready"


@dataclass(frozen=True)
class AnalysisRequest:
    """The queries a due analysis needs, and where to send them."""

    prometheus_url: str
    queries: dict[str, str]
    problem: str = ""  # why the URL may not be queried (then no query is sent)


Sample = tuple[dict[str, str], float]


@dataclass(frozen=True)
class QueryResults:
    """What the driver got back: per query, the instant vector's (labels, value) samples; or,
    when Prometheus could not be queried, why not."""

    vectors: dict[str, list[Sample]] = field(default_factory=dict)
    error: str = ""


@dataclass(frozen=True)
class Figures:
    candidate_correct: float = 0.0
    candidate_samples: float = 0.0
    stable_correct: float = 0.0
    stable_samples: float = 0.0
    agree: float = 0.0
    compared: float = 0.0  # shadow copies answered (agree + disagree)
    candidate_requests: float = 0.0
    candidate_errors: float = 0.0
    latency_p99: float | None = None

    @property
    def candidate_accuracy(self) -> float | None:
        return self.candidate_correct / self.candidate_samples if self.candidate_samples else None

    @property
    def stable_accuracy(self) -> float | None:
        return self.stable_correct / self.stable_samples if self.stable_samples else None

    @property
    def agreement(self) -> float | None:
        return self.agree / self.compared if self.compared else None

    @property
    def error_ratio(self) -> float | None:
        requests = self.candidate_requests
        return self.candidate_errors / requests if requests else None


@dataclass(frozen=True)
class Verdict:
    result: str  # names.ANALYSIS_*
    reason: str
    message: str
    figures: Figures = field(default_factory=Figures)


# ---- queries and their figures ----------------------------------------------------------------


# Scrapes of each version an analysis window holds at least: increase() needs two samples of
# a series in its window, and a scrape may come late on a busy node.
WINDOW_SCRAPES = 3
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def analysis_window(spec: ModelDeploymentSpec) -> int:
    """Seconds of the analysis' window: the step's pause, or WINDOW_SCRAPES scrape intervals
    (spec.monitoring.scrapeInterval) when the pause is shorter: a window of fewer scrapes has
    no increase() for a version now and then, and the analysis would wait for samples that a
    window that short never holds."""
    text = spec.scrape_interval
    unit = "ms" if text.endswith("ms") else text[-1]
    scrape = float(text[: -len(unit)]) * _DURATION_UNITS[unit]
    return max(spec.rollout.pause_seconds, math.ceil(WINDOW_SCRAPES * scrape))


def queries(namespace: str, name: str, window_seconds: int) -> dict[str, str]:
    """PromQL for one analysis over the last ``window_seconds`` (grouped by version)."""
    where = f'namespace="{namespace}",{names.METRIC_LABEL}="{name}"'
    window = f"[{window_seconds}s]"
    return {
        "feedback": f"sum by (model_version, result) "
        f"(increase(api_feedback_total{{{where}}}{window}))",
        "shadow": f"sum by (shadow_version, result) "
        f"(increase(api_shadow_total{{{where}}}{window}))",
        "shadow_feedback": f"sum by (shadow_version, result) "
        f"(increase(api_shadow_feedback_total{{{where}}}{window}))",
        "requests": f"sum by (version, code) "
        f'(increase(api_requests_total{{{where},endpoint!~"{_NOT_API}"}}{window}))',
        "latency": f"histogram_quantile(0.99, sum by (version, le) "
        f"(rate(api_prediction_latency_seconds_bucket{{{where}}}{window})))",
    }


def figures(results: QueryResults, stable: str, candidate: str, shadow: bool = False) -> Figures:
    """The analysis' figures for ``candidate`` vs ``stable`` from the query results.

    A Shadow candidate's live accuracy is what the stable servers judged of its answers
    (api_shadow_feedback_total): the feedback they relay to it reaches any of its replicas,
    not always the one that answered. Its own api_feedback_total counts only for stable
    servers of a build that did not judge (no such series)."""
    v = results.vectors

    def total(query: str, **match: str) -> float:
        return sum(
            value
            for labels, value in v.get(query, [])
            if math.isfinite(value) and all(labels.get(k) == want for k, want in match.items())
        )

    p99 = [val for labels, val in v.get("latency", []) if labels.get("version") == candidate]
    errors = sum(
        value
        for labels, value in v.get("requests", [])
        if labels.get("version") == candidate and labels.get("code", "").startswith("5")
    )
    judged = shadow and any(
        labels.get("shadow_version") == candidate for labels, _ in v.get("shadow_feedback", [])
    )
    mine = ("shadow_feedback", "shadow_version") if judged else ("feedback", "model_version")
    return Figures(
        candidate_correct=total(mine[0], **{mine[1]: candidate, "result": "correct"}),
        candidate_samples=total(mine[0], **{mine[1]: candidate}),
        stable_correct=total("feedback", model_version=stable, result="correct"),
        stable_samples=total("feedback", model_version=stable),
        agree=total("shadow", shadow_version=candidate, result="agree"),
        compared=total("shadow", shadow_version=candidate, result="agree")
        + total("shadow", shadow_version=candidate, result="disagree"),
        candidate_requests=total("requests", version=candidate),
        candidate_errors=errors,
        latency_p99=p99[0] if p99 and math.isfinite(p99[0]) else None,
    )


# ---- the decision -----------------------------------------------------------------------------


def judge(f: Figures, analysis: Analysis, strategy: str, stable: str, candidate: str) -> Verdict:
    """Failed on the first threshold broken (errors and latency need no feedback), else
    Inconclusive while samples are too few, else Passed."""
    failed = _broken(f, analysis, strategy, stable, candidate)
    if failed is not None:
        return Verdict(names.ANALYSIS_FAILED, failed[0], failed[1], f)
    need = analysis.min_samples
    short = [
        f"{version} has {int(samples)} of {need} feedback samples"
        for version, samples in ((candidate, f.candidate_samples), (stable, f.stable_samples))
        if samples < need
    ]
    if strategy == names.STRATEGY_SHADOW and not f.compared:
        short.append(f"no shadow copy of {candidate} was compared yet")
    if short:
        return Verdict(
            names.ANALYSIS_INCONCLUSIVE,
            names.REASON_FEW_SAMPLES,
            "waiting for live traffic with feedback: " + "; ".join(short),
            f,
        )
    return Verdict(
        names.ANALYSIS_PASSED, names.REASON_WITHIN_THRESHOLDS, "within thresholds: " + _said(f), f
    )


def _broken(
    f: Figures, a: Analysis, strategy: str, stable: str, candidate: str
) -> tuple[str, str] | None:
    if f.candidate_requests >= MIN_REQUESTS and (f.error_ratio or 0.0) > a.max_error_ratio:
        return names.REASON_ERROR_RATIO, (
            f"{candidate} answered {f.error_ratio:.2%} of {int(f.candidate_requests)} requests "
            f"with a 5xx (at most {a.max_error_ratio:.2%})"
        )
    if f.latency_p99 is not None and f.latency_p99 > a.max_latency_p99_seconds:
        return names.REASON_LATENCY, (
            f"{candidate}'s p99 latency {f.latency_p99 * 1e3:.1f} ms is over "
            f"{a.max_latency_p99_seconds * 1e3:.1f} ms"
        )
    cand, base = f.candidate_accuracy, f.stable_accuracy
    enough = min(f.candidate_samples, f.stable_samples) >= a.min_samples
    if (
        enough
        and cand is not None
        and base is not None
        and accuracy_drop_beyond_noise(f) > (a.max_accuracy_drop)
    ):
        return names.REASON_LIVE_ACCURACY, (
            f"live accuracy of {candidate} {cand:.4f} is {base - cand:.4f} below {stable}'s "
            f"{base:.4f} (at most {a.max_accuracy_drop:g}, beyond sampling noise) on "
            f"{int(f.candidate_samples)} vs {int(f.stable_samples)} feedback samples"
        )
    agreement = f.agreement
    shadowed = strategy == names.STRATEGY_SHADOW and f.compared >= MIN_REQUESTS
    if shadowed and agreement is not None and _upper_bound(f.agree, f.compared) < a.min_agreement:
        return names.REASON_AGREEMENT, (
            f"{candidate} answered {agreement:.2%} of {int(f.compared)} copied requests as "
            f"{stable} did (at least {a.min_agreement:.2%}, beyond sampling noise)"
        )
    return None


def accuracy_drop_beyond_noise(f: Figures) -> float:
    """The least drop (stable minus candidate live accuracy) the samples show at 95 % confidence:
    the one-sided Agresti-Caffo bound (one correct and one wrong row added to each version,
    so that 20 of 20 is not taken for certainty)."""
    cand = (f.candidate_correct + 1) / (f.candidate_samples + 2)
    base = (f.stable_correct + 1) / (f.stable_samples + 2)
    spread = math.sqrt(
        cand * (1 - cand) / (f.candidate_samples + 2) + base * (1 - base) / (f.stable_samples + 2)
    )
    return base - cand - CONFIDENCE_Z * spread


def _upper_bound(successes: float, trials: float) -> float:
    """The one-sided 95 % Wilson upper bound of a share (successes of trials)."""
    z2 = CONFIDENCE_Z * CONFIDENCE_Z
    share = successes / trials
    centre = share + z2 / (2 * trials)
    margin = CONFIDENCE_Z * math.sqrt(share * (1 - share) / trials + z2 / (4 * trials * trials))
    return min(1.0, (centre + margin) / (1 + z2 / trials))


def _said(f: Figures) -> str:
    parts = []
    if f.candidate_accuracy is not None and f.stable_accuracy is not None:
        parts.append(
            f"live accuracy {f.candidate_accuracy:.4f} vs {f.stable_accuracy:.4f} "
            f"({int(f.candidate_samples)}/{int(f.stable_samples)} samples)"
        )
    if f.agreement is not None:
        parts.append(f"agreement {f.agreement:.2%}")
    if f.error_ratio is not None:
        parts.append(f"5xx {f.error_ratio:.2%}")
    if f.latency_p99 is not None:
        parts.append(f"p99 {f.latency_p99 * 1e3:.1f} ms")
    return ", ".join(parts) or "no figures"


def analysis_record(verdict: Verdict, step: int, now: str, generation: int) -> dict[str, Any]:
    """status.rollout.lastAnalysis: the verdict and its figures (absent ones left out)."""
    f = verdict.figures
    record: dict[str, Any] = {
        "time": now,
        "step": step,
        "generation": generation,
        "result": verdict.result,
        "reason": verdict.reason,
        "message": verdict.message,
        "candidateSamples": int(f.candidate_samples),
        "stableSamples": int(f.stable_samples),
    }
    for key, value in (
        ("candidateLiveAccuracy", f.candidate_accuracy),
        ("stableLiveAccuracy", f.stable_accuracy),
        ("agreement", f.agreement),
        ("errorRatio", f.error_ratio),
        ("latencyP99Seconds", f.latency_p99),
    ):
        if value is not None:
            record[key] = round(value, 6)
    return record


# ---- steps ------------------------------------------------------------------------------------


def step_replicas(
    strategy: str, steps: tuple[int, ...], replicas: int, step: int
) -> tuple[int, int, int]:
    """(candidate replicas, stable replicas, candidate weight %) of ``step`` (1-based).

    Canary: the candidate gets ``steps[step-1]`` percent of ``replicas`` (at least 1), the stable
    Deployment the rest (at least 1), so the Service spreads connections by that weight.
    Shadow: the candidate serves copies only, with as many replicas as the stable one.
    """
    if strategy == names.STRATEGY_SHADOW:
        return replicas, replicas, 0
    percent = steps[min(step, len(steps)) - 1]
    candidate = max(1, round(replicas * percent / 100))
    stable = max(1, replicas - candidate)
    return candidate, stable, round(100 * candidate / (candidate + stable))


def step_count(strategy: str, steps: tuple[int, ...]) -> int:
    return 1 if strategy == names.STRATEGY_SHADOW else len(steps)


def seconds_between(earlier: str, later: str) -> float:
    def parse(text: str) -> datetime:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))

    return (parse(later) - parse(earlier)).total_seconds()


def _due(record: Mapping[str, Any], pause: int, now: str, generation: int) -> bool:
    """The step's pause is over, and its last analysis (if any) is RETRY_SECONDS old or was
    made for an older spec (a fixed prometheusURL or threshold is tried at once)."""
    started = record.get("stepStartedAt")
    running = record.get("state") in (names.ROLLOUT_PROGRESSING, names.ROLLOUT_PAUSED)
    if not (running and started and seconds_between(str(started), now) >= pause):
        return False
    analysis = record.get("lastAnalysis") or {}
    last = analysis.get("time")
    same = analysis.get("step") == record.get("step") and analysis.get("generation") == generation
    return not (last and same and seconds_between(str(last), now) < RETRY_SECONDS)


def analysis_request(cr: Mapping[str, Any], settings: Settings, now: str) -> AnalysisRequest | None:
    """The analysis a pass at ``now`` needs (None: none is due)."""
    spec = ModelDeploymentSpec.from_dict(cr["spec"])
    record = (cr.get("status") or {}).get("rollout") or {}
    rollout = spec.rollout
    if (
        rollout.strategy == names.STRATEGY_DIRECT
        or record.get("version") != spec.model_version
        or not _due(record, rollout.pause_seconds, now, int(cr["metadata"].get("generation", 1)))
    ):
        return None
    meta = cr["metadata"]
    url = rollout.analysis.prometheus_url or settings.prometheus_url
    return AnalysisRequest(
        url,
        queries(str(meta["namespace"]), str(meta["name"]), analysis_window(spec)),
        settings.prometheus_problem(url),
    )


# ---- the phases -------------------------------------------------------------------------------


def plan_rollout(state: PlanState) -> None:
    """Hold the stable version while the candidate runs its steps; advance, promote or roll
    back from the analysis. Runs after choose_target (it may change the target)."""
    rollout = state.spec.rollout
    record = dict(state.old.get("rollout") or {})
    if record.get("version") != state.version:
        record = {}  # the record of an earlier candidate: replaced when this one starts
    if (
        rollout.strategy == names.STRATEGY_DIRECT
        or state.serving is None
        or state.spec.replicas == 0  # scaled to zero: no traffic to judge a candidate on
        or state.serving == state.version
        or state.verdict != names.ACCEPTED
        or state.artifact_missing
    ):
        _settle(state, dict(state.old.get("rollout") or {}))
        return
    if not record or record.get("state") in (names.ROLLOUT_PROMOTED, names.ROLLOUT_ROLLED_BACK):
        record = _begin(state)
    state.rollout_status = record
    if record["state"] == names.ROLLOUT_PROMOTING:
        state.target = state.version  # the stable Deployment rolls to the candidate
        state.candidate_replicas = int(record.get("candidateReplicas", 1))
        state.candidate_shadow = rollout.strategy == names.STRATEGY_SHADOW
        return
    _run_step(state, record)


def _begin(state: PlanState) -> dict[str, Any]:
    rollout = state.spec.rollout
    steps = step_count(rollout.strategy, rollout.steps)
    state.event(
        names.NORMAL,
        names.EVENT_ROLLOUT_STARTED,
        f"{rollout.strategy} rollout of {state.version} beside {state.serving}: {steps} "
        f"step(s) of {rollout.pause_seconds} s, each judged on live accuracy",
    )
    return {
        "strategy": rollout.strategy,
        "version": state.version,
        "stableVersion": state.serving,
        "state": names.ROLLOUT_PROGRESSING,
        "step": 1,
        "steps": steps,
    }


def _want_step(state: PlanState, record: dict[str, Any]) -> tuple[int, int, int]:
    """The replicas of the recorded step: in the plan's state and in the record."""
    rollout, spec = state.spec.rollout, state.spec
    step = int(record["step"])
    candidate, stable, weight = step_replicas(rollout.strategy, rollout.steps, spec.replicas, step)
    shadow = rollout.strategy == names.STRATEGY_SHADOW
    state.target = state.serving
    state.candidate_replicas, state.candidate_shadow = candidate, shadow
    state.stable_replicas = stable
    if shadow:
        state.shadow_url = render.endpoint(
            render.candidate_name(state.name), state.namespace, spec.serving.port
        )
    record.update(
        progress=f"{step}/{record['steps']}",
        weight=weight,
        candidateReplicas=candidate,
        stableReplicas=stable,
    )
    return candidate, stable, weight


def _label(record: Mapping[str, Any]) -> str:
    """How messages name the step: "canary step 1/2", or "shadow"."""
    if record.get("strategy") == names.STRATEGY_SHADOW:
        return "shadow"
    return f"canary step {record['step']}/{record['steps']}"


def _run_step(state: PlanState, record: dict[str, Any]) -> None:
    """One step: its replicas, then its pause, then its analysis."""
    rollout = state.spec.rollout
    candidate, stable, weight = _want_step(state, record)
    shadow = state.candidate_shadow
    if not _step_ready(state, candidate, stable):
        record.pop("stepStartedAt", None)
        record["message"] = (
            f"{_label(record)}: waiting for {candidate} {state.version} and {stable} "
            f"{state.serving} replicas to be ready"
        )
        return
    if not record.get("stepStartedAt"):
        record["stepStartedAt"] = state.now
    due = _due(record, rollout.pause_seconds, state.now, state.generation)
    if not due or state.analysis is None:
        left = rollout.pause_seconds - seconds_between(str(record["stepStartedAt"]), state.now)
        state.result.requeue_after = max(1.0, left) if left > 0 else RETRY_SECONDS
        if record.get("state") != names.ROLLOUT_PAUSED:
            record["message"] = (
                f"{_label(record)}: {weight}% of the replicas on {state.version}"
                if not shadow
                else f"{_label(record)}: {state.version} gets a copy of live traffic"
            ) + f"; analysis {rollout.pause_seconds} s after {record['stepStartedAt']}"
        return
    _decide(state, record, _verdict(state, record))


def _step_ready(state: PlanState, candidate: int, stable: int) -> bool:
    observed = state.observed
    assert state.serving is not None
    return rolled_out(observed.candidate, state.version, candidate) and rolled_out(
        observed.server, state.serving, stable
    )


def _verdict(state: PlanState, record: Mapping[str, Any]) -> Verdict:
    results = state.analysis
    assert results is not None and state.serving is not None
    if results.error:
        return Verdict(
            names.ANALYSIS_UNAVAILABLE,
            names.REASON_PROMETHEUS_UNAVAILABLE,
            f"{results.error}; the rollout waits (the stable version keeps serving) until "
            "Prometheus answers; check spec.rollout.analysis.prometheusURL or the operator's "
            "MODELOPS_PROMETHEUS_URL",
        )
    rollout = state.spec.rollout
    shadow = rollout.strategy == names.STRATEGY_SHADOW
    found = figures(results, state.serving, state.version, shadow)
    return judge(found, rollout.analysis, rollout.strategy, state.serving, state.version)


def _decide(state: PlanState, record: dict[str, Any], verdict: Verdict) -> None:
    step = int(record["step"])
    record["lastAnalysis"] = analysis_record(verdict, step, state.now, state.generation)
    record["message"] = f"{_label(record)} analysis {verdict.result}: {verdict.message}"
    state.result.requeue_after = RETRY_SECONDS
    if verdict.result == names.ANALYSIS_UNAVAILABLE:
        if record.get("state") != names.ROLLOUT_PAUSED:
            state.event(names.WARNING, names.EVENT_ROLLOUT_PAUSED, record["message"])
        record["state"] = names.ROLLOUT_PAUSED
        return
    record["state"] = names.ROLLOUT_PROGRESSING
    if verdict.result == names.ANALYSIS_FAILED:
        _roll_back(state, record, verdict)
    elif verdict.result == names.ANALYSIS_PASSED:
        _advance(state, record, verdict)


def _advance(state: PlanState, record: dict[str, Any], verdict: Verdict) -> None:
    step = int(record["step"])
    record.pop("stepStartedAt", None)
    if step < int(record["steps"]):
        record["step"] = step + 1
        _want_step(state, record)
        record["message"] = f"{_label(record)}: waiting for its replicas to be ready"
        state.event(
            names.NORMAL,
            names.EVENT_ANALYSIS_PASSED,
            f"{state.version} step {step}/{record['steps']} passed ({verdict.message}); "
            f"next: step {step + 1}",
        )
        return
    record["state"] = names.ROLLOUT_PROMOTING
    record["message"] = f"every step passed; the servers roll to {state.version}"
    state.target = state.version
    state.stable_replicas = None
    state.shadow_url = ""
    state.event(
        names.NORMAL,
        names.EVENT_PROMOTED,
        f"{state.version} promoted after {record['steps']} step(s) ({verdict.message}); "
        f"the servers roll from {state.serving} to it",
    )


def _roll_back(state: PlanState, record: dict[str, Any], verdict: Verdict) -> None:
    """At once: the stable version takes every replica again, the candidate goes."""
    entry = state.entry
    assert entry is not None and state.serving is not None
    entry["gateReason"], entry["gateMessage"] = entry["reason"], entry["message"]
    entry.update(
        outcome=names.OUTCOME_ROLLED_BACK,
        reason=verdict.reason,
        message=f"rolled back to {state.serving}: {verdict.message}",
        time=state.now,
    )
    record.update(state=names.ROLLOUT_ROLLED_BACK, weight=0, candidateReplicas=0)
    record["message"] = entry["message"]
    state.target = state.serving
    state.candidate_replicas, state.stable_replicas, state.shadow_url = 0, None, ""
    state.event(names.WARNING, names.EVENT_ROLLED_BACK, f"{state.version} {entry['message']}")


def _settle(state: PlanState, record: dict[str, Any]) -> None:
    """No rollout runs: a promotion that completed is recorded; the last record stays."""
    if not record:
        return
    if record.get("state") == names.ROLLOUT_PROMOTING and state.serving == record.get("version"):
        record.update(state=names.ROLLOUT_PROMOTED, weight=100, candidateReplicas=0)
        record["message"] = f"{record['version']} promoted; it serves on every replica"
    state.rollout_status = record


def converge_candidate(state: PlanState) -> None:
    """The candidate Deployment (and, for Shadow, its Service) while a rollout needs them."""
    cr, spec, observed = state.cr, state.spec, state.observed
    name = render.candidate_name(state.name)
    if state.candidate_replicas > 0:
        sha = known_sha(state.history, state.outcomes, state.version)
        wanted = render.candidate_deployment(
            cr, spec, state.settings, state.version, sha, state.candidate_replicas,
            shadow=state.candidate_shadow,
        )  # fmt: skip
        if drifted(wanted, observed.candidate):
            state.result.apply.append(wanted)
        if state.candidate_shadow:
            service = render.candidate_service(cr, spec)
            if drifted(service, observed.candidate_service):
                state.result.apply.append(service)
            return
    elif observed.candidate is not None:
        state.result.delete.append(Ref("apps/v1", "Deployment", name))
    if observed.candidate_service is not None:
        state.result.delete.append(Ref("v1", "Service", name))
