import math
import random

import pytest

from modelops_loadgen.stats import (
    LATENCY_BUCKETS,
    Histogram,
    RunStats,
    percentile_from_counts,
    window_percentile,
)


def exact_percentile(values, q):
    """Nearest-rank percentile, the definition the histogram implements."""
    s = sorted(values)
    rank = max(1, math.ceil(q * len(s)))
    return s[rank - 1]


@pytest.mark.parametrize("q", [0.5, 0.9, 0.99, 0.999])
def test_percentiles_are_within_one_percent_of_exact(q):
    rng = random.Random(11)
    values = [rng.lognormvariate(math.log(0.002), 1.0) for _ in range(50_000)]
    h = Histogram(LATENCY_BUCKETS)
    for v in values:
        h.observe(v)
    assert h.percentile(q) == pytest.approx(exact_percentile(values, q), rel=0.01)


def test_max_and_min_are_exact_and_p100_is_the_max():
    h = Histogram(LATENCY_BUCKETS)
    for v in (0.0031, 0.5, 0.000123):
        h.observe(v)
    assert h.max == 0.5
    assert h.min == 0.000123
    assert h.percentile(1.0) == 0.5
    assert h.count == 3
    assert h.sum == pytest.approx(0.503223)


def test_empty_histogram_has_no_percentile():
    h = Histogram(LATENCY_BUCKETS)
    assert h.percentile(0.99) is None


def test_negative_values_count_as_zero():
    h = Histogram(LATENCY_BUCKETS)
    h.observe(-0.001)
    assert h.min == 0.0
    assert h.percentile(0.5) == 0.0


def test_tiny_and_huge_values_stay_in_range():
    h = Histogram(LATENCY_BUCKETS)
    h.observe(1e-9)
    h.observe(1e6)
    assert h.percentile(0.5) == pytest.approx(1e-9, abs=1e-6)
    assert h.percentile(1.0) == 1e6


def test_prometheus_buckets_are_cumulative_with_le_semantics():
    h = Histogram((0.001, 0.01, 0.1))
    for v in (0.0005, 0.001, 0.005, 0.05, 0.5, 5):
        h.observe(v)
    assert h.cumulative_buckets() == [(0.001, 2), (0.01, 3), (0.1, 4), (math.inf, 6)]


def test_quantile_argument_is_checked():
    with pytest.raises(ValueError, match="quantile"):
        percentile_from_counts([1, 2], 0)
    with pytest.raises(ValueError, match="quantile"):
        percentile_from_counts([1, 2], 1.5)


def test_window_percentile_sees_only_the_new_observations():
    h = Histogram(LATENCY_BUCKETS)
    for _ in range(1000):
        h.observe(0.1)
    before = h.snapshot()
    for _ in range(10):
        h.observe(0.001)
    assert window_percentile(h.snapshot(), before, 0.99) == pytest.approx(0.001, rel=0.01)
    assert h.percentile(0.99) == pytest.approx(0.1, rel=0.01)


def test_run_stats_aggregates_outcomes_codes_and_errors():
    st = RunStats()
    for _ in range(3):
        st.record("ok", "200")
    st.record("http_error", "500")
    st.record("http_error", "503")
    st.record("timeout")
    st.record_not_sent("skipped")
    st.record_not_sent("no_target")
    assert st.by_outcome() == {
        "http_error": 2,
        "no_target": 1,
        "ok": 3,
        "skipped": 1,
        "timeout": 1,
    }
    assert st.by_code() == {"200": 3, "500": 1, "503": 1}
    assert st.completed == 6
    assert st.errors == 3
    assert st.not_sent == 2


def test_online_accuracy():
    st = RunStats()
    assert st.online_accuracy is None
    st.checked, st.correct = 8, 6
    assert st.online_accuracy == 0.75
