"""Train, evaluate and package one model version."""

from __future__ import annotations

import json
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from modelops_contract.artifact import (
    ACCURACY_METRIC,
    ARTIFACT_FORMAT,
    ArtifactError,
    accuracy_of,
    check_version,
    read_metadata,
)
from modelops_contract.clock import now_rfc3339
from modelops_contract.iris import FEATURE_NAMES

from .artifact import write_artifact
from .data import (
    BUILTIN_IRIS,
    FEATURE_COLUMNS,
    DataError,
    Dataset,
    DownloadPolicy,
    load_dataset,
)
from .export import export_model
from .pipeline import ParamError, build_pipeline, estimator_params

# The operator reads the summary from the container's termination message (4096 bytes max).
RESULT_LIMIT_BYTES = 4096


@dataclass(frozen=True)
class TrainConfig:
    version: str
    output_dir: Path
    name: str = "iris"
    algorithm: str = "knn"
    params: dict[str, Any] = field(default_factory=dict)
    dataset: str = BUILTIN_IRIS
    test_size: float = 0.2
    seed: int = 42
    download: DownloadPolicy = field(default_factory=DownloadPolicy)


@dataclass(frozen=True)
class TrainResult:
    artifact: Path
    metadata: dict[str, Any]
    # The fitted scikit-learn pipeline the artifact's parameters were taken from (in memory).
    pipeline: Any = None

    @property
    def accuracy(self) -> float:
        return accuracy_of(self.metadata)


def train(config: TrainConfig) -> TrainResult:
    """Load data, fit, evaluate and write the artifact. Raises DataError/ParamError/
    ArtifactError with a one-line message; nothing is written unless everything succeeded."""
    check_version(config.version)
    if not 0.05 <= config.test_size <= 0.5:
        raise ParamError(f"test size {config.test_size} must be between 0.05 and 0.5")
    if (config.output_dir / config.version).exists():
        # Fail before spending time on training.
        raise ArtifactError(
            f"model version {config.version} already exists at "
            f"{config.output_dir / config.version}; versions are immutable, choose a new name"
        )
    pipeline = build_pipeline(config.algorithm, config.params, config.seed)
    dataset = load_dataset(config.dataset, config.download)
    x_train, x_test, y_train, y_test = _split(dataset, config.test_size, config.seed)
    try:
        pipeline.fit(x_train, y_train)
        # Some estimators (KNN) only check their parameters against the data at predict time.
        metrics = evaluate(pipeline, x_train, y_train, x_test, y_test)
    except ValueError as exc:
        raise ParamError(
            f"training {config.algorithm} failed: {str(exc).splitlines()[0]}"
        ) from None
    metadata = build_metadata(config, dataset, metrics, len(y_train), len(y_test))
    model = export_model(pipeline, dataset.classes)
    artifact = write_artifact(config.output_dir, config.version, model, metadata)
    return TrainResult(artifact=artifact, metadata=read_metadata(artifact), pipeline=pipeline)


def _split(
    dataset: Dataset, test_size: float, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    from sklearn.model_selection import train_test_split

    try:
        parts = train_test_split(
            dataset.features,
            dataset.labels,
            test_size=test_size,
            random_state=seed,
            stratify=dataset.labels,
        )
    except ValueError as exc:
        raise DataError(
            f"dataset {dataset.source} cannot be split {1 - test_size:.0%}/{test_size:.0%} "
            f"with every class on both sides: {str(exc).splitlines()[0]}"
        ) from None
    x_train, x_test, y_train, y_test = parts
    return x_train, x_test, y_train, y_test


def evaluate(
    pipeline: Any,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
) -> dict[str, Any]:
    from sklearn.metrics import (
        accuracy_score,
        confusion_matrix,
        f1_score,
        precision_recall_fscore_support,
    )

    classes = [str(c) for c in pipeline.classes_]
    predicted = pipeline.predict(x_test)
    precision, recall, _, support = precision_recall_fscore_support(
        y_test, predicted, labels=classes, zero_division=0
    )
    return {
        ACCURACY_METRIC: round(float(accuracy_score(y_test, predicted)), 6),
        "train_accuracy": round(float(accuracy_score(y_train, pipeline.predict(x_train))), 6),
        "f1_macro": round(float(f1_score(y_test, predicted, average="macro", zero_division=0)), 6),
        "per_class": {
            label: {
                "precision": round(float(p), 6),
                "recall": round(float(r), 6),
                "support": int(s),
            }
            for label, p, r, s in zip(classes, precision, recall, support, strict=True)
        },
        "confusion_matrix": confusion_matrix(y_test, predicted, labels=classes).tolist(),
    }


def build_metadata(
    config: TrainConfig,
    dataset: Dataset,
    metrics: dict[str, Any],
    train_rows: int,
    test_rows: int,
) -> dict[str, Any]:
    import sklearn

    return {
        "format": ARTIFACT_FORMAT,
        "name": config.name,
        "version": config.version,
        "algorithm": config.algorithm,
        "params": estimator_params(config.algorithm, config.params, config.seed),
        "features": list(FEATURE_NAMES),
        "feature_columns": list(FEATURE_COLUMNS),
        "classes": dataset.classes,
        "metrics": metrics,
        "dataset": {
            "source": dataset.source,
            "sha256": dataset.sha256,
            "rows": dataset.rows,
            "train_rows": train_rows,
            "test_rows": test_rows,
            "test_size": config.test_size,
            "seed": config.seed,
        },
        "libraries": {
            "python": platform.python_version(),
            "scikit-learn": sklearn.__version__,
            "numpy": np.__version__,
        },
        "created_at": now_rfc3339(),
    }


def result_summary(result: TrainResult) -> dict[str, Any]:
    """The compact result the operator reads from the termination message (≤ 4 KB)."""
    meta = result.metadata
    summary: dict[str, Any] = {
        "status": "Succeeded",
        "name": meta["name"],
        "version": meta["version"],
        "algorithm": meta["algorithm"],
        "accuracy": meta["metrics"][ACCURACY_METRIC],
        "trainAccuracy": meta["metrics"]["train_accuracy"],
        "f1Macro": meta["metrics"]["f1_macro"],
        "classes": meta["classes"],
        "datasetSha256": meta["dataset"]["sha256"],
        "modelSha256": meta["model_sha256"],
        "artifact": str(result.artifact),
        "createdAt": meta["created_at"],
    }
    return summary


def failure_summary(version: str, reason: str, message: str) -> dict[str, Any]:
    return {"status": "Failed", "version": version, "reason": reason, "message": message[:3000]}


def encode_summary(summary: dict[str, Any]) -> str:
    text = json.dumps(summary, separators=(",", ":"), sort_keys=True)
    if len(text.encode()) > RESULT_LIMIT_BYTES:
        raise ValueError(f"result summary is {len(text.encode())} bytes, over {RESULT_LIMIT_BYTES}")
    return text
