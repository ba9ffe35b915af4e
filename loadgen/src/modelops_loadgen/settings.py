"""The one settings class: environment (the seed's API_HOST/API_PORT plus MODELOPS_LOADGEN_*),
overridden by CLI flags."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

Arrival = Literal["constant", "poisson"]
Mode = Literal["open", "closed"]
Endpoint = Literal["predict", "batch", "infer", "grpc"]
PayloadKind = Literal["uniform", "iris"]

ENV_PREFIX = "MODELOPS_LOADGEN_"


class LoadgenSettings(BaseSettings):
    """Everything the generator needs. Field docs are the user-facing reference (README)."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
    )

    # The seed's load tester read exactly these two names; kept unprefixed for compatibility.
    api_host: str = Field(
        default="localhost",
        validation_alias=AliasChoices("API_HOST", "api_host"),
        description="target host when no --target/--targets-file is given",
    )
    api_port: int = Field(
        default=8000,
        ge=1,
        le=65535,
        validation_alias=AliasChoices("API_PORT", "api_port"),
        description="target port when no --target/--targets-file is given",
    )
    targets: list[str] = Field(
        default_factory=list,
        description="base URLs; requests are spread round-robin over them",
    )
    targets_file: Path | None = Field(
        default=None,
        description="JSON list of base URLs, re-read when it changes",
    )
    rate: float = Field(default=1.0, gt=0, le=1_000_000, description="target requests/s")
    arrival: Arrival = "constant"
    mode: Mode = Field(
        default="open",
        description="open: requests leave on schedule; closed: CONCURRENCY back-to-back loops "
        "(capacity measurement, RATE ignored)",
    )
    endpoint: Endpoint = "predict"
    payload: PayloadKind = "uniform"
    batch_size: int | None = Field(
        default=None,
        ge=1,
        le=100_000,
        description="rows per request for batch/infer (default: batch 8, infer 1)",
    )
    concurrency: int = Field(default=256, ge=1, le=100_000, description="max requests in flight")
    timeout: float = Field(default=10.0, gt=0, description="per-request timeout, seconds")
    max_lateness: float = Field(
        default=2.0,
        gt=0,
        description="a request this many seconds behind schedule is not sent (outcome "
        "'skipped'); bounds the catch-up burst after an outage",
    )
    lag_limit: float = Field(
        default=0.025,
        gt=0,
        description="schedule-lag p99 above this (seconds) means the generator is behind",
    )
    metrics_port: int = Field(default=9100, ge=0, le=65535, description="0 disables metrics")
    metrics_host: str = "0.0.0.0"  # scraped from other pods in a cluster
    model_name: str = Field(default="iris", min_length=1, description="OIP model name")
    feedback: bool = Field(
        default=True,
        description="send the true species of iris-payload rows to the server's POST /feedback "
        "(live accuracy), on the connection the prediction came back on; not for gRPC",
    )
    seed: int | None = Field(default=None, description="random seed for payloads and arrivals")
    duration: float | None = Field(default=None, gt=0, description="bounded run: seconds")
    requests: int | None = Field(default=None, ge=1, description="bounded run: request count")
    summary_interval: float = Field(
        default=60.0, ge=0, description="log a progress line this often (0 = never)"
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    @model_validator(mode="after")
    def _check_targets(self) -> LoadgenSettings:
        if self.targets and self.targets_file is not None:
            raise ValueError("give either targets (--target) or targets_file, not both")
        grpc_targets = [t.startswith("grpc://") for t in self.targets]
        if self.endpoint == "grpc" and not all(grpc_targets or [False]):
            raise ValueError("the grpc endpoint needs gRPC targets: --target grpc://HOST:GRPC_PORT")
        if self.endpoint != "grpc" and any(grpc_targets):
            raise ValueError("grpc:// targets need --endpoint grpc")
        return self

    @property
    def rows_per_request(self) -> int:
        if self.endpoint == "predict":
            return 1
        if self.batch_size is not None:
            return self.batch_size
        return 8 if self.endpoint == "batch" else 1

    @property
    def default_target(self) -> str:
        host = self.api_host
        if host.startswith(("http://", "https://")):
            return host.rstrip("/")
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"  # a bare IPv6 literal
        return f"http://{host}:{self.api_port}"

    @property
    def bounded(self) -> bool:
        return self.duration is not None or self.requests is not None
