"""Local mode: the operator's reconcile logic driven with processes instead of Kubernetes.

The supervisor keeps a small stand-in for what the API server would hold (the custom resource
with its status, trainer Jobs and their pods, artifact ConfigMaps, the server and load-generator
Deployments with their status) and on every pass calls the SAME pure functions the operator
calls: :func:`modelops.reconcile.harvest_needed`, :func:`modelops.harvest.read_outcome` and
:func:`modelops.reconcile.plan`. It then carries the plan out with processes:

- a trainer Job → the Job's trainer command as a process (its result file is the termination
  message, its stdout the pod log);
- an artifact ConfigMap → the files a server pod would mount, under the state directory;
- the server Deployment → model-server processes on free loopback ports, rolled like a
  Deployment with maxSurge 1 / maxUnavailable 0 (a new replica must be ready before an old one
  is drained; drained replicas leave the load generator's target list before they stop);
- the load-generator Deployment → one load-generator process reading that target list;
- Prometheus (optional) scrapes every process through file-based discovery.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
import json
import logging
import os
import shutil
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from modelops_contract.artifact import METADATA_FILE, file_sha256, model_file
from modelops_contract.clock import now_rfc3339

from .. import render
from ..harvest import Failed, NeedsLog, Succeeded, read_outcome
from ..reconcile import Event, Observed, Plan, harvest_needed, plan
from ..settings import Settings
from .processes import ManagedProcess, free_port, http_ok

log = logging.getLogger("modelops.local")

NAMESPACE = "local"
TERMINATION_MESSAGE_LIMIT = 4096  # what the kubelet keeps of a termination message
DRAIN_SECONDS = 2.5  # > the load generator's targets-file poll interval (1 s)
READY_TIMEOUT_SECONDS = 60.0
RESTART_BACKOFF_SECONDS = 5.0


def _executable(name: str) -> str:
    """A console script of this installation (the venv's bin dir first)."""
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return str(beside)
    found = shutil.which(name)
    if found is None:
        raise FileNotFoundError(f"{name} is not installed; run `make install`")
    return found


def _env_of(manifest: dict[str, Any]) -> dict[str, str]:
    container = manifest["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: str(e.get("value", "")) for e in container.get("env") or []}


@dataclass
class Replica:
    """One model-server process of the server 'Deployment'."""

    version: str
    template: str  # fingerprint of the pod template it was started from
    process: ManagedProcess
    port: int
    ready: bool = False
    draining_since: float | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@dataclass
class TrainerRun:
    version: str
    process: ManagedProcess
    result_file: Path
    log_file: Path


@dataclass
class LocalPaths:
    root: Path  # <state dir>/<name>

    @property
    def status(self) -> Path:
        return self.root / "status.json"

    @property
    def models(self) -> Path:
        return self.root / "models"

    @property
    def jobs(self) -> Path:
        return self.root / "jobs"

    @property
    def run(self) -> Path:
        return self.root / "run"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def targets(self) -> Path:
        return self.run / "targets.json"

    @property
    def scrape_dir(self) -> Path:
        return self.run / "file_sd"


def _write_json_atomic(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    tmp.replace(path)


@dataclass
class LocalModelDeployment:
    """The local stand-in for one ModelDeployment and its children."""

    name: str
    spec: dict[str, Any]
    paths: LocalPaths
    settings: Settings
    on_event: Callable[[Event], None]
    on_status: Callable[[dict[str, Any]], None]
    generation: int = 1
    status: dict[str, Any] = field(default_factory=dict)
    created: str = field(default_factory=now_rfc3339)
    trainers: dict[str, TrainerRun] = field(default_factory=dict)
    jobs: dict[str, dict[str, Any]] = field(default_factory=dict)
    replicas: list[Replica] = field(default_factory=list)
    server: dict[str, Any] | None = None  # last applied Deployment (+ synthesised status)
    server_generation: int = 0
    service: dict[str, Any] | None = None
    loadgen: dict[str, Any] | None = None
    loadgen_process: ManagedProcess | None = None
    loadgen_metrics_port: int = 0
    _replica_seq: int = 0
    _loadgen_exited_at: float | None = None
    _last_crash: float = 0.0

    # -- the custom resource ----------------------------------------------------------------

    def cr(self) -> dict[str, Any]:
        return {
            "apiVersion": "modelops.dev/v1alpha1",
            "kind": "ModelDeployment",
            "metadata": {
                "name": self.name,
                "namespace": NAMESPACE,
                "uid": f"local-{self.name}",
                "generation": self.generation,
                "creationTimestamp": self.created,
            },
            "spec": copy.deepcopy(self.spec),
            "status": copy.deepcopy(self.status),
        }

    def load_state(self) -> None:
        """Pick up status, trainer results and artifacts of earlier runs."""
        if self.paths.status.exists():
            saved = json.loads(self.paths.status.read_text())
            self.status = saved.get("status") or {}
            self.generation = int(saved.get("generation") or 1)
            self.created = saved.get("created") or self.created
            if saved.get("spec") != self.spec:
                self.generation += 1
        if self.paths.jobs.is_dir():
            for job_dir in sorted(self.paths.jobs.iterdir()):
                result = job_dir / "result.json"
                if result.exists():
                    exit_code = int((job_dir / "exit-code").read_text() or 1)
                    self.jobs[job_dir.name] = self._finished_job(job_dir.name, exit_code)

    def save_state(self) -> None:
        _write_json_atomic(
            self.paths.status,
            {
                "apiVersion": "modelops.dev/v1alpha1",
                "kind": "ModelDeployment",
                "name": self.name,
                "created": self.created,
                "generation": self.generation,
                "spec": self.spec,
                "status": self.status,
            },
        )

    def update_spec(self, spec: dict[str, Any]) -> bool:
        if spec == self.spec:
            return False
        self.spec = spec
        self.generation += 1
        return True

    # -- observing ------------------------------------------------------------------------

    def _finished_job(self, version: str, exit_code: int) -> dict[str, Any]:
        kind = "Complete" if exit_code == 0 else "Failed"
        return {
            "metadata": {"name": render.job_name(self.name, version)},
            "status": {"conditions": [{"type": kind, "status": "True", "reason": kind}]},
        }

    def _job_pod(self, version: str) -> dict[str, Any]:
        job_dir = self.paths.jobs / version
        try:
            message = (job_dir / "result.json").read_text()[:TERMINATION_MESSAGE_LIMIT]
        except OSError:
            message = ""
        exit_code = int((job_dir / "exit-code").read_text() or 1)
        return {
            "metadata": {
                "name": f"{render.job_name(self.name, version)}-local",
                "creationTimestamp": "",
            },
            "status": {
                "containerStatuses": [
                    {
                        "name": "trainer",
                        "state": {"terminated": {"exitCode": exit_code, "message": message}},
                    }
                ]
            },
        }

    def _artifacts(self) -> dict[str, dict[str, Any]]:
        """The artifact 'ConfigMaps': rebuilt from the stored files with the same renderer."""
        out: dict[str, dict[str, Any]] = {}
        if not self.paths.models.is_dir():
            return out
        cr = self.cr()
        for directory in sorted(self.paths.models.iterdir()):
            meta_path = directory / METADATA_FILE
            if not meta_path.is_file():
                continue
            metadata = json.loads(meta_path.read_text())
            model = (directory / model_file(metadata)).read_bytes()
            out[directory.name] = render.artifact_configmap(cr, directory.name, metadata, model)
        return out

    def _server_observed(self) -> dict[str, Any] | None:
        if self.server is None:
            return None
        wanted = self.server["spec"]["template"]["metadata"]["labels"][render.LABEL_VERSION]
        template = _fingerprint(self.server)
        live = [r for r in self.replicas if r.draining_since is None]
        updated = [r for r in live if r.template == template]
        ready = [r for r in live if r.ready]
        desired = int(self.server["spec"]["replicas"])
        available = len(ready) >= desired
        observed = copy.deepcopy(self.server)
        observed["metadata"]["generation"] = self.server_generation
        observed["status"] = {
            "observedGeneration": self.server_generation,
            "replicas": len(live),
            "updatedReplicas": len([r for r in updated if r.version == wanted]),
            "readyReplicas": len(ready),
            "availableReplicas": len(ready),
            "conditions": [
                {
                    "type": "Available",
                    "status": "True" if available else "False",
                    "reason": "MinimumReplicasAvailable"
                    if available
                    else "MinimumReplicasUnavailable",
                    "message": f"{len(ready)}/{desired} replicas ready",
                }
            ],
        }
        return observed

    def observe(self) -> Observed:
        return Observed(
            jobs={v: copy.deepcopy(j) for v, j in self.jobs.items()}
            | {v: {"metadata": {}, "status": {}} for v in self.trainers},
            artifacts=self._artifacts(),
            server=self._server_observed(),
            service=self.service,
            loadgen=self.loadgen,
        )

    # -- one reconcile pass ---------------------------------------------------------------

    async def reconcile(self) -> Plan:
        await self._poll_trainers()
        await self._converge_servers()
        await self._check_loadgen()
        observed = self.observe()
        cr = self.cr()
        outcomes: dict[str, Succeeded | Failed] = {}
        for version in harvest_needed(cr, observed):
            pods = [self._job_pod(version)]
            outcome = read_outcome(version, observed.jobs[version], pods)
            if isinstance(outcome, NeedsLog):
                log_text = (self.paths.jobs / version / "log").read_text(errors="replace")
                outcome = read_outcome(version, observed.jobs[version], pods, log_text)
            if isinstance(outcome, Succeeded | Failed):
                outcomes[version] = outcome
        result = plan(cr, observed, outcomes, self.settings, now_rfc3339())
        for manifest in result.create:
            await self._create(manifest)
        for manifest in result.apply:
            await self._apply(manifest)
        for ref in result.delete:
            await self._delete(ref.kind, ref.name)
        for event in result.events:
            self.on_event(event)
        if result.status_changed:
            self.status = result.status
            self.save_state()
            self.on_status(self.cr())
        return result

    # -- carrying out the plan ------------------------------------------------------------

    async def _create(self, manifest: dict[str, Any]) -> None:
        kind = manifest["kind"]
        version = manifest["metadata"]["labels"].get(render.LABEL_VERSION, "")
        if kind == "Job":
            await self._start_trainer(version, manifest)
        elif kind == "ConfigMap":
            self._store_artifact(version, manifest)
        else:  # pragma: no cover - plan() creates only these two kinds
            raise ValueError(f"local mode cannot create a {kind}")

    async def _start_trainer(self, version: str, job: dict[str, Any]) -> None:
        container = job["spec"]["template"]["spec"]["containers"][0]
        if any(v.get("configMap") for v in job["spec"]["template"]["spec"]["volumes"]):
            raise ValueError(
                "spec.training.dataset.configMap needs a cluster; in local mode use "
                "dataset.url (a file:// path is not supported either) or the built-in iris"
            )
        job_dir = self.paths.jobs / version
        shutil.rmtree(job_dir, ignore_errors=True)
        job_dir.mkdir(parents=True)
        args = list(container["args"])
        # Paths inside the pod → paths under the state directory.
        args[args.index("--output-dir") + 1] = str(job_dir / "work")
        args[args.index("--result-file") + 1] = str(job_dir / "result.json")
        process = ManagedProcess(
            name=f"trainer {version}",
            argv=[_executable(container["command"][0]), *args],
            log_path=job_dir / "log",
            env={"PYTHONUNBUFFERED": "1"},
        )
        await process.start()
        self.trainers[version] = TrainerRun(
            version, process, job_dir / "result.json", job_dir / "log"
        )

    async def _poll_trainers(self) -> None:
        for version, run in list(self.trainers.items()):
            if run.process.running:
                continue
            code = await run.process.stop()
            job_dir = self.paths.jobs / version
            if not run.result_file.exists():
                run.result_file.write_text("")
            (job_dir / "exit-code").write_text(str(code if code is not None else 1))
            shutil.rmtree(job_dir / "work", ignore_errors=True)  # the artifact goes via the CM
            self.jobs[version] = self._finished_job(version, code or 0)
            del self.trainers[version]

    def _store_artifact(self, version: str, configmap: dict[str, Any]) -> None:
        """Write the ConfigMap's files where a server 'pod' of that version mounts them."""
        target = self.paths.models / version
        if target.exists():
            return
        staging = self.paths.models / f".{version}.tmp"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        for key, text in (configmap.get("data") or {}).items():
            (staging / key).write_text(text)
        for key, blob in (configmap.get("binaryData") or {}).items():
            (staging / key).write_bytes(base64.b64decode(blob))
        recorded = configmap["metadata"]["annotations"][render.ANNOTATION_SHA256]
        metadata = json.loads((staging / METADATA_FILE).read_text())
        if file_sha256(staging / model_file(metadata)) != recorded:
            shutil.rmtree(staging)
            raise ValueError(f"artifact of {version} does not match its recorded sha256")
        staging.rename(target)

    async def _apply(self, manifest: dict[str, Any]) -> None:
        kind, name = manifest["kind"], manifest["metadata"]["name"]
        if kind == "Service":
            self.service = copy.deepcopy(manifest)
        elif kind == "Deployment" and name == render.server_name(self.name):
            if (
                self.server is None
                or _fingerprint(self.server) != _fingerprint(manifest)
                or (self.server["spec"]["replicas"] != manifest["spec"]["replicas"])
            ):
                self.server_generation += 1
            self.server = copy.deepcopy(manifest)
            await self._converge_servers()
        elif kind == "Deployment" and name == render.loadgen_name(self.name):
            self.loadgen = copy.deepcopy(manifest)
            await self._restart_loadgen()
        # ServiceMonitor/PodMonitor never appear: local mode has no prometheus-operator.

    async def _delete(self, kind: str, name: str) -> None:
        if kind == "Deployment" and name == render.loadgen_name(self.name):
            self.loadgen = None
            await self._stop_loadgen()
        elif kind == "Job":
            version = next((v for v in self.jobs if render.job_name(self.name, v) == name), None)
            if version is not None:
                self.jobs.pop(version, None)
                shutil.rmtree(self.paths.jobs / version, ignore_errors=True)
        elif kind == "ConfigMap":
            for version in list(self._artifacts()):
                if render.artifact_name(self.name, version) == name:
                    shutil.rmtree(self.paths.models / version, ignore_errors=True)

    # -- the server 'Deployment controller' -------------------------------------------------

    async def _converge_servers(self) -> None:
        """One step towards the desired replicas, like a RollingUpdate with maxSurge 1."""
        now = time.monotonic()
        for replica in list(self.replicas):
            if replica.draining_since is not None:
                if now - replica.draining_since >= DRAIN_SECONDS:
                    await replica.process.stop()
                    self.replicas.remove(replica)
                continue
            if not replica.process.running:
                self.replicas.remove(replica)
                await replica.process.stop()
                self._last_crash = now
                self.on_event(
                    Event(
                        "Warning",
                        "ServerExited",
                        f"model server {replica.version} on port {replica.port} exited: "
                        f"{replica.process.last_log_line() or 'no output'}",
                    )
                )
                continue
            if not replica.ready:
                replica.ready = await asyncio.to_thread(http_ok, f"{replica.url}/readyz")
                if not replica.ready and now - replica.process.started_at > READY_TIMEOUT_SECONDS:
                    self.on_event(
                        Event("Warning", "ServerNotReady", f"{replica.url} not ready; restarting")
                    )
                    await replica.process.stop()
                    self.replicas.remove(replica)
        if self.server is not None:
            desired = int(self.server["spec"]["replicas"])
            template = _fingerprint(self.server)
            live = [r for r in self.replicas if r.draining_since is None]
            updated = [r for r in live if r.template == template]
            old = [r for r in live if r.template != template]
            crashed_recently = now - self._last_crash < RESTART_BACKOFF_SECONDS
            # maxSurge 1: at most desired + 1 replicas exist; the first rollout starts all
            # at once, a version change one at a time.
            while len(updated) < desired and len(live) < desired + 1 and not crashed_recently:
                replica = await self._start_replica(template)
                updated.append(replica)
                live.append(replica)
            # Old replicas go first, then updated ones beyond `desired`; unready ones before
            # ready ones. maxUnavailable 0: a ready replica goes only while `desired` others
            # stay ready.
            ready_count = len([r for r in live if r.ready])
            surplus = sorted(old, key=lambda r: r.ready) + sorted(
                updated[desired:] if len(updated) > desired else [], key=lambda r: r.ready
            )
            for replica in surplus:
                if replica.ready:
                    if ready_count - 1 < desired:
                        continue
                    ready_count -= 1
                replica.draining_since = now
        elif self.replicas:
            for replica in self.replicas:
                if replica.draining_since is None:
                    replica.draining_since = now
        self._write_targets()

    async def _start_replica(self, template: str) -> Replica:
        assert self.server is not None
        env = _env_of(self.server)
        version = self.server["spec"]["template"]["metadata"]["labels"][render.LABEL_VERSION]
        port = free_port()
        self._replica_seq += 1
        env.update(
            {
                "MODELOPS_SERVER_ARTIFACT_DIR": str(self.paths.models / version),
                "MODELOPS_SERVER_HOST": "127.0.0.1",
                "MODELOPS_SERVER_PORT": str(port),
                "HOME": os.environ.get("HOME", "/tmp"),
            }
        )
        process = ManagedProcess(
            name=f"server {version} #{self._replica_seq}",
            argv=[_executable("modelops-server")],
            log_path=self.paths.logs / f"server-{version}-{self._replica_seq}.log",
            env=env,
            ready_url=f"http://127.0.0.1:{port}/readyz",
            port=port,
        )
        await process.start()
        replica = Replica(version, template, process, port)
        self.replicas.append(replica)
        return replica

    def serving_urls(self) -> list[str]:
        return [r.url for r in self.replicas if r.ready and r.draining_since is None]

    def _write_targets(self) -> None:
        urls = self.serving_urls()
        current = None
        with contextlib.suppress(OSError, json.JSONDecodeError):
            current = json.loads(self.paths.targets.read_text())
        if current != urls:
            _write_json_atomic(self.paths.targets, urls)
        self._write_scrape_targets()

    def _write_scrape_targets(self) -> None:
        groups = [
            {
                "targets": [f"127.0.0.1:{r.port}"],
                "labels": {
                    "modeldeployment": self.name,
                    "namespace": NAMESPACE,
                    "component": "server",
                    "version": r.version,
                    "pod": f"{self.name}-server-{r.port}",
                },
            }
            for r in self.replicas
            if r.process.running
        ]
        if self.loadgen_process is not None and self.loadgen_process.running:
            groups.append(
                {
                    "targets": [f"127.0.0.1:{self.loadgen_metrics_port}"],
                    "labels": {
                        "modeldeployment": self.name,
                        "namespace": NAMESPACE,
                        "component": "loadgen",
                        "pod": f"{self.name}-loadgen",
                    },
                }
            )
        path = self.paths.scrape_dir / f"{self.name}.json"
        current = None
        with contextlib.suppress(OSError, json.JSONDecodeError):
            current = json.loads(path.read_text())
        if current != groups:
            _write_json_atomic(path, groups)

    # -- the load generator ---------------------------------------------------------------

    async def _restart_loadgen(self) -> None:
        await self._stop_loadgen()
        # Like a Service without endpoints, nothing is worth sending before a server is ready.
        if self.loadgen is None or not self.serving_urls():
            return
        env = _env_of(self.loadgen)
        # The Service name → the list of ready replicas the supervisor keeps current.
        for key in ("API_HOST", "API_PORT"):
            env.pop(key, None)
        if not self.loadgen_metrics_port:
            self.loadgen_metrics_port = free_port()
        env.update(
            {
                "MODELOPS_LOADGEN_TARGETS_FILE": str(self.paths.targets),
                "MODELOPS_LOADGEN_METRICS_PORT": str(self.loadgen_metrics_port),
                "MODELOPS_LOADGEN_METRICS_HOST": "127.0.0.1",
                "HOME": os.environ.get("HOME", "/tmp"),
            }
        )
        if not self.paths.targets.exists():
            _write_json_atomic(self.paths.targets, [])
        self.loadgen_process = ManagedProcess(
            name="loadgen",
            argv=[_executable("modelops-loadgen")],
            log_path=self.paths.logs / "loadgen.log",
            env=env,
        )
        await self.loadgen_process.start()

    async def _check_loadgen(self) -> None:
        """A load generator that exited is reported and started again (after a back-off)."""
        process = self.loadgen_process
        if process is None:
            if self.loadgen is not None and self.serving_urls():
                await self._restart_loadgen()
            return
        if process.running:
            return
        if self._loadgen_exited_at is None:
            self._loadgen_exited_at = time.monotonic()
            code = process.process.returncode if process.process else None
            self.on_event(
                Event(
                    "Warning",
                    "LoadgenExited",
                    f"load generator exited with code {code}: "
                    f"{process.last_log_line() or 'no output'} (log: {process.log_path})",
                )
            )
        elif time.monotonic() - self._loadgen_exited_at >= RESTART_BACKOFF_SECONDS:
            self._loadgen_exited_at = None
            await self._restart_loadgen()

    def load_summary(self) -> str | None:
        """One line from the load generator's own metrics (None when none runs)."""
        process = self.loadgen_process
        if process is None or not process.running:
            return None
        url = f"http://127.0.0.1:{self.loadgen_metrics_port}/metrics"
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

    async def _stop_loadgen(self) -> None:
        if self.loadgen_process is not None:
            await self.loadgen_process.stop()
            self.loadgen_process = None

    async def shutdown(self) -> None:
        """Stop everything: load first (so it sees no errors), then servers and trainers."""
        await self._stop_loadgen()
        await asyncio.gather(*(r.process.stop() for r in self.replicas))
        self.replicas.clear()
        await asyncio.gather(*(t.process.stop() for t in self.trainers.values()))
        self.trainers.clear()
        with contextlib.suppress(OSError):
            self.paths.targets.unlink()
        with contextlib.suppress(OSError):
            (self.paths.scrape_dir / f"{self.name}.json").unlink()


def _fingerprint(deployment: dict[str, Any]) -> str:
    return json.dumps(deployment["spec"]["template"], sort_keys=True)
