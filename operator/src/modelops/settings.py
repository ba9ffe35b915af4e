"""Operator settings, read from the environment (``MODELOPS_*``)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from . import __version__

PULL_POLICIES = ("Always", "IfNotPresent", "Never")


class SettingsError(ValueError):
    """A setting has a value the operator cannot use; the message names the variable."""


@dataclass(frozen=True)
class Settings:
    # Images of the three workloads; spec.serving.image overrides the server's per resource.
    trainer_image: str = f"modelops-trainer:{__version__}"
    server_image: str = f"modelops-server:{__version__}"
    loadgen_image: str = f"modelops-loadgen:{__version__}"
    image_pull_policy: str = "IfNotPresent"
    # Namespaces to watch; empty means the whole cluster.
    namespaces: tuple[str, ...] = ()
    # Full re-list of every watched kind this often: the level-based safety net.
    resync_seconds: float = 300.0
    metrics_port: int = 8080
    health_port: int = 8081
    peering_name: str = "modelops"
    # Without peering two replicas would both act; standalone is for one-replica setups/tests.
    standalone: bool = False
    priority: int = 0
    log_format: str = "json"
    log_level: str = "INFO"
    # Server-side apply field manager: shows who owns the fields in managedFields.
    field_manager: str = "modelops"
    loadgen_metrics_port: int = 9100

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env

        def text(name: str, default: str) -> str:
            return env.get(name, "").strip() or default

        def number(name: str, default: float, low: float, high: float) -> float:
            raw = env.get(name, "").strip()
            if not raw:
                return default
            try:
                value = float(raw)
            except ValueError:
                raise SettingsError(f"{name}={raw!r} is not a number") from None
            if not low <= value <= high:
                raise SettingsError(f"{name}={raw} must be between {low:g} and {high:g}")
            return value

        def flag(name: str) -> bool:
            raw = env.get(name, "").strip().lower()
            if raw in ("", "0", "false", "no"):
                return False
            if raw in ("1", "true", "yes"):
                return True
            raise SettingsError(f"{name}={raw!r}: use true or false")

        base = cls()
        policy = text("MODELOPS_IMAGE_PULL_POLICY", base.image_pull_policy)
        if policy not in PULL_POLICIES:
            raise SettingsError(
                f"MODELOPS_IMAGE_PULL_POLICY={policy!r}: use one of {', '.join(PULL_POLICIES)}"
            )
        log_format = text("MODELOPS_LOG_FORMAT", base.log_format)
        if log_format not in ("json", "text"):
            raise SettingsError(f"MODELOPS_LOG_FORMAT={log_format!r}: use json or text")
        namespaces = tuple(
            ns.strip() for ns in env.get("MODELOPS_WATCH_NAMESPACES", "").split(",") if ns.strip()
        )
        return cls(
            trainer_image=text("MODELOPS_TRAINER_IMAGE", base.trainer_image),
            server_image=text("MODELOPS_SERVER_IMAGE", base.server_image),
            loadgen_image=text("MODELOPS_LOADGEN_IMAGE", base.loadgen_image),
            image_pull_policy=policy,
            namespaces=namespaces,
            resync_seconds=number("MODELOPS_RESYNC_SECONDS", base.resync_seconds, 5, 86400),
            metrics_port=int(number("MODELOPS_METRICS_PORT", base.metrics_port, 0, 65535)),
            health_port=int(number("MODELOPS_HEALTH_PORT", base.health_port, 0, 65535)),
            peering_name=text("MODELOPS_PEERING_NAME", base.peering_name),
            standalone=flag("MODELOPS_STANDALONE"),
            priority=int(number("MODELOPS_PRIORITY", base.priority, -(2**31), 2**31 - 1)),
            log_format=log_format,
            log_level=text("MODELOPS_LOG_LEVEL", base.log_level).upper(),
        )
