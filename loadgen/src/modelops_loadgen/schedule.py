"""Arrival schedules: when each request is meant to leave, as offsets from the run's start.

Pure and deterministic given a seed, so the timing maths is unit-tested without a clock.
"""

from __future__ import annotations

import math
import random
from typing import Protocol

from modelops_loadgen.settings import Arrival


class Schedule(Protocol):
    """Yields the intended send offset (seconds since start) of request 0, 1, 2, ..."""

    rate: float

    def next_offset(self) -> float: ...


class ConstantSchedule:
    """Request k leaves at k / rate: computed, not accumulated, so there is no float drift."""

    def __init__(self, rate: float) -> None:
        if not rate > 0 or math.isinf(rate):
            raise ValueError(f"rate must be a positive finite number, got {rate!r}")
        self.rate = rate
        self._k = 0

    def next_offset(self) -> float:
        offset = self._k / self.rate
        self._k += 1
        return offset


class PoissonSchedule:
    """Exponential gaps with mean 1/rate (a Poisson process); the first request leaves at 0."""

    def __init__(self, rate: float, rng: random.Random) -> None:
        if not rate > 0 or math.isinf(rate):
            raise ValueError(f"rate must be a positive finite number, got {rate!r}")
        self.rate = rate
        self._rng = rng
        self._t = 0.0
        self._first = True

    def next_offset(self) -> float:
        if self._first:
            self._first = False
            return 0.0
        self._t += self._rng.expovariate(self.rate)
        return self._t


def make_schedule(arrival: Arrival, rate: float, rng: random.Random) -> Schedule:
    if arrival == "constant":
        return ConstantSchedule(rate)
    return PoissonSchedule(rate, rng)


def expected_requests(rate: float, duration: float) -> int:
    """How many slots a constant schedule puts in [0, duration): offsets k/rate < duration."""
    if duration <= 0:
        return 0
    n = math.ceil(duration * rate - 1e-9)
    return max(n, 0)
