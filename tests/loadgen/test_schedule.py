import itertools
import math
import random
import statistics

import pytest

from modelops_loadgen.schedule import (
    ConstantSchedule,
    PoissonSchedule,
    expected_requests,
    make_schedule,
)


def offsets(schedule, n):
    return [schedule.next_offset() for _ in range(n)]


def test_constant_offsets_are_exact_multiples_of_the_period():
    got = offsets(ConstantSchedule(50.0), 6)
    assert got == [0.0, 0.02, 0.04, 0.06, 0.08, 0.1]


def test_constant_schedule_does_not_drift_over_a_long_run():
    s = ConstantSchedule(3.0)
    last = offsets(s, 3_000_001)[-1]
    assert last == pytest.approx(1_000_000.0, abs=1e-6)


def test_constant_low_rate_like_the_seed():
    assert offsets(ConstantSchedule(0.1), 3) == [0.0, 10.0, 20.0]


@pytest.mark.parametrize("rate", [0.0, -1.0, math.inf, math.nan])
def test_invalid_rates_are_rejected(rate):
    with pytest.raises(ValueError, match="rate must be a positive finite"):
        ConstantSchedule(rate)
    with pytest.raises(ValueError, match="rate must be a positive finite"):
        PoissonSchedule(rate, random.Random(1))


def test_poisson_gaps_have_the_right_mean_and_spread():
    rate = 200.0
    s = PoissonSchedule(rate, random.Random(7))
    got = offsets(s, 20_001)
    assert got[0] == 0.0
    gaps = [b - a for a, b in itertools.pairwise(got)]
    assert all(g >= 0 for g in gaps)
    mean = statistics.fmean(gaps)
    # Exponential gaps: mean 1/rate and coefficient of variation 1 (constant would be 0).
    assert mean == pytest.approx(1 / rate, rel=0.03)
    assert statistics.pstdev(gaps) / mean == pytest.approx(1.0, rel=0.05)
    # Memorylessness check: P(gap > mean) = e^-1.
    share = sum(g > 1 / rate for g in gaps) / len(gaps)
    assert share == pytest.approx(math.exp(-1), abs=0.015)


def test_poisson_counts_per_window_are_poisson_distributed():
    rate = 50.0
    s = PoissonSchedule(rate, random.Random(3))
    got = offsets(s, 100_000)
    windows = [0] * int(got[-1])
    for t in got:
        if int(t) < len(windows):
            windows[int(t)] += 1
    # A Poisson count has variance equal to its mean.
    assert statistics.fmean(windows) == pytest.approx(rate, rel=0.02)
    assert statistics.pvariance(windows) == pytest.approx(rate, rel=0.15)


def test_poisson_is_reproducible_with_a_seed():
    a = offsets(PoissonSchedule(10, random.Random(42)), 50)
    b = offsets(PoissonSchedule(10, random.Random(42)), 50)
    assert a == b


def test_make_schedule_picks_the_arrival_kind():
    assert isinstance(make_schedule("constant", 5, random.Random(0)), ConstantSchedule)
    assert isinstance(make_schedule("poisson", 5, random.Random(0)), PoissonSchedule)


@pytest.mark.parametrize(
    ("rate", "duration", "n"),
    [(50, 5, 250), (1, 1, 1), (0.1, 60, 6), (3, 1.0, 3), (3, 1.01, 4), (10, 0, 0)],
)
def test_expected_requests_counts_slots_before_the_end(rate, duration, n):
    assert expected_requests(rate, duration) == n
    s = ConstantSchedule(rate)
    assert sum(1 for t in offsets(s, n + 5) if t < duration - 1e-12) == n
