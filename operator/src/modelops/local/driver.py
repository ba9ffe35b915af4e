"""Local mode's driver: the one reconcile pass (:mod:`modelops.engine`) with processes and
files instead of the Kubernetes API.

:class:`LocalDriver` holds what the API server would (the custom resource with its status, the
trainer Jobs and their pods, artifact ConfigMaps, the server and load-generator Deployments)
and carries out the plan with processes:

- a trainer Job → the Job's trainer command as a process (:mod:`.trainers`);
- an artifact ConfigMap → the files a server pod would mount (:mod:`.artifacts`);
- the server Deployment → model-server processes, rolled like a Deployment (:mod:`.servers`);
- the load-generator Deployment → one load-generator process (:mod:`.loadgen`);
- Prometheus (optional) scrapes every process through file-based discovery.
"""

from __future__ import annotations

import contextlib
import copy
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from modelops_contract.clock import now_rfc3339

from .. import engine, names, prometheus
from ..core import render
from ..core.rollout import AnalysisRequest, QueryResults
from ..core.state import Event, Observed, Plan, Ref
from ..settings import Settings
from ..spec import ModelDeploymentSpec
from .artifacts import Artifacts
from .loadgen import LoadGenerator
from .processes import free_port
from .servers import ServerSet, template_component
from .service import LocalService
from .state import LocalPaths, write_json_atomic, write_json_if_changed
from .trainers import Trainers

NAMESPACE = "local"


@dataclass
class LocalDriver:
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
    service: dict[str, Any] | None = None
    loadgen_manifest: dict[str, Any] | None = None
    trainers: Trainers = field(init=False)
    artifacts: Artifacts = field(init=False)
    servers: ServerSet = field(init=False)
    # A Shadow or Canary rollout's candidate Deployment, and (Shadow) its Service.
    candidates: ServerSet = field(init=False)
    candidate_service: dict[str, Any] | None = None
    shadow_service: LocalService = field(init=False)
    loadgen: LoadGenerator = field(init=False)
    _server_applied: bool = False

    def __post_init__(self) -> None:
        self.trainers = Trainers(self.name, self.paths.jobs)
        self.artifacts = Artifacts(self.name, self.paths.models)
        self.servers = ServerSet(self.name, self.paths.models, self.paths.logs, self.on_event)
        self.candidates = ServerSet(
            self.name, self.paths.models, self.paths.logs, self.on_event, role="candidate"
        )
        self.shadow_service = LocalService(
            free_port(), lambda: [r.port for r in self.candidates.live() if r.ready]
        )
        self.servers.shadow_url = self.shadow_service.url
        self.loadgen = LoadGenerator(self.paths.targets, self.paths.logs, self.on_event)

    # -- the custom resource ----------------------------------------------------------------

    def cr(self) -> dict[str, Any]:
        return {
            "apiVersion": names.API_VERSION,
            "kind": names.KIND,
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
        self.trainers.load()

    def save_state(self) -> None:
        write_json_atomic(
            self.paths.status,
            {
                "apiVersion": names.API_VERSION,
                "kind": names.KIND,
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

    # -- engine.Driver ----------------------------------------------------------------------

    def read(self, namespace: str, name: str) -> tuple[Mapping[str, Any], Observed]:
        cr = self.cr()
        observed = Observed(
            jobs=self.trainers.jobs(),
            artifacts=self.artifacts.configmaps(cr),
            server=self.servers.observed(),
            service=self.service,
            loadgen=self.loadgen_manifest,
            candidate=self.candidates.observed(),
            candidate_service=self.candidate_service,
        )
        return cr, observed

    def trainer_pods(
        self, cr: Mapping[str, Any], version: str, job: Mapping[str, Any]
    ) -> list[dict[str, Any]]:
        return [self.trainers.pod(version)]

    def trainer_log(self, cr: Mapping[str, Any], version: str, pod: str) -> str:
        return self.trainers.log(version)

    def create(self, cr: Mapping[str, Any], manifest: Mapping[str, Any]) -> None:
        kind = manifest["kind"]
        version = manifest["metadata"]["labels"].get(names.LABEL_VERSION, "")
        if kind == "Job":
            self.trainers.create(version, manifest)
        elif kind == "ConfigMap":
            self.artifacts.store(version, manifest)
        else:  # pragma: no cover - plan() creates only these two kinds
            raise ValueError(f"local mode cannot create a {kind}")

    def apply(self, cr: Mapping[str, Any], manifest: Mapping[str, Any]) -> None:
        kind, name = manifest["kind"], manifest["metadata"]["name"]
        spec = ModelDeploymentSpec.from_dict(cr["spec"])
        if kind == "Service" and name == render.candidate_name(self.name):
            self.candidate_service = copy.deepcopy(dict(manifest))
        elif kind == "Service":
            self.service = copy.deepcopy(dict(manifest))
        elif kind == "Deployment" and name == render.candidate_name(self.name):
            self.candidates.apply(manifest, spec)
            self._server_applied = True
        elif kind == "Deployment" and name == render.server_name(self.name):
            self.servers.apply(manifest, spec)
            self._server_applied = True
        elif kind == "Deployment" and name == render.loadgen_name(self.name):
            self.loadgen_manifest = copy.deepcopy(dict(manifest))
            self.loadgen.apply(spec)
        # ServiceMonitor/PodMonitor never appear: local mode has no prometheus-operator.

    def delete(self, cr: Mapping[str, Any], ref: Ref) -> None:
        if ref.kind == "Deployment" and ref.name == render.loadgen_name(self.name):
            self.loadgen_manifest = None
            self.loadgen.delete()
        elif ref.kind == "Deployment" and ref.name == render.candidate_name(self.name):
            self.candidates.deployment = None  # its replicas drain at the next converge
            self._server_applied = True
        elif ref.kind == "Service" and ref.name == render.candidate_name(self.name):
            self.candidate_service = None
        elif ref.kind == "Job":
            self.trainers.delete(ref.name)
        elif ref.kind == "ConfigMap":
            self.artifacts.delete(ref.name)

    def save_status(self, cr: Mapping[str, Any], status: Mapping[str, Any]) -> None:
        self.status = dict(status)
        self.save_state()
        self.on_status(self.cr())

    def emit(self, cr: Mapping[str, Any], event: Event) -> None:
        self.on_event(event)

    def analyse(self, cr: Mapping[str, Any], request: AnalysisRequest) -> QueryResults:
        # The local Prometheus answers on loopback at once (or refuses at once).
        return prometheus.run(request, self.settings.prometheus_timeout_seconds)

    # -- one pass, with what a kubelet and the controllers do around it ----------------------

    async def reconcile(self) -> Plan:
        await self._settle()
        done = engine.reconcile(self, NAMESPACE, self.name)
        assert done is not None  # the local resource is never gone
        await self.trainers.start_pending()
        if self.candidate_service is not None:
            await self.shadow_service.start()
        if self._server_applied:
            self._server_applied = False
            await self.candidates.converge()
            await self.servers.converge()
            self._write_targets()
        await self.loadgen.converge(bool(self.serving_urls()))
        return done[1]

    async def _settle(self) -> None:
        await self.trainers.poll()
        await self.candidates.converge()
        await self.servers.converge()
        if self.candidate_service is None and not self.candidates.replicas:
            await self.shadow_service.stop()
        self._write_targets()
        await self.loadgen.converge(bool(self.serving_urls()))

    def serving_urls(self) -> list[str]:
        """Where clients' requests go (the Service's endpoints): the stable replicas, and a
        Canary candidate's (a Shadow candidate only gets copies)."""
        urls = self.servers.serving_urls()
        deployment = self.candidates.deployment
        if deployment is not None and template_component(deployment) == names.COMPONENT_SERVER:
            urls += self.candidates.serving_urls()
        return urls

    def load_summary(self) -> str | None:
        return self.loadgen.summary()

    def _write_targets(self) -> None:
        write_json_if_changed(self.paths.targets, self.serving_urls())
        write_json_if_changed(self.paths.scrape_dir / f"{self.name}.json", self._scrape_groups())

    def _scrape_groups(self) -> list[dict[str, Any]]:
        """File-based discovery with the labels a cluster's scrape config gives its targets."""
        groups = [
            self._scrape_group(
                r.port, names.COMPONENT_SERVER, f"{self.name}-server-{r.port}", r.version
            )
            for r in self.servers.replicas
            if r.process.running
        ]
        candidate = self.candidates.deployment
        component = template_component(candidate) if candidate else names.COMPONENT_SERVER
        groups += [
            self._scrape_group(r.port, component, f"{self.name}-candidate-{r.port}", r.version)
            for r in self.candidates.replicas
            if r.process.running
        ]
        if self.loadgen.running:
            groups.append(
                self._scrape_group(
                    self.loadgen.metrics_port, names.COMPONENT_LOADGEN, f"{self.name}-loadgen"
                )
            )
        return groups

    def _scrape_group(
        self, port: int, component: str, pod: str, version: str | None = None
    ) -> dict[str, Any]:
        labels = {names.METRIC_LABEL: self.name, "namespace": NAMESPACE, "component": component}
        if version is not None:
            labels["version"] = version
        labels["pod"] = pod
        return {"targets": [f"127.0.0.1:{port}"], "labels": labels}

    async def shutdown(self) -> None:
        """Stop everything: load first (so it sees no errors), then servers and trainers."""
        await self.loadgen.stop()
        await self.servers.stop()
        await self.candidates.stop()
        await self.shadow_service.stop()
        await self.trainers.stop()
        with contextlib.suppress(OSError):
            self.paths.targets.unlink()
        with contextlib.suppress(OSError):
            (self.paths.scrape_dir / f"{self.name}.json").unlink()
