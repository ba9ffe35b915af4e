"""Run statistics: outcome counts, latency and schedule-lag histograms, online accuracy.

Recording is on the hot path (thousands of calls a second on one core), so it is plain integer
arithmetic; percentiles and Prometheus exposition are computed only when asked.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Sequence
from dataclasses import dataclass, field

# Relative precision of the percentile histogram: a reported percentile is within 1 % of an
# observed value in its bucket. 1 µs .. ~3 h fits in ~2,300 buckets.
_PRECISION = 0.01
_K = 1.0 / math.log1p(_PRECISION)
_MIN_US = 1.0
_MAX_INDEX = int(math.log(1e10) * _K) + 2

# Prometheus buckets. Latency: sub-millisecond (loopback) to the default 10 s timeout.
LATENCY_BUCKETS: tuple[float, ...] = (
    0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1,
    0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)  # fmt: skip
# Schedule lag: a healthy generator sits well under a millisecond.
LAG_BUCKETS: tuple[float, ...] = (
    0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0, 5.0,
)  # fmt: skip


def _index(value: float) -> int:
    us = value * 1e6
    if us < _MIN_US:
        return 0
    i = int(math.log(us) * _K) + 1
    return i if i < _MAX_INDEX else _MAX_INDEX - 1


def _bucket_value(i: int) -> float:
    """Representative value (seconds) of fine bucket i: the geometric middle of its range."""
    if i == 0:
        return 0.0
    lo = math.exp((i - 1) / _K)
    hi = math.exp(i / _K)
    return math.sqrt(lo * hi) / 1e6


def percentile_from_counts(counts: Sequence[int], q: float) -> float | None:
    """q-quantile (0 < q <= 1) of the fine-bucket counts; None when empty.

    Nearest-rank definition: the smallest value with at least ceil(q * n) observations <= it.
    """
    if not 0 < q <= 1:
        raise ValueError(f"quantile must be in (0, 1], got {q}")
    n = sum(counts)
    if n == 0:
        return None
    rank = max(1, math.ceil(q * n - 1e-9))
    seen = 0
    for i, c in enumerate(counts):
        seen += c
        if seen >= rank:
            return _bucket_value(i)
    raise AssertionError("unreachable: rank <= n")  # pragma: no cover


class Histogram:
    """Log-bucketed histogram (1 % precision) plus cumulative Prometheus buckets."""

    __slots__ = ("bounds", "count", "fine", "max", "min", "prom", "sum")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds: tuple[float, ...] = tuple(bounds)
        self.fine: list[int] = [0] * _MAX_INDEX
        self.prom: list[int] = [0] * (len(self.bounds) + 1)  # last is +Inf
        self.count = 0
        self.sum = 0.0
        self.min = math.inf
        self.max = 0.0

    def observe(self, value: float) -> None:
        if value < 0.0:
            value = 0.0
        self.count += 1
        self.sum += value
        if value > self.max:
            self.max = value
        if value < self.min:
            self.min = value
        self.fine[_index(value)] += 1
        self.prom[bisect_left(self.bounds, value)] += 1

    def percentile(self, q: float) -> float | None:
        """q-quantile, clamped to the observed min/max; the top rank is the exact max."""
        v = percentile_from_counts(self.fine, q)
        if v is None:
            return None
        if math.ceil(q * self.count - 1e-9) >= self.count:
            return self.max
        return min(max(v, self.min), self.max)

    def snapshot(self) -> list[int]:
        return list(self.fine)

    def cumulative_buckets(self) -> list[tuple[float, int]]:
        """[(le, cumulative count)] ending with (+inf, count), as Prometheus exposes it."""
        out: list[tuple[float, int]] = []
        acc = 0
        for le, c in zip((*self.bounds, math.inf), self.prom, strict=True):
            acc += c
            out.append((le, acc))
        return out


def window_percentile(now: Sequence[int], before: Sequence[int], q: float) -> float | None:
    """Percentile of the observations made between two snapshots of the same histogram."""
    return percentile_from_counts([a - b for a, b in zip(now, before, strict=True)], q)


# Outcomes are a closed set so the Prometheus label stays bounded.
OUTCOMES: tuple[str, ...] = (
    "ok",  # 2xx with a well-formed answer
    "http_error",  # a non-2xx status
    "bad_response",  # 2xx but the body is not the expected JSON shape
    "timeout",  # no full answer within TIMEOUT
    "connect_error",  # refused, unreachable, name not resolved
    "disconnected",  # the connection broke after it was established
    "client_error",  # any other transport error
    "skipped",  # not sent: more than MAX_LATENESS behind schedule
    "no_target",  # not sent: the targets file lists no target
    "aborted",  # in flight when a forced stop cancelled it
)
NOT_SENT: frozenset[str] = frozenset({"skipped", "no_target"})


@dataclass
class RunStats:
    """Mutable counters of one run. Single-threaded writers (the event loop)."""

    counts: dict[tuple[str, str], int] = field(default_factory=dict)
    latency: Histogram = field(default_factory=lambda: Histogram(LATENCY_BUCKETS))
    lag: Histogram = field(default_factory=lambda: Histogram(LAG_BUCKETS))
    sent: int = 0
    not_sent: int = 0
    in_flight: int = 0
    checked: int = 0
    correct: int = 0
    # Feedback sent to the server for checked predictions, by outcome (ok, refused, error).
    feedback: dict[str, int] = field(default_factory=dict)

    def record_feedback(self, outcome: str) -> None:
        self.feedback[outcome] = self.feedback.get(outcome, 0) + 1

    def record(self, outcome: str, code: str = "") -> None:
        key = (outcome, code)
        self.counts[key] = self.counts.get(key, 0) + 1

    def record_not_sent(self, outcome: str) -> None:
        self.not_sent += 1
        self.record(outcome)

    def by_outcome(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for (outcome, _code), n in self.counts.items():
            out[outcome] = out.get(outcome, 0) + n
        return dict(sorted(out.items()))

    def by_code(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for (_outcome, code), n in self.counts.items():
            if code:
                out[code] = out.get(code, 0) + n
        return dict(sorted(out.items()))

    @property
    def completed(self) -> int:
        return sum(n for (o, _c), n in self.counts.items() if o not in NOT_SENT)

    @property
    def errors(self) -> int:
        return sum(n for (o, _c), n in self.counts.items() if o not in NOT_SENT and o != "ok")

    @property
    def online_accuracy(self) -> float | None:
        return self.correct / self.checked if self.checked else None
