"""The server's settings: one class, environment variables prefixed ``MODELOPS_SERVER_``."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

ENV_PREFIX = "MODELOPS_SERVER_"


class ServerSettings(BaseSettings):
    """Every knob of the model server; CLI flags override the environment."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)

    artifact_dir: Path = Field(description="trainer artifact directory of one model version")
    model_name: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$",
        description="name served under /v2/models/{name}; default: the artifact's name",
    )
    model_sha256: str | None = Field(
        default=None,
        pattern=r"^[0-9a-f]{64}$",
        description="sha256 the model file must have (the operator sets the digest it "
        "recorded); anything else is refused",
    )
    host: str = Field(default="0.0.0.0", description="address to listen on")
    port: int = Field(default=8000, ge=0, le=65535, description="port to listen on (HTTP)")
    # Off unless set: processes started without it (tests, local mode) must not contend for
    # one fixed port; the server Deployment sets 8001.
    grpc_port: int = Field(
        default=0,
        ge=0,
        le=65535,
        description="port of the OIP gRPC service (inference.GRPCInferenceService); 0: off",
    )
    max_batch_size: int = Field(
        default=1024, ge=1, le=1_000_000, description="most rows per batch or infer request"
    )
    max_body_bytes: int = Field(
        default=1 << 20, ge=1024, description="largest request body accepted (bytes)"
    )
    log_level: Literal["debug", "info", "warning", "error", "critical"] = "info"
    access_log: bool = Field(default=False, description="log every request (costs throughput)")
    metrics_enabled: bool = Field(
        default=True, description="collect Prometheus metrics (off only to measure their cost)"
    )
    timeout_keep_alive: int = Field(
        default=5, ge=1, description="idle connection (new or kept alive) closed after (seconds)"
    )
    max_connection_age: float = Field(
        default=0.0,
        ge=0,
        description="a kept-alive connection older than this (seconds) gets Connection: close "
        "on its next answer (gRPC: GOAWAY), so clients reconnect and a Service spreads them "
        "over replicas added since; 0: never",
    )
    timeout_request: float = Field(
        default=10.0,
        gt=0,
        description="a request's headers and body must arrive within (seconds); 408 beyond",
    )
    max_concurrency: int = Field(
        default=256,
        ge=1,
        description="requests in flight (queued included) before new ones get 503 + Retry-After",
    )
    max_connections: int = Field(
        default=2048, ge=1, description="open HTTP connections; connections beyond are closed"
    )
    feedback_capacity: int = Field(
        default=100_000,
        ge=1,
        le=10_000_000,
        description="prediction ids kept for feedback (the oldest is dropped beyond; "
        "~150 bytes each, ~170 more while shadowing)",
    )
    feedback_ttl_seconds: float = Field(
        default=600.0, gt=0, description="feedback is accepted this long after the prediction"
    )
    shadow_url: str | None = Field(
        default=None,
        pattern=r"^http://[^/?#]+$",
        description="http://host:port of a shadow (candidate) server: every prediction request "
        "is copied to it after the answer is sent, its answers only compared and counted",
    )
    shadow_queue: int = Field(
        default=1024, ge=1, description="copies waiting for the shadow; beyond, copies are dropped"
    )
    shadow_concurrency: int = Field(default=4, ge=1, le=64, description="connections to the shadow")
    shadow_timeout: float = Field(
        default=2.0, gt=0, description="a copy the shadow has not answered within this fails (s)"
    )
    retry_after: int = Field(
        default=1, ge=0, description="Retry-After seconds sent with a 503 for overload"
    )
