"""Operator at scale: 200 ModelDeployments against a real kube-apiserver + controller-manager.

Reports p50/p95 time from create to trainer Job, operator CPU per reconcile pass, operator RSS,
and the API writes during a quiet resync (goal 0). Baseline, measured in the same run: the
round trip of one POST of a Job by this script (the floor any create→Job latency sits on).
Goals (issue 6): p50 ≤ 200 ms, RSS ≤ 150 MiB at 200 resources, 0 writes on a quiet resync.

Run: .venv/bin/python bench/bench_operator.py [--count N]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

from modelops_testenv.controlplane import ControlPlane

ROOT = Path(__file__).resolve().parents[1]
NS = "bench"
RESYNC = 20
SA = "system:serviceaccount:modelops-system:modelops-operator"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def metrics(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        name, _, value = line.rpartition(" ")
        out[name] = float(value)
    return out


def writes(m: dict[str, float]) -> float:
    return sum(
        v
        for k, v in m.items()
        if k.startswith("modelops_api_requests_total")
        and re.search(r'verb="(POST|PUT|PATCH|DELETE)"', k)
    )


def reconciles(m: dict[str, float]) -> float:
    return sum(v for k, v in m.items() if k.startswith("modelops_reconcile_total{"))


VERBS = ("GET", "POST", "PATCH")


def api_mean(m: dict[str, float], verb: str) -> float:
    labels = f'{{verb="{verb}"}}'
    total = m.get(f"modelops_api_request_duration_seconds_sum{labels}", 0)
    return total / max(m.get(f"modelops_api_request_duration_seconds_count{labels}", 1), 1) * 1000


def pass_mean(m: dict[str, float]) -> float:
    key = "modelops_reconcile_duration_seconds_{}"
    return m.get(key.format("sum"), 0) / max(m.get(key.format("count"), 1), 1) * 1000


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=200)
    args = parser.parse_args(argv)
    with ControlPlane() as plane:
        plane.kubectl("apply", "-k", str(ROOT / "config" / "crd"))
        plane.kubectl(
            "wait", "--for=condition=Established", "--timeout=60s",
            "crd/modeldeployments.modelops.dev",
        )  # fmt: skip
        plane.kubectl("create", "namespace", "modelops-system")
        plane.kubectl("apply", "-k", str(ROOT / "config" / "rbac"))
        plane.kubectl("create", "namespace", NS)
        kubeconfig = plane.user_kubeconfig(SA, ["system:serviceaccounts"])

        # Baseline: one Job POST round trip, as admin, 20 times.
        job = {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"generateName": "baseline-", "namespace": NS},
            "spec": {
                "template": {
                    "spec": {
                        "restartPolicy": "Never",
                        "containers": [{"name": "c", "image": "x"}],
                    }
                }
            },
        }
        base = []
        for _ in range(20):
            t = time.perf_counter()
            status, _ = plane.request("POST", f"/apis/batch/v1/namespaces/{NS}/jobs", job)
            base.append(time.perf_counter() - t)
            assert status == 201, status
        plane.request("DELETE", f"/apis/batch/v1/namespaces/{NS}/jobs")

        port = free_port()
        env = {
            **os.environ,
            "MODELOPS_STANDALONE": "true",
            "MODELOPS_METRICS_PORT": str(port),
            "MODELOPS_HEALTH_PORT": str(free_port()),
            "MODELOPS_RESYNC_SECONDS": str(RESYNC),
            "MODELOPS_LOG_LEVEL": "WARNING",
        }
        log = (plane.workdir / "operator.log").open("wb")
        proc = subprocess.Popen(
            [sys.executable, "-m", "modelops.operator", "--kubeconfig", str(kubeconfig)],
            env=env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                try:
                    metrics(port)
                    break
                except OSError:
                    time.sleep(0.2)
            time.sleep(2)  # kopf's watches established
            rss_idle = rss_mib(proc.pid)

            seen: dict[str, float] = {}
            stop = threading.Event()

            def poll_jobs() -> None:
                while not stop.is_set():
                    _, body = plane.request("GET", f"/apis/batch/v1/namespaces/{NS}/jobs")
                    now = time.perf_counter()
                    for item in (body or {}).get("items", []):
                        seen.setdefault(item["metadata"]["labels"]["modelops.dev/name"], now)
                    time.sleep(0.02)

            poller = threading.Thread(target=poll_jobs, daemon=True)
            poller.start()
            cpu0 = cpu_seconds(proc.pid)
            rec0 = reconciles(metrics(port))
            created: dict[str, float] = {}
            for i in range(args.count):
                name = f"md{i:03d}"
                body = {
                    "apiVersion": "modelops.dev/v1alpha1",
                    "kind": "ModelDeployment",
                    "metadata": {"name": name, "namespace": NS},
                    "spec": {"modelVersion": "v1"},
                }
                created[name] = time.perf_counter()
                status, resp = plane.request(
                    "POST", f"/apis/modelops.dev/v1alpha1/namespaces/{NS}/modeldeployments", body
                )
                assert status == 201, resp
                time.sleep(0.01)
            deadline = time.monotonic() + 120
            while len(seen) < args.count and time.monotonic() < deadline:
                time.sleep(0.1)
            stop.set()
            poller.join(timeout=5)
            latencies = [seen[n] - created[n] for n in created if n in seen]
            # Let the burst settle (status writes, events), then measure a quiet resync.
            last, stable_since = -1.0, time.monotonic()
            while time.monotonic() - stable_since < 5 and time.monotonic() < deadline + 60:
                current = writes(metrics(port))
                if current != last:
                    last, stable_since = current, time.monotonic()
                time.sleep(0.5)
            cpu1 = cpu_seconds(proc.pid)
            m1 = metrics(port)
            passes = reconciles(m1) - rec0
            rss_busy = rss_mib(proc.pid)
            writes_before, rec_before = writes(m1), reconciles(m1)
            time.sleep(RESYNC * 1.5)
            m2 = metrics(port)
            quiet_writes = writes(m2) - writes_before
            quiet_passes = reconciles(m2) - rec_before
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
            log.close()

    base_p50 = statistics.median(base)
    p50, p95 = statistics.median(latencies), pct(latencies, 0.95)
    rows = [
        ("ModelDeployments created", f"{args.count}", ""),
        ("trainer Jobs seen", f"{len(latencies)}", ""),
        ("create → Job p50", f"{p50 * 1000:.0f} ms", f"{p50 / base_p50:.1f}x a Job POST"),
        ("create → Job p95", f"{p95 * 1000:.0f} ms", f"{p95 / base_p50:.1f}x a Job POST"),
        ("baseline: Job POST p50", f"{base_p50 * 1000:.1f} ms", "1.0x"),
        ("reconcile passes (burst)", f"{passes:.0f}", f"{passes / args.count:.1f} per resource"),
        ("reconcile pass mean", f"{pass_mean(m1):.0f} ms", "incl. waiting for a thread"),
        *[(f"API {verb} mean", f"{api_mean(m1, verb):.1f} ms", "") for verb in VERBS],
        ("operator CPU per pass", f"{(cpu1 - cpu0) / max(passes, 1) * 1000:.1f} ms", ""),
        ("operator RSS idle → 200 CRs", f"{rss_idle:.0f} → {rss_busy:.0f} MiB", ""),
        (f"quiet resync ({RESYNC * 1.5:.0f} s)", f"{quiet_passes:.0f} passes", ""),
        ("API writes during quiet resync", f"{quiet_writes:.0f}", "goal 0"),
    ]
    width = max(len(r[0]) for r in rows)
    print(f"{'measure':<{width}}  {'value':>16}  note")
    for label, value, note in rows:
        print(f"{label:<{width}}  {value:>16}  {note}")
    print(json.dumps({"p50_ms": round(p50 * 1000, 1), "p95_ms": round(p95 * 1000, 1),
                      "rss_mib": round(rss_busy, 1), "quiet_writes": quiet_writes}))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
