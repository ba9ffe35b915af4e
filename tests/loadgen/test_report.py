import json

from modelops_loadgen.report import behind_reasons, build_summary, format_text
from modelops_loadgen.stats import RunStats


def test_on_schedule_is_not_behind():
    assert behind_reasons(sent=1000, skipped=0, lag_p99=0.001, backlog=0.0, lag_limit=0.025) == []


def test_skipping_more_than_one_percent_is_behind():
    reasons = behind_reasons(sent=980, skipped=20, lag_p99=0.001, backlog=0, lag_limit=0.025)
    assert len(reasons) == 1
    assert "980 of 1000" in reasons[0]
    assert behind_reasons(sent=991, skipped=9, lag_p99=0.001, backlog=0, lag_limit=0.025) == []


def test_lag_above_the_limit_is_behind():
    reasons = behind_reasons(sent=10, skipped=0, lag_p99=0.2, backlog=0, lag_limit=0.025)
    assert reasons == ["schedule lag p99 200.0 ms exceeds the limit 25.0 ms"]


def test_a_growing_backlog_is_behind():
    reasons = behind_reasons(sent=10, skipped=0, lag_p99=None, backlog=0.5, lag_limit=0.025)
    assert reasons == ["the next request is already 500 ms late"]


def _stats():
    st = RunStats()
    for i in range(100):
        st.sent += 1
        st.lag.observe(0.0001)
        st.latency.observe(0.001 * (i + 1))
        st.record("ok", "200")
    st.checked, st.correct = 100, 97
    return st


def _summary(st, **kw):
    args = dict(
        mode="open",
        arrival="constant",
        endpoint="predict",
        payload="iris",
        targets=["http://127.0.0.1:1"],
        target_rate=50.0,
        elapsed=2.0,
        backlog=0.0,
        lag_limit=0.025,
    )
    args.update(kw)
    return build_summary(st, **args)


def test_summary_numbers_and_json_are_consistent():
    s = _summary(_stats())
    d = s.to_dict()
    json.dumps(d)  # serialisable
    assert d["sent"] == 100
    assert d["achieved_rate"] == 50.0
    assert d["achieved_ratio"] == 1.0
    assert d["outcomes"] == {"ok": 100}
    assert d["status_codes"] == {"200": 100}
    assert d["online_accuracy"] == 0.97
    assert abs(d["latency_seconds"]["p50"] - 0.050) < 0.0006
    assert abs(d["latency_seconds"]["p99"] - 0.099) < 0.001
    assert d["latency_seconds"]["max"] == 0.1
    assert d["behind"] is False


def test_text_summary_says_when_it_is_behind():
    st = _stats()
    st.record_not_sent("skipped")
    st.record_not_sent("skipped")
    text = format_text(_summary(st, lag_limit=0.00001))
    assert "BEHIND" in text
    assert "schedule lag p99" in text
    assert "0.9700 (97/100 predictions correct)" in text


def test_closed_loop_summary_has_no_rate_verdict():
    s = _summary(_stats(), mode="closed")
    d = s.to_dict()
    assert d["target_rate"] is None
    assert d["achieved_ratio"] is None
    assert d["behind"] is False
    assert "closed loop" in format_text(s)


def test_uniform_payload_says_why_there_is_no_accuracy():
    st = RunStats()
    text = format_text(_summary(st, payload="uniform"))
    assert "uniform payload: no true labels" in text


def test_generator_cpu_is_reported_per_request():
    s = _summary(_stats(), cpu_seconds=0.5)
    assert s.to_dict()["cpu_seconds"] == 0.5
    assert "generator CPU  0.500 s (25% of one core, 5000 µs per request)" in format_text(s)
