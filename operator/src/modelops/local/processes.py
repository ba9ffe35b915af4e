"""Child processes of local mode: started in their own process group, stopped for sure.

Every child gets PR_SET_PDEATHSIG so that even a SIGKILLed supervisor leaves no orphan, and
`stop()` sends SIGTERM to the whole group, then SIGKILL after a grace period.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import errno
import logging
import os
import signal
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

log = logging.getLogger("modelops.local")

_PR_SET_PDEATHSIG = 1


class PortBusyError(RuntimeError):
    """A port asked for is taken; the message says which and what to do."""


def _die_with_parent() -> None:  # runs in the child between fork and exec
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):  # not Linux: process groups still cover normal exits
        pass


def free_port(host: str = "127.0.0.1") -> int:
    """A port that is free now (the kernel picks it); the caller binds it soon after."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def check_port_free(port: int, what: str, flag: str, host: str = "127.0.0.1") -> None:
    """Fail with a clear message if something listens on host:port.

    It binds the way the real listener will (SO_REUSEADDR, as Prometheus, uvicorn and most
    servers do), so a TIME-WAIT socket left by a previous run does not count as "in use",
    while a live listener still does.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise PortBusyError(
                    f"port {port} for {what} is already in use on {host}; stop whatever "
                    f"listens there or pick another port with {flag}"
                ) from None
            raise


@dataclass
class ManagedProcess:
    """One child process with its log file and (optionally) an HTTP readiness URL."""

    name: str
    argv: Sequence[str]
    log_path: Path
    env: Mapping[str, str] = field(default_factory=dict)
    ready_url: str | None = None
    port: int | None = None
    process: asyncio.subprocess.Process | None = None
    _log: IO[bytes] | None = None
    started_at: float = 0.0

    async def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("ab")
        self.started_at = time.monotonic()
        self.process = await asyncio.create_subprocess_exec(
            *self.argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=self._log,
            stderr=asyncio.subprocess.STDOUT,
            env={**os.environ, **self.env},
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        log.debug("started %s (pid %s): %s", self.name, self.process.pid, " ".join(self.argv))

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.returncode is None

    def last_log_line(self) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return lines[-1] if lines else ""

    async def wait_ready(self, timeout: float) -> None:
        """Poll `ready_url` until it answers 200; raise if the process dies or time runs out."""
        if self.ready_url is None:
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.running:
                code = self.process.returncode if self.process else None
                raise RuntimeError(
                    f"{self.name} exited with code {code} before it was ready: "
                    f"{self.last_log_line() or 'no output'} (log: {self.log_path})"
                )
            if await asyncio.to_thread(http_ok, self.ready_url):
                return
            await asyncio.sleep(0.1)
        raise RuntimeError(
            f"{self.name} was not ready within {timeout:.0f} s at {self.ready_url} "
            f"(log: {self.log_path})"
        )

    async def stop(self, grace: float = 10.0) -> int | None:
        """SIGTERM the process group, SIGKILL it after `grace` seconds; return the exit code."""
        process = self.process
        if process is None:
            return None
        if process.returncode is None:
            _signal_group(process.pid, signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), grace)
            except TimeoutError:
                log.warning("%s did not stop within %.0f s; killing it", self.name, grace)
                _signal_group(process.pid, signal.SIGKILL)
                await process.wait()
        else:
            # The leader is gone; make sure nothing it started lingers.
            _signal_group(process.pid, signal.SIGKILL)
        if self._log is not None:
            self._log.close()
            self._log = None
        return process.returncode


def _signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1.0) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError, ValueError):
        return False
