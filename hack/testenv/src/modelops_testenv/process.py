"""Child processes that cannot outlive their launcher.

Three layers, so that no etcd or kube-apiserver is left running whatever happens to the
Python process that started it:

1. each component runs in its own session/process group, and ``stop`` signals the whole group
   (SIGTERM, then SIGKILL after a grace period);
2. the owning :class:`~modelops_testenv.controlplane.ControlPlane` registers ``atexit`` and turns
   SIGTERM/SIGHUP into ``KeyboardInterrupt`` so ``finally`` blocks and fixture teardowns run;
3. on Linux the child asks the kernel (``prctl(PR_SET_PDEATHSIG, SIGKILL)``) to be killed when
   its parent dies, which covers even ``kill -9`` of the launcher.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

_PR_SET_PDEATHSIG = 1


def _pdeathsig_hook() -> Callable[[], None] | None:
    """A ``preexec_fn`` that makes the child die with its parent (Linux only)."""
    if not sys.platform.startswith("linux"):
        return None
    libc_name = ctypes.util.find_library("c") or "libc.so.6"
    try:
        libc = ctypes.CDLL(libc_name, use_errno=True)
    except OSError:
        return None
    prctl = libc.prctl
    parent = os.getpid()

    def hook() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        # The parent may have died between fork() and prctl(): then nobody would kill us.
        if os.getppid() != parent:
            os.kill(os.getpid(), signal.SIGKILL)

    return hook


class Component:
    """One running binary (etcd, kube-apiserver, ...) with its log file."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        log_path: Path,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        with log_path.open("ab") as log:
            self.popen = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # own process group; Ctrl-C reaches only the launcher
                preexec_fn=_pdeathsig_hook(),  # PR_SET_PDEATHSIG: die with the launcher
                close_fds=True,
                env=env,
            )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def running(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def rss_bytes(self) -> int:
        """Resident memory of the process (0 once it has exited)."""
        try:
            status = Path(f"/proc/{self.pid}/status").read_text()
        except OSError:
            return 0
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        return 0

    def _signal_group(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, sig)

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM the process group, SIGKILL it after ``grace`` seconds, reap the child."""
        if self.running():
            self._signal_group(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(timeout=grace)
        # Whatever is left in the group (the child or anything it spawned) goes now.
        self._signal_group(signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout=5)


def wait_until(
    predicate: Callable[[], bool],
    timeout: float,
    what: str,
    watch: Sequence[Component] = (),
    interval: float = 0.05,
) -> None:
    """Poll ``predicate`` until it is true; fail early if a watched component exits."""
    deadline = time.monotonic() + timeout
    while True:
        for comp in watch:
            if not comp.running():
                raise ComponentExited(comp)
        if predicate():
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


class ComponentExited(RuntimeError):
    """A component stopped while the control plane needed it."""

    def __init__(self, comp: Component) -> None:
        self.component = comp
        code = comp.popen.returncode
        super().__init__(
            f"{comp.name} exited with code {code}; last log lines ({comp.log_path}):\n"
            f"{comp.log_tail()}"
        )
