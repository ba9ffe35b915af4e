"""The generator as a user runs it: `modelops-loadgen` processes against loopback servers."""

import json
import signal
import subprocess
import sys
import time
import urllib.request

import pytest

pytestmark = pytest.mark.integration


def test_rate_is_accurate_at_50_per_second_for_5_seconds(fake_servers, tmp_path, lg):
    seen = tmp_path / "seen.txt"
    port, _ = fake_servers.start(count_file=seen)
    code, s, err = lg.run_loadgen(
        "--target",
        f"http://127.0.0.1:{port}",
        "--rate",
        "50",
        "--duration",
        "5",
        # Lag on a loaded 2-core machine reaches tens of ms; the rate part of the verdict stays.
        "--lag-limit",
        "0.5",
    )
    assert code == 0, err
    assert s["sent"] == 250
    assert s["outcomes"] == {"ok": 250}
    assert abs(s["achieved_rate"] - 50) <= 1.5  # ±3 %
    # What the server saw: 250 requests spread over ~5 s at ~50/s.
    stamps = [float(line.split()[0]) for line in seen.read_text().splitlines()]
    assert len(stamps) == 250
    span = stamps[-1] - stamps[0]
    assert abs(249 / span - 50) <= 1.5
    # Every one-second window got its share (not a burst at the start).
    per_second = [
        sum(1 for t in stamps if stamps[0] + k <= t < stamps[0] + k + 1) for k in range(4)
    ]
    assert all(45 <= n <= 55 for n in per_second), per_second
    assert s["behind"] is False


def test_poisson_arrivals_keep_the_mean_rate(fake_servers, lg):
    port, _ = fake_servers.start()
    code, s, err = lg.run_loadgen(
        "--target", f"http://127.0.0.1:{port}", "--rate", "200", "--arrival", "poisson",
        "--duration", "3", "--seed", "1",
    )  # fmt: skip
    assert code == 0, err
    # 600 expected; a Poisson count has sd ~24, so ±15 % is > 3 sd.
    assert 510 <= s["sent"] <= 690
    assert s["achieved_ratio"] == 1.0


def test_errors_are_counted_by_outcome_and_code(fake_servers, lg):
    port, _ = fake_servers.start(behaviour="error500")
    code, s, err = lg.run_loadgen(
        "--target", f"http://127.0.0.1:{port}", "--rate", "100", "--requests", "100"
    )
    assert code == 0, err
    assert s["sent"] == 100
    assert s["outcomes"] == {"http_error": 100}
    assert s["status_codes"] == {"500": 100}
    assert s["errors"] == 100
    assert '"outcome": "http_error"' in err  # logged, rate-limited
    assert err.count('"msg": "request failed"') == 1


def test_timeouts_and_refused_connections(fake_servers, lg):
    slow_port, _ = fake_servers.start(behaviour="slow", delay=2.0)
    dead_port = lg.free_port()
    code, s, err = lg.run_loadgen(
        "--target", f"http://127.0.0.1:{slow_port}", "--target", f"http://127.0.0.1:{dead_port}",
        "--rate", "20", "--requests", "20", "--timeout", "0.3",
    )  # fmt: skip
    assert code == 0, err
    assert s["outcomes"] == {"connect_error": 10, "timeout": 10}
    assert s["latency_seconds"]["p50"] >= 0.3  # timeouts count in the tail, at least TIMEOUT


def test_all_three_endpoints_with_online_accuracy(fake_servers, lg):
    port, _ = fake_servers.start()
    for endpoint, rows in (("predict", 1), ("batch", 8), ("infer", 3)):
        code, s, err = lg.run_loadgen(
            "--target", f"http://127.0.0.1:{port}", "--rate", "100", "--requests", "100",
            "--endpoint", endpoint, "--payload", "iris", "--batch-size", str(rows), "--seed", "4",
        )  # fmt: skip
        assert code == 0, err
        assert s["outcomes"] == {"ok": 100}, (endpoint, s)
        assert s["predictions_checked"] == 100 * rows
        # The fake server's rule is right on 143 of the 150 Iris rows.
        assert 0.85 < s["online_accuracy"] < 1.0


def test_round_robin_over_targets(fake_servers, tmp_path, lg):
    a_file, b_file = tmp_path / "a", tmp_path / "b"
    a, _ = fake_servers.start(count_file=a_file)
    b, _ = fake_servers.start(count_file=b_file)
    code, _, err = lg.run_loadgen(
        "--target", f"http://127.0.0.1:{a}", "--target", f"http://127.0.0.1:{b}",
        "--rate", "200", "--requests", "100",
    )  # fmt: skip
    assert code == 0, err
    assert lg.count_lines(a_file) == 50
    assert lg.count_lines(b_file) == 50


def test_a_target_that_goes_away_and_comes_back(fake_servers, tmp_path, lg):
    port = lg.free_port()
    first, second = tmp_path / "first", tmp_path / "second"
    _, server = fake_servers.start(port=port, count_file=first)
    gen = lg.start_loadgen(
        "--target", f"http://127.0.0.1:{port}", "--rate", "50", "--duration", "6", "--json",
        "--timeout", "1",
    )  # fmt: skip
    try:
        time.sleep(1.5)
        lg.stop_process(server)
        time.sleep(1.5)
        fake_servers.start(port=port, count_file=second)
        out, err = gen.communicate(timeout=30)
    finally:
        lg.stop_process(gen)
    assert gen.returncode == 0, err
    s = json.loads(out)
    assert s["sent"] == 300
    outcomes = s["outcomes"]
    # Up ~1.5 s, down ~1.5 s, up again for the rest of the 6 s: ~200 answered on a quiet
    # machine; a loaded one stretches the generator's and the second server's start-up (a
    # fresh-clone run answered 149).
    assert outcomes["ok"] >= 100, outcomes
    down = outcomes.get("connect_error", 0) + outcomes.get("disconnected", 0)
    assert down >= 30, outcomes  # ~1.5 s down at 50/s
    assert set(outcomes) <= {"ok", "connect_error", "disconnected", "timeout"}
    assert lg.count_lines(second) >= 50  # recovered: the new server got the later requests
    assert s["achieved_ratio"] == 1.0


def test_sigterm_prints_the_final_summary_and_exits_0(fake_servers, lg):
    port, _ = fake_servers.start()
    metrics_port = lg.free_port()
    env = lg.loadgen_env(
        API_HOST="127.0.0.1",
        API_PORT=str(port),
        MODELOPS_LOADGEN_RATE="40",
        MODELOPS_LOADGEN_PAYLOAD="iris",
        MODELOPS_LOADGEN_METRICS_PORT=str(metrics_port),
        MODELOPS_LOADGEN_METRICS_HOST="127.0.0.1",
        MODELOPS_LOADGEN_LAG_LIMIT="0.5",  # generous for a loaded machine, as above
    )
    gen = lg.start_loadgen(env=env)  # continuous, configured like the seed: env only
    try:
        lg.wait_port(metrics_port)
        time.sleep(2.5)
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as r:
            metrics = r.read().decode()
        gen.send_signal(signal.SIGTERM)
        out, err = gen.communicate(timeout=20)
    finally:
        lg.stop_process(gen)
    assert gen.returncode == 0, err
    assert "modelops-loadgen: open loop, constant arrivals at 40 req/s" in out
    assert "outcomes       ok" in out
    assert "keeping up     yes" in out
    assert "predictions correct" in out
    assert '"signal": "SIGTERM"' in err
    # Metrics were live while it ran.
    values = {
        line.split(" ")[0]: float(line.split(" ")[1])
        for line in metrics.splitlines()
        if line and not line.startswith("#")
    }
    assert values['loadgen_requests_total{code="200",outcome="ok"}'] >= 60
    assert values["loadgen_target_rate"] == 40.0
    assert 30 <= values["loadgen_achieved_rate"] <= 50
    assert values["loadgen_behind"] == 0.0
    assert values["loadgen_predictions_checked_total"] >= 60
    assert 0.85 < values["loadgen_online_accuracy"] <= 1.0
    assert values['loadgen_request_latency_seconds_bucket{le="+Inf"}'] >= 60
    assert "loadgen_schedule_lag_seconds_bucket" in metrics
    assert "loadgen_in_flight" in values
    assert values["loadgen_requests_resent_total"] == 0  # uvicorn keeps its connections


def test_a_kept_alive_connection_closed_unanswered_is_resent_not_failed(fake_servers, lg):
    # The server drops the second request of every connection without a byte of an answer:
    # each such request is sent once more on a new connection, answered, and counted resent.
    port, _ = fake_servers.start(behaviour="drop-kept")
    code, s, err = lg.run_loadgen(
        "--target", f"http://127.0.0.1:{port}", "--rate", "20", "--requests", "40",
        "--payload", "iris", "--lag-limit", "0.5",
    )  # fmt: skip
    assert code == 0, err
    assert s["outcomes"] == {"ok": 40}
    assert s["errors"] == 0
    assert 30 <= s["resent"] <= 39  # the first request (and any on a new connection) was not
    assert s["predictions_checked"] == 40


def test_targets_file_is_reread_while_running(fake_servers, tmp_path, lg):
    a_file, b_file = tmp_path / "a", tmp_path / "b"
    a, _ = fake_servers.start(count_file=a_file)
    b, _ = fake_servers.start(count_file=b_file)
    targets = tmp_path / "targets.json"

    def write(urls):
        tmp = tmp_path / "targets.tmp"
        tmp.write_text(json.dumps(urls))
        tmp.replace(targets)  # atomic, as a supervisor should do it

    write([f"http://127.0.0.1:{a}"])
    gen = lg.start_loadgen(
        "--targets-file", str(targets), "--rate", "50", "--duration", "5", "--json"
    )
    try:
        deadline = time.monotonic() + 15
        while lg.count_lines(a_file) < 60 and time.monotonic() < deadline:
            time.sleep(0.05)
        write([f"http://127.0.0.1:{b}"])
        out, err = gen.communicate(timeout=30)
    finally:
        lg.stop_process(gen)
    assert gen.returncode == 0, err
    s = json.loads(out)
    assert s["outcomes"] == {"ok": 250}
    assert s["targets"] == [f"http://127.0.0.1:{b}"]
    assert 60 <= lg.count_lines(a_file) <= 130  # switched within ~1 s (poll interval)
    assert lg.count_lines(b_file) >= 100
    assert lg.count_lines(a_file) + lg.count_lines(b_file) == 250
    assert '"msg": "targets changed"' in err


def test_strict_run_exits_1_when_it_cannot_keep_up(fake_servers, lg):
    port, _ = fake_servers.start(behaviour="slow", delay=0.2)
    code, s, err = lg.run_loadgen(
        "--target", f"http://127.0.0.1:{port}", "--rate", "50", "--duration", "2",
        "--concurrency", "2", "--max-lateness", "0.5", "--strict",
    )  # fmt: skip
    # Two slots in flight at 0.2 s each serve 10/s, not 50/s.
    assert code == 1, err
    assert s["behind"] is True
    assert s["skipped"] > 0
    assert s["achieved_ratio"] < 0.99
    assert any("schedule lag" in r for r in s["behind_reasons"])
    # Honest latency: measured from the intended time, so it includes the wait for a slot.
    assert s["latency_seconds"]["p99"] > 0.4


def test_the_same_overload_without_strict_exits_0(fake_servers, lg):
    port, _ = fake_servers.start(behaviour="slow", delay=0.2)
    code, s, _ = lg.run_loadgen(
        "--target", f"http://127.0.0.1:{port}", "--rate", "30", "--requests", "10",
        "--concurrency", "1",
    )  # fmt: skip
    assert code == 0
    assert s["behind"] is True


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--rate", "0"], "rate"),
        (["--target", "localhost:8000"], "not a base URL"),
        (["--targets-file", "/nonexistent/t.json"], "does not exist"),
        (["--endpoint", "predict", "--target", "http://127.0.0.1:1", "--rate", "-3"], "rate"),
    ],
)
def test_bad_settings_exit_2_with_a_message(args, message, lg):
    proc = subprocess.run(
        [sys.executable, "-m", "modelops_loadgen", "--duration", "1", *args],
        capture_output=True,
        text=True,
        timeout=30,
        env=lg.loadgen_env(),
        check=False,
    )
    assert proc.returncode == 2
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr


def test_busy_metrics_port_is_a_clear_error(fake_servers, lg):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        busy = s.getsockname()[1]
        proc = subprocess.run(
            [str(lg.loadgen), "--duration", "1",
             "--metrics-port", str(busy), "--metrics-host", "127.0.0.1"],
            capture_output=True, text=True, timeout=30, env=lg.loadgen_env(), check=False,
        )  # fmt: skip
    assert proc.returncode == 2
    assert "cannot serve metrics" in proc.stderr
    assert "--metrics-port" in proc.stderr


def test_a_seed_like_low_rate_needs_no_waiting_for_the_next_slot(fake_servers, lg):
    port, _ = fake_servers.start()
    started = time.monotonic()
    code, s, err = lg.run_loadgen(
        "--target", f"http://127.0.0.1:{port}", "--rate", "0.1", "--requests", "1"
    )
    assert code == 0, err
    assert time.monotonic() - started < 8  # the first request leaves at once
    assert s["sent"] == 1
    assert s["outcomes"] == {"ok": 1}
    assert s["elapsed_seconds"] == 10.0  # one slot of a 0.1/s schedule
    assert s["achieved_rate"] == 0.1
