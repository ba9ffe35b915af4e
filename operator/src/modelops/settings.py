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
    # Leader election: replicas compete for one Lease (coordination.k8s.io) in the operator's
    # namespace; only its holder acts. standalone skips it (one process, tests, local runs).
    lease_name: str = "modelops-operator"
    lease_namespace: str = "modelops-system"
    lease_duration_seconds: float = 15.0
    standalone: bool = False
    log_format: str = "json"
    log_level: str = "INFO"
    # Server-side apply field manager: shows who owns the fields in managedFields.
    field_manager: str = "modelops"
    loadgen_metrics_port: int = 9100
    # What creating a ModelDeployment may ask for (docs/security.md). spec.serving.image must
    # start with one of these; empty: only the repository of server_image (any tag or digest).
    allowed_image_prefixes: tuple[str, ...] = ()
    # spec.training.dataset.url: schemes and hosts (empty: any; ".example.org" allows its
    # subdomains), checked by the operator and again by the trainer on every redirect.
    dataset_url_schemes: tuple[str, ...] = ("https", "http")
    dataset_url_hosts: tuple[str, ...] = ()
    dataset_max_bytes: int = 64 * 1024 * 1024
    dataset_timeout_seconds: float = 30.0
    # The Prometheus a Shadow or Canary rollout's analysis queries (spec.rollout.analysis.
    # prometheusURL overrides it per resource); the bundled one by default.
    prometheus_url: str = "http://prometheus-service.modelops-system.svc:9090"
    prometheus_timeout_seconds: float = 5.0
    # Prometheus URLs (prefixes) a spec may name instead; empty: only prometheus_url. The
    # operator sends queries there and writes what comes back into the status.
    prometheus_allowed_urls: tuple[str, ...] = ()

    def prometheus_problem(self, url: str) -> str:
        """Why a ModelDeployment may not have its analysis queried at ``url`` ("" if it may)."""
        if url == self.prometheus_url or url.startswith(self.prometheus_allowed_urls or ("\0",)):
            return ""
        return (
            f"spec.rollout.analysis.prometheusURL {url} is not allowed by the operator's "
            "settings (MODELOPS_PROMETHEUS_ALLOWED_URLS); leave it empty to use "
            f"{self.prometheus_url}, or ask the cluster admin"
        )

    def image_allowed(self, image: str) -> bool:
        if self.allowed_image_prefixes:
            return image.startswith(self.allowed_image_prefixes)
        repository = _repository(self.server_image)
        return image == repository or image.startswith((f"{repository}:", f"{repository}@"))

    @property
    def image_rule(self) -> str:
        """The image rule in words, for a condition message."""
        if self.allowed_image_prefixes:
            return "images starting with " + ", ".join(self.allowed_image_prefixes)
        return f"only {_repository(self.server_image)} (set MODELOPS_ALLOWED_IMAGE_PREFIXES)"

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

        def words(name: str, default: tuple[str, ...]) -> tuple[str, ...]:
            found = tuple(w.strip() for w in env.get(name, "").split(",") if w.strip())
            return found or default

        namespaces = words("MODELOPS_WATCH_NAMESPACES", ())
        return cls(
            trainer_image=text("MODELOPS_TRAINER_IMAGE", base.trainer_image),
            server_image=text("MODELOPS_SERVER_IMAGE", base.server_image),
            loadgen_image=text("MODELOPS_LOADGEN_IMAGE", base.loadgen_image),
            image_pull_policy=policy,
            namespaces=namespaces,
            resync_seconds=number("MODELOPS_RESYNC_SECONDS", base.resync_seconds, 5, 86400),
            metrics_port=int(number("MODELOPS_METRICS_PORT", base.metrics_port, 0, 65535)),
            health_port=int(number("MODELOPS_HEALTH_PORT", base.health_port, 0, 65535)),
            lease_name=text("MODELOPS_LEASE_NAME", base.lease_name),
            # In a pod: its own namespace (downward API), where its RBAC allows the Lease.
            lease_namespace=text(
                "MODELOPS_LEASE_NAMESPACE", text("POD_NAMESPACE", base.lease_namespace)
            ),
            lease_duration_seconds=number(
                "MODELOPS_LEASE_DURATION_SECONDS", base.lease_duration_seconds, 3, 300
            ),
            standalone=flag("MODELOPS_STANDALONE"),
            log_format=log_format,
            log_level=text("MODELOPS_LOG_LEVEL", base.log_level).upper(),
            allowed_image_prefixes=words("MODELOPS_ALLOWED_IMAGE_PREFIXES", ()),
            dataset_url_schemes=tuple(
                s.lower() for s in words("MODELOPS_DATASET_URL_SCHEMES", base.dataset_url_schemes)
            ),
            dataset_url_hosts=words("MODELOPS_DATASET_URL_HOSTS", ()),
            dataset_max_bytes=int(
                number("MODELOPS_DATASET_MAX_BYTES", base.dataset_max_bytes, 1024, 2**40)
            ),
            dataset_timeout_seconds=number(
                "MODELOPS_DATASET_TIMEOUT_SECONDS", base.dataset_timeout_seconds, 1, 3600
            ),
            prometheus_url=text("MODELOPS_PROMETHEUS_URL", base.prometheus_url),
            prometheus_timeout_seconds=number(
                "MODELOPS_PROMETHEUS_TIMEOUT_SECONDS", base.prometheus_timeout_seconds, 0.1, 60
            ),
            prometheus_allowed_urls=words("MODELOPS_PROMETHEUS_ALLOWED_URLS", ()),
        )


def _repository(image: str) -> str:
    """An image reference without its tag or digest (a registry port is not a tag)."""
    name = image.split("@", 1)[0]
    slash = name.rfind("/")
    colon = name.rfind(":")
    return name[:colon] if colon > slash else name
