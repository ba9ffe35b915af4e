"""Helpers for the load-generator tests: free loopback ports, server and generator processes."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
VENV_BIN = Path(sys.executable).parent
LOADGEN = VENV_BIN / "modelops-loadgen"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(
    port: int, timeout: float = 15.0, proc: subprocess.Popen[bytes] | None = None
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before listening on {port}")
        with socket.socket() as s:
            s.settimeout(0.2)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


def stop_process(proc: subprocess.Popen[bytes], grace: float = 5.0) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


class FakeServers:
    """Starts tests/loadgen/fake_server.py processes; all are stopped at teardown."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(
        self,
        behaviour: str = "predict",
        port: int | None = None,
        delay: float = 0.0,
        count_file: Path | None = None,
    ) -> tuple[int, subprocess.Popen[bytes]]:
        port = port or free_port()
        cmd = [
            sys.executable,
            str(HERE / "fake_server.py"),
            "--port",
            str(port),
            "--behaviour",
            behaviour,
            "--delay",
            str(delay),
        ]
        if count_file is not None:
            cmd += ["--count-file", str(count_file)]
        proc = subprocess.Popen(cmd)
        self.procs.append(proc)
        wait_port(port, proc=proc)
        return port, proc

    def close(self) -> None:
        for p in self.procs:
            stop_process(p)


@pytest.fixture
def fake_servers(tmp_path: Path) -> Iterator[FakeServers]:
    servers = FakeServers(tmp_path)
    try:
        yield servers
    finally:
        servers.close()


def loadgen_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELOPS_LOADGEN_")}
    env.pop("API_HOST", None)
    env.pop("API_PORT", None)
    env["MODELOPS_LOADGEN_METRICS_PORT"] = "0"
    env.update(extra)
    return env


def run_loadgen(
    *args: str, timeout: float = 60.0, env: dict[str, str] | None = None
) -> tuple[int, dict[str, object], str]:
    """Run a bounded generator with --json; returns (exit code, summary, stderr)."""
    proc = subprocess.run(
        [str(LOADGEN), "--json", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env if env is not None else loadgen_env(),
        check=False,
    )
    summary = json.loads(proc.stdout) if proc.stdout.strip() else {}
    return proc.returncode, summary, proc.stderr


def start_loadgen(
    *args: str, env: dict[str, str] | None = None, stdout: int = subprocess.PIPE
) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [str(LOADGEN), *args],
        stdout=stdout,
        stderr=subprocess.PIPE,
        text=True,
        env=env if env is not None else loadgen_env(),
    )


def count_lines(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


class Helpers:
    """The module's helpers as a fixture (tests cannot import conftest in importlib mode)."""

    free_port = staticmethod(free_port)
    wait_port = staticmethod(wait_port)
    stop_process = staticmethod(stop_process)
    loadgen_env = staticmethod(loadgen_env)
    run_loadgen = staticmethod(run_loadgen)
    start_loadgen = staticmethod(start_loadgen)
    count_lines = staticmethod(count_lines)
    loadgen = LOADGEN


@pytest.fixture
def lg() -> type[Helpers]:
    return Helpers
