"""Operator at scale: N ModelDeployments (200 by default; 1,000 with --count 1000) against a
real kube-apiserver + controller-manager.

Reports p50/p95 time from create to trainer Job (seen through a watch, so measuring does not
load the API server), operator CPU per reconcile pass, operator RSS, and a quiet resync: the
API writes during it (goal 0) and what one resync pass costs (API requests, CPU, duration),
which must not grow with N. Baseline, measured in the same run: the round trip of one POST of
a Job by this script (the floor any create→Job latency sits on).
Goals (issue 13): at 1,000 resources p50 ≤ 150 ms, RSS ≤ 200 MiB, 0 writes on a quiet resync.

Run: .venv/bin/python bench/bench_operator.py [--count N]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

from modelops_testenv import controlplane
from modelops_testenv.controlplane import ControlPlane, free_ports

ROOT = Path(__file__).resolve().parents[1]
NS = "bench"
RESYNC = 20
SA = "system:serviceaccount:modelops-system:modelops-operator"


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


def requests(m: dict[str, float]) -> float:
    return sum(v for k, v in m.items() if k.startswith("modelops_api_requests_total"))


def pass_seconds(m: dict[str, float]) -> float:
    return m.get("modelops_reconcile_duration_seconds_sum", 0.0)


def watch_jobs(plane: ControlPlane, seen: dict[str, float], stop: threading.Event) -> None:
    """Record when each ModelDeployment's trainer Job first appears (a watch: no polling)."""
    from kubernetes import client, config, watch

    api = client.BatchV1Api(config.new_client_from_config(str(plane.kubeconfig)))
    while not stop.is_set():
        stream = watch.Watch().stream(
            api.list_namespaced_job, NS, timeout_seconds=5, _preload_content=False
        )
        for event in stream:
            now = time.perf_counter()
            labels = event["raw_object"]["metadata"].get("labels") or {}
            if "modelops.dev/name" in labels:
                seen.setdefault(labels["modelops.dev/name"], now)
            if stop.is_set():
                break


VERBS = ("GET", "POST", "PATCH", "PUT", "DELETE")


def api_mean(m: dict[str, float], verb: str) -> float:
    labels = f'{{verb="{verb}"}}'
    total = m.get(f"modelops_api_request_duration_seconds_sum{labels}", 0)
    return total / max(m.get(f"modelops_api_request_duration_seconds_count{labels}", 1), 1) * 1000


def api_count(m: dict[str, float], verb: str) -> float:
    key = f'modelops_api_request_duration_seconds_count{{verb="{verb}"}}'
    return m.get(key, 0.0)


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


def wait_established(plane: ControlPlane, timeout: float = 60.0) -> None:
    """`kubectl wait` fails outright ("accessor error") when it reads the CRD before its first
    status: retry until the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            plane.kubectl(
                "wait", "--for=condition=Established", "--timeout=10s",
                "crd/modeldeployments.modelops.dev",
            )  # fmt: skip
            return
        except controlplane.KubectlError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=200, help="ModelDeployments (200)")
    parser.add_argument(
        "--operator-log", type=Path, default=None, help="keep the operator's log in this file"
    )
    parser.add_argument("--log-level", default="WARNING", help="the operator's (WARNING)")
    args = parser.parse_args(argv)
    # Every ModelDeployment gets a ClusterIP Service: the test control plane's /24 service
    # range (254 addresses) would run out past ~250 resources ("range is full").
    controlplane.SERVICE_CIDR = "10.96.0.0/16"
    with ControlPlane() as plane:
        plane.kubectl("apply", "-k", str(ROOT / "config" / "crd"))
        wait_established(plane)
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

        port = free_ports(1)[0]
        env = {
            **os.environ,
            "MODELOPS_STANDALONE": "true",
            "MODELOPS_METRICS_PORT": str(port),
            "MODELOPS_HEALTH_PORT": str(free_ports(1)[0]),
            "MODELOPS_RESYNC_SECONDS": str(RESYNC),
            "MODELOPS_LOG_LEVEL": args.log_level,
        }
        log = (args.operator_log or plane.workdir / "operator.log").open("wb")
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
            watcher = threading.Thread(target=watch_jobs, args=(plane, seen, stop), daemon=True)
            watcher.start()
            time.sleep(1)  # the watch is established
            cpu0 = cpu_seconds(proc.pid)
            rec0 = reconciles(metrics(port))
            created: dict[str, float] = {}
            for i in range(args.count):
                name = f"md{i:04d}"
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
            deadline = time.monotonic() + 120 + args.count * 0.1
            while len(seen) < args.count and time.monotonic() < deadline:
                time.sleep(0.1)
            stop.set()
            watcher.join(timeout=10)
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
            cpu_before = cpu_seconds(proc.pid)
            time.sleep(RESYNC * 1.5)
            m2 = metrics(port)
            quiet_writes = writes(m2) - writes_before
            quiet_passes = reconciles(m2) - rec_before
            per_pass = max(quiet_passes, 1)
            quiet_requests = (requests(m2) - requests(m1)) / per_pass
            quiet_cpu = (cpu_seconds(proc.pid) - cpu_before) / per_pass * 1000
            quiet_pass_ms = (pass_seconds(m2) - pass_seconds(m1)) / per_pass * 1000
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
        *[
            (
                f"API {verb} mean",
                f"{api_mean(m1, verb):.1f} ms",
                f"{api_count(m1, verb) / args.count:.1f} per resource",
            )
            for verb in VERBS
        ],
        ("operator CPU per pass", f"{(cpu1 - cpu0) / max(passes, 1) * 1000:.1f} ms", ""),
        (f"operator RSS idle → {args.count} CRs", f"{rss_idle:.0f} → {rss_busy:.0f} MiB", ""),
        (f"quiet resync ({RESYNC * 1.5:.0f} s)", f"{quiet_passes:.0f} passes", ""),
        ("API writes during quiet resync", f"{quiet_writes:.0f}", "goal 0"),
        ("quiet pass: API requests", f"{quiet_requests:.1f}", "per pass; flat in N"),
        ("quiet pass: operator CPU", f"{quiet_cpu:.1f} ms", "per pass; flat in N"),
        ("quiet pass: duration", f"{quiet_pass_ms:.0f} ms", "per pass"),
    ]
    width = max(len(r[0]) for r in rows)
    print(f"{'measure':<{width}}  {'value':>16}  note")
    for label, value, note in rows:
        print(f"{label:<{width}}  {value:>16}  {note}")
    summary = {
        "count": args.count,
        "p50_ms": round(p50 * 1000, 1),
        "p95_ms": round(p95 * 1000, 1),
        "rss_mib": round(rss_busy, 1),
        "quiet_writes": quiet_writes,
        "quiet_requests_per_pass": round(quiet_requests, 2),
        "quiet_cpu_ms_per_pass": round(quiet_cpu, 2),
    }
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
