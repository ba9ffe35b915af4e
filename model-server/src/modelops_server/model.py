"""Loading one model version from a trainer artifact and getting it ready to serve."""

from __future__ import annotations

import logging
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from modelops_trainer.artifact import ArtifactError, accuracy_of, verify
from modelops_trainer.data import FEATURE_NAMES

from .errors import ModelLoadError
from .predictor import EstimatorPredictor, Matrix, Predictor, compile_predictor, self_check

log = logging.getLogger("modelops_server.model")

# Physically sensible range of every feature, in centimetres (Iris spans 0.1-7.9 cm).
FEATURE_MIN_CM = 0.0  # exclusive: a flower part has a positive size
FEATURE_MAX_CM = 100.0  # inclusive
# Rows the start-up self-check and warm-up predict with.
SELF_CHECK_ROWS = 512
_TRAIN_HINT = (
    "train one with `modelops-trainer train --version v1 --output-dir DIR` and set "
    "MODELOPS_SERVER_ARTIFACT_DIR (or --artifact-dir) to DIR/v1"
)


@dataclass
class LoadedModel:
    """A verified, loaded model version with the predictor chosen for it."""

    name: str
    version: str
    algorithm: str
    accuracy: float
    classes: tuple[str, ...]
    features: tuple[str, ...]
    artifact_dir: Path
    metadata: dict[str, Any]
    pipeline: Any
    predictor: Predictor
    predictor_reason: str
    load_seconds: float = 0.0
    warm: bool = False
    _exact: EstimatorPredictor | None = field(default=None, repr=False)

    def predict(self, x: Matrix) -> tuple[np.ndarray, Matrix]:
        return self.predictor.predict(x)

    def predict_one(self, row: list[float]) -> tuple[int, list[float]]:
        return self.predictor.predict_one(row)

    def warm_up(self) -> None:
        """Run every code path once and prove the fast path against the estimator.

        A difference (e.g. a scikit-learn release that changed its arithmetic) switches the
        server to the estimator path instead of serving different answers.
        """
        rows = _sample_rows(self.pipeline, SELF_CHECK_ROWS)
        exact = self._exact or EstimatorPredictor(self.pipeline, self.classes)
        if self.predictor.kind != exact.kind:
            problem = self_check(self.predictor, exact, rows) or self_check(
                self.predictor, exact, rows[:1]
            )
            if problem is not None:
                log.warning(
                    "vectorised predictor disagrees with the estimator (%s); serving with the "
                    "estimator itself",
                    problem,
                )
                self.predictor = exact
                self.predictor_reason = f"estimator path: self-check failed ({problem})"
        problem = _one_row_difference(self.predictor, rows)
        if problem is not None:
            log.warning("one-row path disagrees with the array path (%s); serving with the "
                        "estimator itself", problem)  # fmt: skip
            self.predictor = exact
            self.predictor_reason = f"estimator path: one-row self-check failed ({problem})"
        for n in (1, 2, 8):
            self.predictor.predict(rows[:n])
        self.warm = True


def _one_row_difference(predictor: Predictor, rows: Matrix) -> str | None:
    """predict_one must answer each row as predict does for it (the array path is checked
    against the estimator; the one-row path against the array path)."""
    for i, row in enumerate(rows):
        indices, proba = predictor.predict(rows[i : i + 1])
        if predictor.predict_one(row.tolist()) != (int(indices[0]), proba[0].tolist()):
            return f"row {i} ({row.tolist()})"
    return None


def load_model(
    artifact_dir: Path, name: str | None = None, *, vectorised: bool = True
) -> LoadedModel:
    """Verify and load the artifact; raise :class:`ModelLoadError` with a one-line reason."""
    started = time.perf_counter()
    if not artifact_dir.exists():
        raise ModelLoadError(f"artifact directory {artifact_dir} does not exist; {_TRAIN_HINT}")
    if not artifact_dir.is_dir():
        raise ModelLoadError(
            f"artifact path {artifact_dir} is not a directory; point it at a model version "
            "directory holding metadata.json and model.joblib"
        )
    try:
        metadata = verify(artifact_dir)
        accuracy = accuracy_of(metadata)
    except ArtifactError as exc:
        raise ModelLoadError(f"{exc}; retrain this version or serve another one") from None

    features = tuple(str(f) for f in metadata.get("features") or ())
    if features != FEATURE_NAMES:
        raise ModelLoadError(
            f"model {artifact_dir} expects features {list(features)}, but this server serves "
            f"{list(FEATURE_NAMES)}; retrain it with the Iris feature columns"
        )
    classes_raw = metadata.get("classes")
    if not isinstance(classes_raw, list) or len(classes_raw) < 2:
        raise ModelLoadError(f"model metadata of {artifact_dir} lists no classes; retrain it")
    classes = tuple(str(c) for c in classes_raw)

    pipeline = _load_pipeline(artifact_dir / str(metadata.get("model_file", "model.joblib")))
    _check_pipeline(pipeline, artifact_dir, classes)

    exact = EstimatorPredictor(pipeline, classes)
    if vectorised:
        predictor, reason = compile_predictor(pipeline, classes)
    else:
        predictor, reason = exact, "estimator path: vectorised predictor disabled by settings"
    return LoadedModel(
        name=name or str(metadata.get("name") or "model"),
        version=str(metadata.get("version") or artifact_dir.name),
        algorithm=str(metadata.get("algorithm") or type(pipeline).__name__),
        accuracy=accuracy,
        classes=classes,
        features=features,
        artifact_dir=artifact_dir,
        metadata=metadata,
        pipeline=pipeline,
        predictor=predictor,
        predictor_reason=reason,
        load_seconds=time.perf_counter() - started,
        _exact=exact,
    )


def _load_pipeline(path: Path) -> Any:
    import joblib

    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            pipeline = joblib.load(path)
    except Exception as exc:  # unpickling runs arbitrary code paths: report, never crash
        raise ModelLoadError(
            f"model file {path} cannot be loaded ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else 'no detail'}); it may come from an "
            "incompatible scikit-learn version: retrain it with this image's trainer"
        ) from None
    for warning in caught:
        if "InconsistentVersionWarning" in type(warning.message).__name__:
            log.warning("model %s: %s", path, str(warning.message).splitlines()[0])
    return pipeline


def _check_pipeline(pipeline: Any, artifact_dir: Path, classes: tuple[str, ...]) -> None:
    if not hasattr(pipeline, "predict_proba") or not hasattr(pipeline, "predict"):
        raise ModelLoadError(
            f"model in {artifact_dir} is a {type(pipeline).__name__}, not a classifier with "
            "predict_proba; retrain it with modelops-trainer"
        )
    fitted = [str(c) for c in getattr(pipeline, "classes_", [])]
    if fitted != list(classes):
        raise ModelLoadError(
            f"model in {artifact_dir} predicts classes {fitted} but its metadata lists "
            f"{list(classes)}; the artifact is inconsistent, retrain this version"
        )
    n_features = getattr(pipeline, "n_features_in_", len(FEATURE_NAMES))
    if n_features != len(FEATURE_NAMES):
        raise ModelLoadError(
            f"model in {artifact_dir} takes {n_features} features, this server sends "
            f"{len(FEATURE_NAMES)}; retrain it with the Iris feature columns"
        )


def _sample_rows(pipeline: Any, n: int) -> Matrix:
    """Rows spread over the training range (the scaler saw it), plus margins around it."""
    low = np.array([4.3, 2.0, 1.0, 0.1])
    high = np.array([7.9, 4.4, 6.9, 2.5])
    for _, step in getattr(pipeline, "steps", []):
        if hasattr(step, "data_min_") and hasattr(step, "data_max_"):
            low = np.asarray(step.data_min_, dtype=np.float64)
            high = np.asarray(step.data_max_, dtype=np.float64)
            break
    span = np.maximum(high - low, 1e-3)
    rng = np.random.default_rng(20240601)
    rows = rng.uniform(low - 0.25 * span, high + 0.25 * span, size=(n, len(low)))
    return np.clip(rows, 1e-3, FEATURE_MAX_CM)
