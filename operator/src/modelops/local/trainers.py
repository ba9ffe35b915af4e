"""Trainer 'Jobs' of local mode: the Job's trainer command as a process.

Its result file stands for the container's termination message and its stdout for the pod log;
what the operator reads of a Job and its pod is built from them, in the same shape.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..core import render
from .processes import ManagedProcess
from .state import executable

TERMINATION_MESSAGE_LIMIT = 4096  # what the kubelet keeps of a termination message


@dataclass
class TrainerRun:
    version: str
    process: ManagedProcess
    started: bool = False


@dataclass
class Trainers:
    """Trainer processes (running or about to start) and finished Jobs, by model version."""

    name: str
    jobs_dir: Path
    running: dict[str, TrainerRun] = field(default_factory=dict)
    finished: dict[str, int] = field(default_factory=dict)  # exit code

    def load(self) -> None:
        """Finished Jobs of earlier runs."""
        if not self.jobs_dir.is_dir():
            return
        for job_dir in sorted(self.jobs_dir.iterdir()):
            if (job_dir / "result.json").exists():
                self.finished[job_dir.name] = int((job_dir / "exit-code").read_text() or 1)

    def jobs(self) -> dict[str, dict[str, Any]]:
        """The Jobs as the planner reads them: finished ones with their condition."""
        out = {v: self._finished_job(v, code) for v, code in self.finished.items()}
        return out | {v: {"metadata": {}, "status": {}} for v in self.running}

    def _finished_job(self, version: str, exit_code: int) -> dict[str, Any]:
        kind = "Complete" if exit_code == 0 else "Failed"
        return {
            "metadata": {"name": render.job_name(self.name, version)},
            "status": {"conditions": [{"type": kind, "status": "True", "reason": kind}]},
        }

    def pod(self, version: str) -> dict[str, Any]:
        """The finished trainer pod: exit code and termination message."""
        job_dir = self.jobs_dir / version
        try:
            message = (job_dir / "result.json").read_text()[:TERMINATION_MESSAGE_LIMIT]
        except OSError:
            message = ""
        exit_code = int((job_dir / "exit-code").read_text() or 1)
        terminated = {"exitCode": exit_code, "message": message}
        return {
            "metadata": {
                "name": f"{render.job_name(self.name, version)}-local",
                "creationTimestamp": "",
            },
            "status": {
                "containerStatuses": [{"name": "trainer", "state": {"terminated": terminated}}]
            },
        }

    def log(self, version: str) -> str:
        return (self.jobs_dir / version / "log").read_text(errors="replace")

    def create(self, version: str, job: Mapping[str, Any]) -> None:
        """Prepare the Job's process (started by :meth:`start_pending`)."""
        pod_spec = job["spec"]["template"]["spec"]
        if any(v.get("configMap") for v in pod_spec["volumes"]):
            raise ValueError(
                "spec.training.dataset.configMap needs a cluster; in local mode use "
                "dataset.url (a file:// path is not supported either) or the built-in iris"
            )
        container = pod_spec["containers"][0]
        job_dir = self.jobs_dir / version
        shutil.rmtree(job_dir, ignore_errors=True)
        job_dir.mkdir(parents=True)
        args = list(container["args"])
        # Paths inside the pod → paths under the state directory.
        args[args.index("--output-dir") + 1] = str(job_dir / "work")
        args[args.index("--result-file") + 1] = str(job_dir / "result.json")
        process = ManagedProcess(
            name=f"trainer {version}",
            argv=[executable(container["command"][0]), *args],
            log_path=job_dir / "log",
            env={"PYTHONUNBUFFERED": "1"},
        )
        self.running[version] = TrainerRun(version, process)

    async def start_pending(self) -> None:
        for run in self.running.values():
            if not run.started:
                run.started = True
                await run.process.start()

    async def poll(self) -> None:
        """Trainers that exited become finished Jobs."""
        for version, run in list(self.running.items()):
            if not run.started or run.process.running:
                continue
            code = await run.process.stop()
            job_dir = self.jobs_dir / version
            result = job_dir / "result.json"
            if not result.exists():
                result.write_text("")
            (job_dir / "exit-code").write_text(str(code if code is not None else 1))
            shutil.rmtree(job_dir / "work", ignore_errors=True)  # the artifact goes via the CM
            self.finished[version] = code or 0
            del self.running[version]

    def delete(self, job_name: str) -> None:
        version = next(
            (v for v in self.finished if render.job_name(self.name, v) == job_name), None
        )
        if version is not None:
            self.finished.pop(version, None)
            shutil.rmtree(self.jobs_dir / version, ignore_errors=True)

    async def stop(self) -> None:
        await asyncio.gather(*(run.process.stop() for run in self.running.values()))
        self.running.clear()
