"""Model server throughput and latency against baselines measured in the same run.

Closed loop: wrk, 1 thread, 32 connections, on core 1; every server is one process on core 0.
- baseline A: naive FastAPI + scikit-learn per request (bench/baseline_naive.py)
- baseline B: MLServer with its scikit-learn runtime on the same model.joblib, in its own venv
  (~/.cache/modelops/bench-venv, created on first run from the package index), asked for
  label and probabilities like ours answers
- floor: FastAPI answering a constant (bench/floor_app.py: the standard route, and the raw route
  class our server uses)
- ours: modelops-server on /predict and on OIP infer; with metrics off to price instrumentation
Open loop: modelops-loadgen at 50 % of our closed-loop maximum; p99 from the intended send time.
Start-up: seconds from process start to GET /readyz == 200.

Environment: BENCH_DURATION (seconds per wrk run, default 8), BENCH_SKIP_MLSERVER=1.
Results also go to bench/results/model_server.json.
"""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
BIN = Path(sys.executable).parent
DURATION = int(os.environ.get("BENCH_DURATION", "8"))
CONNECTIONS = 32
SERVER_CPU = "0"
LOAD_CPU = "1"
BENCH_VENV = Path.home() / ".cache" / "modelops" / "bench-venv"
MLSERVER_VERSION = "1.7.1"
GOALS = {
    "vs_A": 5.0,
    "vs_B": 5.0,
    "vs_floor": 0.5,
    "open_p99_ms": 10.0,
    "ready_s": 3.0,
    "instrumentation_cost": 0.05,
}


@dataclass
class Run:
    label: str
    rps: float
    p50_ms: float
    p99_ms: float
    non_2xx: int = 0
    errors: int = 0
    requests: int = 0
    cpu_us_per_request: float = float("nan")  # server CPU time / request: robust to contention
    extra: dict[str, object] = field(default_factory=dict)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return bool(response.status == 200)
    except OSError:
        return False


class Server:
    def __init__(
        self,
        label: str,
        cmd: list[str],
        ready_url: str,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.label = label
        self.log = tempfile.NamedTemporaryFile(  # noqa: SIM115 - lives as long as the server
            prefix="bench-server-", suffix=".log", delete=False
        )
        self.started = time.monotonic()
        self.process = subprocess.Popen(
            ["taskset", "-c", SERVER_CPU, *cmd],
            env={**os.environ, **(env or {})},
            cwd=cwd,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{label} exited: {Path(self.log.name).read_text()[-3000:]}")
            if http_ok(ready_url):
                self.ready_after = time.monotonic() - self.started
                return
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"{label} not ready in 120 s: {Path(self.log.name).read_text()[-3000:]}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()
        Path(self.log.name).unlink(missing_ok=True)


def tree_cpu_seconds(pid: int) -> float:
    """User+system CPU seconds of a process and its descendants (from /proc)."""
    tick = os.sysconf("SC_CLK_TCK")
    stats: dict[int, tuple[int, float]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            raw = (entry / "stat").read_text()
        except OSError:
            continue
        fields = raw[raw.rindex(")") + 2 :].split()
        stats[int(entry.name)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / tick)
    total, frontier = 0.0, [pid]
    while frontier:
        current = frontier.pop()
        if current in stats:
            total += stats[current][1]
        frontier.extend(child for child, (parent, _) in stats.items() if parent == current)
    return total


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s)", text.strip())
    if not match:
        raise ValueError(f"cannot parse wrk latency {text!r}")
    value, unit = float(match.group(1)), match.group(2)
    return value * {"us": 1e-3, "ms": 1.0, "s": 1e3}[unit]


def wrk(label: str, url: str, script: str, duration: int = DURATION, pid: int = 0) -> Run:
    cpu_before = tree_cpu_seconds(pid) if pid else 0.0
    out = subprocess.run(
        [
            "taskset",
            "-c",
            LOAD_CPU,
            "wrk",
            "-t1",
            f"-c{CONNECTIONS}",
            f"-d{duration}s",
            "--latency",
            "-s",
            str(HERE / script),
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=duration + 60,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = _ms(re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = re.search(r"Socket errors:.*", out)
    cpu = tree_cpu_seconds(pid) - cpu_before if pid else float("nan")
    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    run = Run(
        label,
        rps,
        p50,
        p99,
        int(non_2xx.group(1)) if non_2xx else 0,
        1 if errors else 0,
        requests,
        1e6 * cpu / max(requests, 1),
    )
    if run.non_2xx:
        raise RuntimeError(f"{label}: {run.non_2xx} non-2xx answers; the measurement is invalid")
    return run


def warm(url: str, script: str) -> None:
    wrk("warm-up", url, script, duration=2)


def uvicorn_cmd(app: str) -> list[str]:
    return [
        str(BIN / "python"),
        "-m",
        "uvicorn",
        app,
        "--host",
        "127.0.0.1",
        "--loop",
        "uvloop",
        "--http",
        "httptools",
        "--no-access-log",
        "--log-level",
        "warning",
        "--port",
    ]


def ensure_mlserver() -> Path:
    mlserver = BENCH_VENV / "bin" / "mlserver"
    if mlserver.exists():
        return mlserver
    import joblib
    import numpy
    import sklearn

    print(f"creating {BENCH_VENV} with MLServer {MLSERVER_VERSION} (first run only)…", flush=True)
    base_python = (
        Path(sys.base_prefix) / "bin" / f"python{sys.version_info.major}.{sys.version_info.minor}"
    )
    subprocess.run([str(base_python), "-m", "venv", str(BENCH_VENV)], check=True)
    subprocess.run(
        [
            str(BENCH_VENV / "bin" / "pip"),
            "install",
            "--quiet",
            "--disable-pip-version-check",
            f"mlserver=={MLSERVER_VERSION}",
            f"mlserver-sklearn=={MLSERVER_VERSION}",
            # the model must unpickle with the scikit-learn that trained it
            f"scikit-learn=={sklearn.__version__}",
            f"numpy=={numpy.__version__}",
            f"joblib=={joblib.__version__}",
        ],
        check=True,
        timeout=1200,
    )
    return mlserver


def mlserver_dir(artifact: Path, tmp: Path, port: int) -> Path:
    directory = tmp / "mlserver"
    directory.mkdir()
    (directory / "settings.json").write_text(
        json.dumps(
            {
                "debug": False,
                "host": "127.0.0.1",
                "http_port": port,
                "grpc_port": free_port(),
                "metrics_port": free_port(),
                # the default (worker pool) fails to start here: "There is no current event loop"
                "parallel_workers": 0,
            }
        )
    )
    (directory / "model-settings.json").write_text(
        json.dumps(
            {
                "name": "iris",
                "implementation": "mlserver_sklearn.SKLearnModel",
                "parameters": {"uri": str(artifact / "model.joblib"), "version": "v1"},
            }
        )
    )
    return directory


def loadgen_open(base_url: str, rate: float, duration: int) -> dict[str, object]:
    out = subprocess.run(
        [
            "taskset",
            "-c",
            LOAD_CPU,
            str(BIN / "modelops-loadgen"),
            "--target",
            base_url,
            "--rate",
            f"{rate:.0f}",
            "--duration",
            str(duration),
            "--json",
            "--metrics-port",
            "0",
            "--seed",
            "1",
            "--summary-interval",
            "0",
            "--log-level",
            "WARNING",
        ],
        capture_output=True,
        text=True,
        timeout=duration + 60,
        check=False,
    )
    if out.returncode not in (0, 1):
        raise RuntimeError(f"modelops-loadgen failed: {out.stderr[-2000:]}")
    summary: dict[str, object] = json.loads(out.stdout)
    return summary


def versions() -> dict[str, str]:
    import fastapi
    import numpy
    import pydantic
    import sklearn
    import uvicorn

    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    wrk_version = subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout.split()
    return {
        "cpu": f"{cpu} ({os.cpu_count()} cores; server on core {SERVER_CPU}, load on {LOAD_CPU})",
        "python": platform.python_version(),
        "fastapi": fastapi.__version__,
        "uvicorn": uvicorn.__version__,
        "pydantic": pydantic.VERSION,
        "scikit-learn": sklearn.__version__,
        "numpy": numpy.__version__,
        "mlserver": MLSERVER_VERSION,
        "wrk": wrk_version[1] if len(wrk_version) > 1 else "?",
    }


def main() -> None:
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed: run `make install` (hack/apt-packages.txt lists it)")
    info = versions()
    load_before = Path("/proc/loadavg").read_text().split()[:3]
    for key, value in info.items():
        print(f"{key:>13}: {value}")
    runs: dict[str, Run] = {}
    results: dict[str, object] = {"versions": info, "duration_s": DURATION}
    with tempfile.TemporaryDirectory(prefix="bench-model-server-") as tmp_name:
        tmp = Path(tmp_name)
        subprocess.run(
            [
                str(BIN / "modelops-trainer"),
                "train",
                "--version",
                "v1",
                "--output-dir",
                str(tmp / "models"),
            ],
            check=True,
            capture_output=True,
        )
        artifact = tmp / "models" / "v1"
        env_artifact = {"BENCH_ARTIFACT": str(artifact)}

        def start(label: str, cmd: list[str], ready: str, env=None, cwd=None) -> tuple[Server, int]:
            port = free_port()
            full = [part.replace("{port}", str(port)) for part in cmd]
            if full[-1] == "--port":
                full.append(str(port))
            return Server(label, full, f"http://127.0.0.1:{port}{ready}", env, cwd), port

        def measure(
            label: str,
            cmd: list[str],
            path: str,
            script: str,
            env=None,
            cwd=None,
            ready: str = "/readyz",
        ) -> None:
            server, port = start(label, cmd, ready, env, cwd)
            try:
                url = f"http://127.0.0.1:{port}{path}"
                warm(url, script)
                runs[label] = wrk(label, url, script, pid=server.process.pid)
                print(f"  {label:<34} {runs[label].rps:8.0f} req/s", flush=True)
            finally:
                server.stop()

        ours_cmd = [
            str(BIN / "modelops-server"),
            "--artifact-dir",
            str(artifact),
            "--host",
            "127.0.0.1",
            "--port",
        ]
        print("\nclosed loop (wrk):", flush=True)
        measure(
            "A: naive FastAPI + sklearn",
            uvicorn_cmd("baseline_naive:app"),
            "/predict",
            "predict.lua",
            env=env_artifact,
            cwd=HERE,
        )
        if os.environ.get("BENCH_SKIP_MLSERVER") != "1":
            mlserver = ensure_mlserver()
            port = free_port()
            directory = mlserver_dir(artifact, tmp, port)
            server = Server(
                "B",
                [str(mlserver), "start", str(directory)],
                f"http://127.0.0.1:{port}/v2/models/iris/ready",
                cwd=directory,
            )
            try:
                url = f"http://127.0.0.1:{port}/v2/models/iris/infer"
                warm(url, "infer.lua")
                runs["B: MLServer sklearn runtime"] = wrk(
                    "B", url, "infer.lua", pid=server.process.pid
                )
                print(
                    f"  {'B: MLServer sklearn runtime':<34} "
                    f"{runs['B: MLServer sklearn runtime'].rps:8.0f} req/s",
                    flush=True,
                )
            finally:
                server.stop()
        measure(
            "floor: FastAPI constant",
            uvicorn_cmd("floor_app:app"),
            "/predict",
            "predict.lua",
            cwd=HERE,
        )
        measure(
            "floor: FastAPI raw route constant",
            uvicorn_cmd("floor_app:raw_app"),
            "/predict",
            "predict.lua",
            cwd=HERE,
        )
        measure("ours: /predict", ours_cmd, "/predict", "predict.lua")
        measure("ours: OIP infer", ours_cmd, "/v2/models/iris/infer", "infer.lua")

        # Instrumentation cost: metrics on vs off, alternating rounds on the same core.
        print("\ninstrumentation (alternating rounds):", flush=True)
        on, on_port = start("ours metrics on", ours_cmd, "/readyz")
        off, off_port = start(
            "ours metrics off",
            ours_cmd,
            "/readyz",
            env={"MODELOPS_SERVER_METRICS_ENABLED": "false"},
        )
        try:
            rounds: dict[str, list[float]] = {"on": [], "off": [], "on_cpu": [], "off_cpu": []}
            for port in (on_port, off_port):
                warm(f"http://127.0.0.1:{port}/predict", "predict.lua")
            for _ in range(5):
                for key, port, pid in (
                    ("on", on_port, on.process.pid),
                    ("off", off_port, off.process.pid),
                ):
                    run = wrk(
                        key,
                        f"http://127.0.0.1:{port}/predict",
                        "predict.lua",
                        duration=max(3, DURATION // 2),
                        pid=pid,
                    )
                    rounds[key].append(round(run.rps))
                    rounds[f"{key}_cpu"].append(round(run.cpu_us_per_request, 1))
            med = {key: statistics.median(values) for key, values in rounds.items()}
            # Throughput on a shared core swings with other load; CPU time per request of the
            # server process does not, and for a CPU-bound server it is 1/throughput.
            cost = 1 - med["off_cpu"] / med["on_cpu"]
            cost_rps = 1 - med["on"] / med["off"]
            print(
                f"  req/s  on {rounds['on']}  off {rounds['off']}\n"
                f"  CPU µs/req  on {rounds['on_cpu']}  off {rounds['off_cpu']}\n"
                f"  cost: {cost:+.1%} of CPU per request, {cost_rps:+.1%} of req/s "
                "(medians of 5 alternating rounds)",
                flush=True,
            )
            results["instrumentation"] = {**rounds, "cost": cost, "cost_rps": cost_rps}

            # Open loop at half of our closed-loop maximum, latency from intended send time.
            target = 0.5 * runs["ours: /predict"].rps
            print(
                f"\nopen loop at {target:.0f} req/s for {DURATION * 2} s (modelops-loadgen):",
                flush=True,
            )
            summary = loadgen_open(f"http://127.0.0.1:{on_port}", target, DURATION * 2)
            results["open_loop"] = summary
        finally:
            on.stop()
            off.stop()

        # The library floor of start-up: the model cannot be unpickled before scikit-learn is
        # imported (scipy.stats included), whatever the server does.
        import_times = []
        for _ in range(3):
            started = time.monotonic()
            subprocess.run([str(BIN / "python"), "-c", "import sklearn.pipeline"], check=True)
            import_times.append(time.monotonic() - started)
        results["import_sklearn_s"] = import_times
        ready_times = []
        for _ in range(3):
            server, _port = start("ours (ready)", ours_cmd, "/readyz")
            ready_times.append(server.ready_after)
            server.stop()
        results["ready_s"] = ready_times

    results["loadavg"] = (
        f"{' '.join(load_before)} at start, "
        f"{' '.join(Path('/proc/loadavg').read_text().split()[:3])} at end (1/5/15 min)"
    )
    open_latency = _open_latency(results["open_loop"])
    results["runs"] = {k: vars(v) for k, v in runs.items()}
    report(runs, results, open_latency)
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    (out / "model_server.json").write_text(json.dumps(results, indent=2, default=str))


def _open_latency(summary: object) -> dict[str, float]:
    """p50/p99 (ms) and achieved rate from modelops-loadgen's JSON summary."""
    data = summary if isinstance(summary, dict) else {}
    latency = data.get("latency_seconds") or {}
    return {
        "p50": 1000 * float(latency.get("p50", float("nan"))),
        "p99": 1000 * float(latency.get("p99", float("nan"))),
        "rate": float(data.get("achieved_rate", float("nan"))),
        "errors": float(data.get("errors", 0)),
        "loadgen_behind": bool(data.get("behind")),
    }


def report(
    runs: dict[str, Run], results: dict[str, object], open_latency: dict[str, float]
) -> None:
    ours = runs["ours: /predict"]
    a = runs["A: naive FastAPI + sklearn"]
    b = runs.get("B: MLServer sklearn runtime")
    floor = runs["floor: FastAPI constant"]
    print(
        f"\n{'server (1 process, wrk -c32)':<36} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} "
        f"{'ours/this':>10} {'CPU µs/req':>11} {'ours/this':>10}"
    )
    for label, run in runs.items():
        print(
            f"{label:<36} {run.rps:8.0f} {run.p50_ms:8.2f} {run.p99_ms:8.2f} "
            f"{ours.rps / run.rps:9.2f}x {run.cpu_us_per_request:11.0f} "
            f"{run.cpu_us_per_request / ours.cpu_us_per_request:9.2f}x"
        )
    print(f"load average during the run: {results.get('loadavg')}")
    ready = results["ready_s"]
    cost = results["instrumentation"]["cost"]  # type: ignore[index]
    checks = [
        (
            f"throughput vs baseline A >= {GOALS['vs_A']}x",
            ours.rps / a.rps,
            ours.rps / a.rps >= GOALS["vs_A"],
        ),
        (
            f"throughput vs floor >= {GOALS['vs_floor']}x",
            ours.rps / floor.rps,
            ours.rps / floor.rps >= GOALS["vs_floor"],
        ),
        (
            f"open loop p99 at 50% max <= {GOALS['open_p99_ms']} ms",
            open_latency["p99"],
            open_latency["p99"] <= GOALS["open_p99_ms"],
        ),
        (
            f"/readyz after start <= {GOALS['ready_s']} s (median of 3)",
            statistics.median(ready),
            statistics.median(ready) <= GOALS["ready_s"],
        ),  # type: ignore[arg-type]
        (
            f"instrumentation cost < {GOALS['instrumentation_cost']:.0%} (CPU/request)",
            cost,
            cost < GOALS["instrumentation_cost"],
        ),  # type: ignore[operator]
    ]
    if b is not None:
        checks.insert(
            1,
            (
                f"throughput vs baseline B >= {GOALS['vs_B']}x",
                ours.rps / b.rps,
                ours.rps / b.rps >= GOALS["vs_B"],
            ),
        )
    if open_latency["loadgen_behind"]:
        reasons = results["open_loop"].get("behind_reasons")  # type: ignore[union-attr]
        print(
            f"\nWARNING: modelops-loadgen fell behind its schedule ({reasons}): the machine "
            "is too busy for this open-loop figure to describe the server."
        )
    imports = results["import_sklearn_s"]
    print(
        f"start-up floor: `python -c 'import sklearn.pipeline'` takes "
        f"{statistics.median(imports):.2f} s (median of 3)"  # type: ignore[arg-type]
    )
    print(
        f"\nopen loop: p50 {open_latency['p50']:.2f} ms, p99 {open_latency['p99']:.2f} ms at "
        f"{open_latency['rate']:.0f} req/s; ready after {', '.join(f'{t:.2f}' for t in ready)} s"
    )  # type: ignore[union-attr]
    print(f"\n{'goal':<50} {'measured':>10}  met")
    for text, measured, met in checks:
        print(f"{text:<50} {measured:10.3f}  {'yes' if met else 'NO'}")


if __name__ == "__main__":
    main()
