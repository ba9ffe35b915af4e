"""The load-generator 'Deployment' of local mode: one process that reads the list of ready
replicas (the targets file) where a cluster's generator would send to the Service."""

from __future__ import annotations

import os
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from .. import names
from ..core import render
from ..core.state import Event
from ..spec import ModelDeploymentSpec
from .processes import ManagedProcess, free_port
from .servers import RESTART_BACKOFF_SECONDS
from .state import executable, write_json_atomic


@dataclass
class LoadGenerator:
    targets: Path  # the ready replicas' URLs, kept current by the supervisor
    logs_dir: Path
    on_event: Callable[[Event], None]
    spec: ModelDeploymentSpec | None = None  # set while the 'Deployment' exists
    process: ManagedProcess | None = None
    metrics_port: int = 0
    restart_wanted: bool = False
    _exited_at: float | None = None

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.running

    def apply(self, spec: ModelDeploymentSpec) -> None:
        self.spec = spec
        self.restart_wanted = True

    def delete(self) -> None:
        self.spec = None
        self.restart_wanted = True

    async def converge(self, serving: bool) -> None:
        """(Re)start after an apply, stop after a delete, restart after a crash (backed off)."""
        if self.restart_wanted:
            self.restart_wanted = False
            await self._restart(serving)
        elif self.process is None:
            if self.spec is not None and serving:
                await self._restart(serving)
        elif not self.process.running:
            self._exited(serving)
            if (
                self._exited_at is not None
                and time.monotonic() - self._exited_at >= RESTART_BACKOFF_SECONDS
            ):
                self._exited_at = None
                await self._restart(serving)

    def _exited(self, serving: bool) -> None:
        if self._exited_at is not None or self.process is None:
            return
        self._exited_at = time.monotonic()
        code = self.process.process.returncode if self.process.process else None
        self.on_event(
            Event(
                names.WARNING,
                names.EVENT_LOADGEN_EXITED,
                f"load generator exited with code {code}: "
                f"{self.process.last_log_line() or 'no output'} (log: {self.process.log_path})",
            )
        )

    async def _restart(self, serving: bool) -> None:
        await self.stop()
        # Like a Service without endpoints, nothing is worth sending before a server is ready.
        if self.spec is None or not serving:
            return
        if not self.metrics_port:
            self.metrics_port = free_port()
        env = render.loadgen_env(
            self.spec,
            self.metrics_port,
            targets_file=str(self.targets),
            metrics_host="127.0.0.1",
            home=os.environ.get("HOME", "/tmp"),
        )
        if not self.targets.exists():
            write_json_atomic(self.targets, [])
        self.process = ManagedProcess(
            name="loadgen",
            argv=[executable("modelops-loadgen")],
            log_path=self.logs_dir / "loadgen.log",
            env=env,
        )
        await self.process.start()

    async def stop(self) -> None:
        if self.process is not None:
            await self.process.stop()
            self.process = None

    def summary(self) -> str | None:
        """One line from the load generator's own metrics (None when none runs)."""
        if not self.running:
            return None
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                text = response.read().decode()
        except (OSError, ValueError):
            return None
        outcomes: dict[str, float] = {}
        gauges: dict[str, float] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == "loadgen_requests_total":
                    outcome = sample.labels.get("outcome", "")
                    outcomes[outcome] = outcomes.get(outcome, 0.0) + sample.value
                elif sample.name in ("loadgen_achieved_rate", "loadgen_target_rate"):
                    gauges[sample.name] = sample.value
        total = sum(outcomes.values())
        failed = total - outcomes.get("ok", 0.0)
        return (
            f"load generator: {total:.0f} requests, {failed:.0f} failed, "
            f"{gauges.get('loadgen_achieved_rate', 0.0):.2f}/s achieved of "
            f"{gauges.get('loadgen_target_rate', 0.0):.2f}/s"
        )
