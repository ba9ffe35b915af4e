"""The run summary (text and JSON) and the "cannot keep up" verdict. Pure functions."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from modelops_loadgen.stats import Histogram, RunStats

# A generator that sends fewer than this share of the requests its schedule called for is behind.
MIN_ACHIEVED_RATIO = 0.99
QUANTILES: tuple[tuple[str, float], ...] = (
    ("p50", 0.5),
    ("p90", 0.9),
    ("p99", 0.99),
    ("p99_9", 0.999),
)


def behind_reasons(
    *,
    sent: int,
    skipped: int,
    lag_p99: float | None,
    backlog: float,
    lag_limit: float,
) -> list[str]:
    """Why an open-loop generator is not keeping its schedule; empty when it is.

    `sent`/`skipped` compare the generator with its own schedule (for Poisson arrivals the
    nominal rate times the duration is itself random); `backlog` is how late the next unsent
    request already is.
    """
    reasons: list[str] = []
    scheduled = sent + skipped
    if scheduled and sent < MIN_ACHIEVED_RATIO * scheduled:
        reasons.append(
            f"sent {sent} of {scheduled} scheduled requests ({sent / scheduled:.1%} < "
            f"{MIN_ACHIEVED_RATIO:.0%}); {skipped} skipped for being too late"
        )
    if lag_p99 is not None and lag_p99 > lag_limit:
        reasons.append(
            f"schedule lag p99 {lag_p99 * 1e3:.1f} ms exceeds the limit {lag_limit * 1e3:.1f} ms"
        )
    if backlog > lag_limit:
        reasons.append(f"the next request is already {backlog * 1e3:.0f} ms late")
    return reasons


def _quantiles(h: Histogram) -> dict[str, float | None]:
    out: dict[str, float | None] = {name: h.percentile(q) for name, q in QUANTILES}
    out["max"] = h.max if h.count else None
    out["mean"] = h.sum / h.count if h.count else None
    return out


@dataclass
class Summary:
    mode: str
    arrival: str
    endpoint: str
    payload: str
    targets: list[str]
    target_rate: float | None  # None in closed-loop mode
    elapsed: float
    sent: int
    completed: int
    errors: int
    skipped: int
    not_sent_no_target: int
    outcomes: dict[str, int]
    status_codes: dict[str, int]
    latency: dict[str, float | None]
    lag: dict[str, float | None]
    checked: int
    correct: int
    behind: bool
    feedback: dict[str, int] = field(default_factory=dict)
    behind_reasons: list[str] = field(default_factory=list)
    cpu_seconds: float | None = None  # the generator's own CPU time during the run
    resent: int = 0  # sent once more after a kept-alive connection closed unanswered

    @property
    def achieved_rate(self) -> float:
        return self.sent / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def achieved_ratio(self) -> float | None:
        scheduled = self.sent + self.skipped
        if self.mode != "open" or not scheduled:
            return None
        return self.sent / scheduled

    @property
    def online_accuracy(self) -> float | None:
        return self.correct / self.checked if self.checked else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "arrival": self.arrival if self.mode == "open" else None,
            "endpoint": self.endpoint,
            "payload": self.payload,
            "targets": self.targets,
            "target_rate": self.target_rate,
            "elapsed_seconds": round(self.elapsed, 6),
            "achieved_rate": round(self.achieved_rate, 3),
            "achieved_ratio": None
            if self.achieved_ratio is None
            else round(self.achieved_ratio, 5),
            "sent": self.sent,
            "completed": self.completed,
            "errors": self.errors,
            "resent": self.resent,
            "skipped": self.skipped,
            "no_target": self.not_sent_no_target,
            "outcomes": self.outcomes,
            "status_codes": self.status_codes,
            "latency_seconds": self.latency,
            "schedule_lag_seconds": self.lag,
            "predictions_checked": self.checked,
            "predictions_correct": self.correct,
            "online_accuracy": self.online_accuracy,
            "feedback": self.feedback,
            "behind": self.behind,
            "behind_reasons": self.behind_reasons,
            "cpu_seconds": None if self.cpu_seconds is None else round(self.cpu_seconds, 4),
        }


def build_summary(
    stats: RunStats,
    *,
    mode: str,
    arrival: str,
    endpoint: str,
    payload: str,
    targets: list[str],
    target_rate: float | None,
    elapsed: float,
    backlog: float,
    lag_limit: float,
    cpu_seconds: float | None = None,
    resent: int = 0,
) -> Summary:
    outcomes = stats.by_outcome()
    skipped = outcomes.get("skipped", 0)
    lag = _quantiles(stats.lag)
    reasons: list[str] = []
    if mode == "open":
        reasons = behind_reasons(
            sent=stats.sent,
            skipped=skipped,
            lag_p99=lag["p99"],
            backlog=backlog,
            lag_limit=lag_limit,
        )
    return Summary(
        mode=mode,
        arrival=arrival,
        endpoint=endpoint,
        payload=payload,
        targets=targets,
        target_rate=target_rate if mode == "open" else None,
        elapsed=elapsed,
        sent=stats.sent,
        completed=stats.completed,
        errors=stats.errors,
        skipped=skipped,
        not_sent_no_target=outcomes.get("no_target", 0),
        outcomes=outcomes,
        status_codes=stats.by_code(),
        latency=_quantiles(stats.latency),
        lag=lag,
        checked=stats.checked,
        correct=stats.correct,
        feedback=dict(sorted(stats.feedback.items())),
        behind=bool(reasons),
        behind_reasons=reasons,
        cpu_seconds=cpu_seconds,
        resent=resent,
    )


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v * 1e3:.3f} ms"


def format_text(s: Summary) -> str:
    lines: list[str] = []
    if s.mode == "open":
        head = f"open loop, {s.arrival} arrivals at {s.target_rate:g} req/s"
    else:
        head = "closed loop (capacity measurement)"
    lines.append(f"modelops-loadgen: {head} -> {s.endpoint} ({s.payload} payload)")
    lines.append(f"  targets        {', '.join(s.targets) or '(none)'}")
    ratio = s.achieved_ratio
    ratio_txt = "" if ratio is None else f" ({ratio:.2%} of schedule)"
    lines.append(
        f"  elapsed        {s.elapsed:.3f} s; sent {s.sent}, achieved {s.achieved_rate:.2f} req/s"
        f"{ratio_txt}"
    )
    resent = f"; {s.resent} resent on a new connection" if s.resent else ""
    lines.append(f"  completed      {s.completed} ({s.errors} errors{resent})")
    lines.append(
        "  outcomes       " + (", ".join(f"{k} {v}" for k, v in s.outcomes.items()) or "-")
    )
    lines.append(
        "  status codes   " + (", ".join(f"{k}: {v}" for k, v in s.status_codes.items()) or "-")
    )
    lat = s.latency
    lines.append(
        f"  latency        p50 {_ms(lat['p50'])}  p90 {_ms(lat['p90'])}  p99 {_ms(lat['p99'])}"
        f"  p99.9 {_ms(lat['p99_9'])}  max {_ms(lat['max'])}"
        + ("  (from the intended send time)" if s.mode == "open" else "")
    )
    if s.mode == "open":
        lines.append(f"  schedule lag   p99 {_ms(s.lag['p99'])}  max {_ms(s.lag['max'])}")
    acc = s.online_accuracy
    if acc is not None:
        acc_txt = f"{acc:.4f} ({s.correct}/{s.checked} predictions correct)"
    elif s.payload == "uniform":
        acc_txt = "- (uniform payload: no true labels; use --payload iris)"
    else:
        acc_txt = "- (no answer was checked)"
    lines.append(f"  accuracy       {acc_txt}")
    if s.feedback:
        lines.append("  feedback       " + ", ".join(f"{k} {v}" for k, v in s.feedback.items()))
    if s.cpu_seconds is not None and s.elapsed > 0:
        per_req = f", {s.cpu_seconds / s.sent * 1e6:.0f} µs per request" if s.sent else ""
        lines.append(
            f"  generator CPU  {s.cpu_seconds:.3f} s ({s.cpu_seconds / s.elapsed:.0%} of one core"
            f"{per_req})"
        )
    if s.behind:
        lines.append("  BEHIND         the generator did not keep up:")
        lines.extend(f"                 - {r}" for r in s.behind_reasons)
    elif s.mode == "open":
        lines.append("  keeping up     yes")
    return "\n".join(lines)
