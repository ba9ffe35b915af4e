"""Loading one model version from a trainer artifact and getting it ready to serve.

The model file is a parameter file (:mod:`modelops_contract.params`): numbers, never code.
Pickled models (artifact format v1, ``model.joblib``) are refused.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from modelops_contract.artifact import ArtifactError, accuracy_of, model_file, verify
from modelops_contract.iris import FEATURE_NAMES
from modelops_contract.params import Array, decode, probe_rows

from .errors import ModelLoadError
from .predictor import InvalidParams, Matrix, Predictor, predictor_from_params, self_check

log = logging.getLogger("modelops_server.model")

# Rows the start-up check of the one-row path predicts with.
SELF_CHECK_ROWS = 512
# Physically sensible range of every feature, in centimetres (Iris spans 0.1-7.9 cm).
FEATURE_MIN_CM = 0.0  # exclusive: a flower part has a positive size
FEATURE_MAX_CM = 100.0  # inclusive
_TRAIN_HINT = (
    "train one with `modelops-trainer train --version v1 --output-dir DIR` and set "
    "MODELOPS_SERVER_ARTIFACT_DIR (or --artifact-dir) to DIR/v1"
)


@dataclass
class LoadedModel:
    """A verified, loaded model version with the predictor built from its parameters."""

    name: str
    version: str
    algorithm: str
    accuracy: float
    classes: tuple[str, ...]
    features: tuple[str, ...]
    artifact_dir: Path
    metadata: dict[str, Any]
    predictor: Predictor
    predictor_reason: str
    probe: Matrix
    # Rows over (and around) the training range for the start-up checks.
    check_rows: Matrix
    load_seconds: float = 0.0
    warm: bool = False

    def predict(self, x: Matrix) -> tuple[np.ndarray, Matrix]:
        return self.predictor.predict(x)

    def predict_one(self, row: list[float]) -> tuple[int, list[float]]:
        return self.predictor.predict_one(row)

    def warm_up(self) -> None:
        """Run every code path once before the first request, and prove the one-row path
        against the array path (which the probe check proved against the trainer's answers).
        A difference turns the one-row path off instead of serving different answers."""
        prepare = getattr(self.predictor, "prepare", None)
        if prepare is not None:
            prepare()
        problem = _one_row_difference(self.predictor, self.check_rows)
        if problem is not None:
            log.warning("one-row path disagrees with the array path (%s); turned off", problem)
            disable = getattr(self.predictor, "disable_one_row", None)
            if disable is not None:
                disable()
            self.predictor_reason += f" (one-row path off: {problem})"
        for n in (1, 2, 8):
            self.predictor.predict(self.probe[:n].copy())
        self.warm = True


def _one_row_difference(predictor: Predictor, rows: Matrix) -> str | None:
    """predict_one must answer each row as predict does for it."""
    for i, row in enumerate(rows):
        indices, proba = predictor.predict(rows[i : i + 1])
        if predictor.predict_one(row.tolist()) != (int(indices[0]), proba[0].tolist()):
            return f"row {i} ({row.tolist()})"
    return None


def load_model(
    artifact_dir: Path,
    name: str | None = None,
    *,
    expected_sha256: str | None = None,
) -> LoadedModel:
    """Verify and load the artifact; raise :class:`ModelLoadError` with a one-line reason.

    `expected_sha256` is the digest the operator recorded when it trained and gated this
    version: the artifact store is not trusted to say what it holds, so a model whose bytes do
    not have that digest is refused before it is read.
    """
    started = time.perf_counter()
    if not artifact_dir.exists():
        raise ModelLoadError(f"artifact directory {artifact_dir} does not exist; {_TRAIN_HINT}")
    if not artifact_dir.is_dir():
        raise ModelLoadError(
            f"artifact path {artifact_dir} is not a directory; point it at a model version "
            "directory holding metadata.json and model.params"
        )
    try:
        metadata = verify(artifact_dir)
        accuracy = accuracy_of(metadata)
    except ArtifactError as exc:
        raise ModelLoadError(f"{exc}; retrain this version or serve another one") from None
    _check_digest(artifact_dir, metadata, expected_sha256)
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
    predictor, reason, probe, check_rows = _build(artifact_dir, metadata, classes)
    return LoadedModel(
        name=name or str(metadata.get("name") or "model"),
        version=str(metadata.get("version") or artifact_dir.name),
        algorithm=str(metadata.get("algorithm") or "unknown"),
        accuracy=accuracy,
        classes=classes,
        features=features,
        artifact_dir=artifact_dir,
        metadata=metadata,
        predictor=predictor,
        predictor_reason=reason,
        probe=probe,
        check_rows=check_rows,
        load_seconds=time.perf_counter() - started,
    )


def _build(
    artifact_dir: Path, metadata: dict[str, Any], classes: tuple[str, ...]
) -> tuple[Predictor, str, Matrix, Matrix]:
    """Parse the parameter file, build its predictor and prove it on the recorded probe."""
    try:
        model, raw = decode((artifact_dir / model_file(metadata)).read_bytes())
        if model.get("classes") != list(classes):
            raise InvalidParams(
                "its classes differ from the metadata's: the artifact is inconsistent"
            )
        layout = model.get("layout") or {}
        if not isinstance(layout, dict):
            raise InvalidParams("its array layout is not a mapping")
        arrays = {name: to_numpy(a, layout.get(name) == "F") for name, a in raw.items()}
        predictor, reason = predictor_from_params(model, arrays, len(FEATURE_NAMES))
        probe, expected = _probe(model, arrays, len(classes))
    except ArtifactError as exc:
        raise ModelLoadError(f"{exc}; retrain this version or serve another one") from None
    except InvalidParams as exc:
        raise ModelLoadError(
            f"model parameters in {artifact_dir} cannot be used: {exc}; retrain this version"
        ) from None
    problem = self_check(predictor, expected, probe)
    if problem is not None:
        raise ModelLoadError(
            f"model in {artifact_dir} does not reproduce the answers recorded when it was "
            f"trained ({problem}); it is not served: retrain it with this release's trainer"
        )
    spec = model["probe"]
    check_rows = np.asarray(probe_rows(spec["low"], spec["high"], SELF_CHECK_ROWS))
    return predictor, reason, probe, check_rows


def to_numpy(array: Array, fortran: bool = False) -> Any:
    """One array of a parameter file as numpy data the predictors can use."""
    # A copy in numpy's own memory, in the memory order the trained estimator kept the array
    # in: BLAS kernels may round a product differently by alignment and layout.
    values = np.frombuffer(array.data, dtype=array.dtype).reshape(array.shape)
    return np.array(values, order="F" if fortran else "C")


def _probe(
    model: dict[str, Any], arrays: dict[str, Any], n_classes: int
) -> tuple[Matrix, tuple[np.ndarray, Matrix]]:
    spec = model.get("probe")
    if not isinstance(spec, dict) or not isinstance(spec.get("rows"), int):
        raise InvalidParams("it records no probe rows")
    try:
        rows = probe_rows(spec["low"], spec["high"], spec["rows"])
        probe = np.asarray(rows, dtype=np.float64)
    except (KeyError, TypeError, ValueError):
        raise InvalidParams("its probe range is not two lists of numbers") from None
    if probe.shape != (spec["rows"], len(FEATURE_NAMES)) or not 8 <= spec["rows"] <= 4096:
        raise InvalidParams("its probe rows do not fit the features")
    labels, proba = arrays.get("probe.labels"), arrays.get("probe.proba")
    if labels is None or proba is None or proba.shape != (probe.shape[0], n_classes):
        raise InvalidParams("it records no answers for its probe rows")
    return probe, (labels.astype(np.intp), proba)


def _check_digest(
    artifact_dir: Path, metadata: dict[str, Any], expected_sha256: str | None
) -> None:
    # verify() proved the file matches metadata's digest; it must also be the expected one.
    if expected_sha256 is not None and metadata.get("model_sha256") != expected_sha256:
        raise ModelLoadError(
            f"model in {artifact_dir} has sha256 {str(metadata.get('model_sha256'))[:12]}…, not "
            f"the {expected_sha256[:12]}… this server was told to serve: the artifact was "
            "replaced or is not the version that passed the gate; it is not served"
        )
