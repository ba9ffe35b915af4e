"""The server 'Deployment controller' of local mode: model-server processes on free loopback
ports, rolled like a Deployment with maxSurge 1 / maxUnavailable 0 (a new replica must be ready
before an old one is drained; drained replicas leave the load generator's target list before
they stop)."""

from __future__ import annotations

import asyncio
import copy
import json
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import names
from ..core import render
from ..core.drift import template_sha
from ..core.state import Event
from ..spec import ModelDeploymentSpec
from .processes import ManagedProcess, free_port, http_ok
from .state import executable

DRAIN_SECONDS = 2.5  # > the load generator's targets-file poll interval (1 s)
READY_TIMEOUT_SECONDS = 60.0
RESTART_BACKOFF_SECONDS = 5.0


def fingerprint(deployment: Mapping[str, Any]) -> str:
    return json.dumps(deployment["spec"]["template"], sort_keys=True)


def template_version(deployment: Mapping[str, Any]) -> str:
    return str(deployment["spec"]["template"]["metadata"]["labels"][names.LABEL_VERSION])


def template_component(deployment: Mapping[str, Any]) -> str:
    return str(deployment["spec"]["template"]["metadata"]["labels"][names.LABEL_COMPONENT])


def _asks_for_shadow(deployment: Mapping[str, Any]) -> bool:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    return any(e["name"] == "MODELOPS_SERVER_SHADOW_URL" for e in containers[0].get("env") or [])


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
class ServerSet:
    name: str
    models_dir: Path
    logs_dir: Path
    on_event: Callable[[Event], None]
    role: str = "server"  # "candidate": a Shadow or Canary rollout's Deployment
    # Where "the candidate Service" answers locally (the stable servers copy requests to it
    # when their Deployment asks for MODELOPS_SERVER_SHADOW_URL).
    shadow_url: str = ""
    deployment: dict[str, Any] | None = None  # last applied Deployment
    spec: ModelDeploymentSpec | None = None  # the spec it was rendered from
    generation: int = 0
    replicas: list[Replica] = field(default_factory=list)
    _seq: int = 0
    _last_crash: float = 0.0

    def apply(self, manifest: Mapping[str, Any], spec: ModelDeploymentSpec) -> None:
        old = self.deployment
        if (
            old is None
            or fingerprint(old) != fingerprint(manifest)
            or old["spec"]["replicas"] != manifest["spec"]["replicas"]
        ):
            self.generation += 1
        self.deployment = copy.deepcopy(dict(manifest))
        self.spec = spec

    def live(self) -> list[Replica]:
        return [r for r in self.replicas if r.draining_since is None]

    def serving_urls(self) -> list[str]:
        return [r.url for r in self.live() if r.ready]

    def observed(self) -> dict[str, Any] | None:
        """The Deployment with the status a Deployment controller would report."""
        if self.deployment is None:
            return None
        wanted, template = template_version(self.deployment), fingerprint(self.deployment)
        live = self.live()
        ready = [r for r in live if r.ready]
        desired = int(self.deployment["spec"]["replicas"])
        available = len(ready) >= desired
        observed = copy.deepcopy(self.deployment)
        observed["metadata"]["generation"] = self.generation
        observed["status"] = {
            "observedGeneration": self.generation,
            "replicas": len(live),
            "updatedReplicas": len(
                [r for r in live if r.template == template and r.version == wanted]
            ),
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

    async def converge(self) -> None:
        """One step towards the desired replicas, like a RollingUpdate with maxSurge 1."""
        now = time.monotonic()
        await self._check_replicas(now)
        if self.deployment is None:
            for replica in self.live():
                replica.draining_since = now
            return
        desired = int(self.deployment["spec"]["replicas"])
        template = fingerprint(self.deployment)
        live = self.live()
        updated = [r for r in live if r.template == template]
        old = [r for r in live if r.template != template]
        crashed_recently = now - self._last_crash < RESTART_BACKOFF_SECONDS
        # maxSurge 1: at most desired + 1 replicas exist; the first rollout starts all at
        # once, a version change one at a time.
        while len(updated) < desired and len(live) < desired + 1 and not crashed_recently:
            replica = await self._start(template)
            updated.append(replica)
            live.append(replica)
        # Old replicas go first, then updated ones beyond `desired`; unready ones before ready
        # ones. maxUnavailable 0: a ready replica goes only while `desired` others stay ready.
        ready_count = len([r for r in live if r.ready])
        surplus = sorted(old, key=lambda r: r.ready) + sorted(
            updated[desired:], key=lambda r: r.ready
        )
        for replica in surplus:
            if replica.ready:
                if ready_count - 1 < desired:
                    continue
                ready_count -= 1
            replica.draining_since = now

    async def _check_replicas(self, now: float) -> None:
        """Stop drained replicas; report and drop exited or never-ready ones; probe the rest."""
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
                        names.WARNING,
                        names.EVENT_SERVER_EXITED,
                        f"model server {replica.version} on port {replica.port} exited: "
                        f"{replica.process.last_log_line() or 'no output'}",
                    )
                )
                continue
            if not replica.ready:
                replica.ready = await asyncio.to_thread(http_ok, f"{replica.url}/readyz")
                if not replica.ready and now - replica.process.started_at > READY_TIMEOUT_SECONDS:
                    self.on_event(
                        Event(
                            names.WARNING,
                            names.EVENT_SERVER_NOT_READY,
                            f"{replica.url} not ready; restarting",
                        )
                    )
                    await replica.process.stop()
                    self.replicas.remove(replica)

    async def _start(self, template: str) -> Replica:
        assert self.deployment is not None and self.spec is not None
        version = template_version(self.deployment)
        port = free_port()
        self._seq += 1
        env = render.server_env(
            self.name,
            self.spec,
            artifact_dir=str(self.models_dir / version),
            port=port,
            host="127.0.0.1",
            home=os.environ.get("HOME", "/tmp"),
            model_sha256=template_sha(self.deployment),
            # Every replica its own ports: the cluster's fixed 8001 would collide here.
            grpc_port=free_port(),
            shadow_url=self.shadow_url if _asks_for_shadow(self.deployment) else "",
        )
        process = ManagedProcess(
            name=f"{self.role} {version} #{self._seq}",
            argv=[executable("modelops-server")],
            log_path=self.logs_dir / f"{self.role}-{version}-{self._seq}.log",
            env=env,
            ready_url=f"http://127.0.0.1:{port}/readyz",
            port=port,
        )
        await process.start()
        replica = Replica(version, template, process, port)
        self.replicas.append(replica)
        return replica

    async def stop(self) -> None:
        await asyncio.gather(*(r.process.stop() for r in self.replicas))
        self.replicas.clear()
