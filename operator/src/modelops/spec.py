"""The ModelDeployment spec: schema defaults and typed models.

The CRD's OpenAPI schema is the single source of truth for defaults. The API server applies
them to every object it stores; :func:`apply_defaults` applies the same defaults, read from the
same schema (shipped as package data), to a spec that never went through an API server (local
mode), so both drivers see identical specs.
"""

from __future__ import annotations

import copy
import functools
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import yaml

from .names import VERSION

CRD_RESOURCE = "modelops.dev_modeldeployments.yaml"


@functools.cache
def crd_text() -> str:
    return resources.files("modelops").joinpath("crd", CRD_RESOURCE).read_text()


@functools.cache
def crd() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(crd_text())
    return data


def openapi_schema() -> dict[str, Any]:
    """The OpenAPI v3 schema of the served version."""
    for version in crd()["spec"]["versions"]:
        if version["name"] == VERSION:
            schema: dict[str, Any] = version["schema"]["openAPIV3Schema"]
            return schema
    raise LookupError(f"the CRD has no version {VERSION}")  # pragma: no cover - shipped file


def spec_schema() -> dict[str, Any]:
    schema: dict[str, Any] = openapi_schema()["properties"]["spec"]
    return schema


def default(value: Any, schema: dict[str, Any]) -> Any:
    """Apply structural-schema defaults the way kube-apiserver does.

    Top-down: a missing (or null, non-nullable) property with a ``default`` gets a copy of it,
    then the walk descends into it, so ``default: {}`` picks up the defaults of its children.
    """
    if isinstance(value, dict):
        properties: dict[str, Any] = schema.get("properties", {})
        out = dict(value)
        for name, sub in properties.items():
            if "default" in sub and (
                name not in out or (out[name] is None and not sub.get("nullable"))
            ):
                out[name] = copy.deepcopy(sub["default"])
        for name, item in list(out.items()):
            if name in properties:
                out[name] = default(item, properties[name])
            elif isinstance(schema.get("additionalProperties"), dict):
                out[name] = default(item, schema["additionalProperties"])
        return out
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [default(item, schema["items"]) for item in value]
    return value


def apply_defaults(spec: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``spec`` with every schema default applied (the input is not changed)."""
    defaulted: dict[str, Any] = default(copy.deepcopy(spec), spec_schema())
    return defaulted


@dataclass(frozen=True)
class Resources:
    requests: dict[str, str] = field(default_factory=dict)
    limits: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Resources:
        return cls(
            requests={k: str(v) for k, v in (data.get("requests") or {}).items()},
            limits={k: str(v) for k, v in (data.get("limits") or {}).items()},
        )

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.requests:
            out["requests"] = dict(self.requests)
        if self.limits:
            out["limits"] = dict(self.limits)
        return out


@dataclass(frozen=True)
class Dataset:
    builtin: str | None
    config_map: str | None
    config_map_key: str
    url: str | None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Dataset:
        cm = data.get("configMap") or {}
        return cls(
            builtin=data.get("builtin"),
            config_map=cm.get("name"),
            config_map_key=cm.get("key", ""),  # defaulted with configMap (the CRD's default)
            url=data.get("url"),
        )


@dataclass(frozen=True)
class Training:
    algorithm: str
    hyperparameters: dict[str, Any]
    dataset: Dataset
    test_size: float
    seed: int
    timeout_seconds: int
    resources: Resources


@dataclass(frozen=True)
class Gate:
    regression_tolerance: float
    significant_improvement: float


@dataclass(frozen=True)
class Serving:
    image: str
    port: int
    resources: Resources
    max_batch_size: int
    progress_deadline_seconds: int
    max_connection_age_seconds: int


@dataclass(frozen=True)
class LoadGenerator:
    payload: str
    endpoint: str


@dataclass(frozen=True)
class Analysis:
    """Thresholds of a rollout's analysis (spec.rollout.analysis)."""

    prometheus_url: str
    min_samples: int
    max_accuracy_drop: float
    min_agreement: float
    max_error_ratio: float
    max_latency_p99_seconds: float


@dataclass(frozen=True)
class Rollout:
    strategy: str
    steps: tuple[int, ...]  # Canary weights in percent, increasing
    pause_seconds: int
    analysis: Analysis

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Rollout:
        analysis = data["analysis"]
        return cls(
            strategy=str(data["strategy"]),
            steps=tuple(sorted({int(s) for s in data["steps"]})),
            pause_seconds=int(data["pauseSeconds"]),
            analysis=Analysis(
                prometheus_url=str(analysis.get("prometheusURL") or ""),
                min_samples=int(analysis["minSamples"]),
                max_accuracy_drop=float(analysis["maxAccuracyDrop"]),
                min_agreement=float(analysis["minAgreement"]),
                max_error_ratio=float(analysis["maxErrorRatio"]),
                max_latency_p99_seconds=float(analysis["maxLatencyP99Seconds"]),
            ),
        )


@dataclass(frozen=True)
class ModelDeploymentSpec:
    """A defaulted spec. Build it with :meth:`from_dict` (which applies the schema defaults)."""

    model_version: str
    replicas: int
    min_accuracy: float
    load_rate: float
    history_limit: int
    training: Training
    gate: Gate
    serving: Serving
    load_generator: LoadGenerator
    scrape_interval: str
    rollout: Rollout

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> ModelDeploymentSpec:
        if not isinstance(raw, dict) or not raw.get("modelVersion"):
            raise ValueError("spec.modelVersion is required (e.g. modelVersion: v1)")
        data = apply_defaults(raw)
        training = data["training"]
        serving = data["serving"]
        batching = serving.get("batching", {})
        return cls(
            model_version=str(data["modelVersion"]),
            replicas=int(data["replicas"]),
            min_accuracy=float(data["minAccuracy"]),
            load_rate=float(data["loadRate"]),
            history_limit=int(data["historyLimit"]),
            training=Training(
                algorithm=training["algorithm"],
                hyperparameters=dict(training.get("hyperparameters") or {}),
                dataset=Dataset.from_dict(training["dataset"]),
                test_size=float(training["testSize"]),
                seed=int(training["seed"]),
                timeout_seconds=int(training["timeoutSeconds"]),
                resources=Resources.from_dict(training["resources"]),
            ),
            gate=Gate(
                regression_tolerance=float(data["gate"]["regressionTolerance"]),
                significant_improvement=float(data["gate"]["significantImprovement"]),
            ),
            serving=Serving(
                image=serving.get("image") or "",
                port=int(serving["port"]),
                resources=Resources.from_dict(serving["resources"]),
                max_batch_size=int(batching["maxBatchSize"]),
                progress_deadline_seconds=int(serving["progressDeadlineSeconds"]),
                max_connection_age_seconds=int(serving["maxConnectionAgeSeconds"]),
            ),
            load_generator=LoadGenerator(
                payload=data["loadGenerator"]["payload"],
                endpoint=data["loadGenerator"]["endpoint"],
            ),
            scrape_interval=data["monitoring"]["scrapeInterval"],
            rollout=Rollout.from_dict(data["rollout"]),
        )
