"""The training pipeline: mean imputation + min-max scaling + a classifier, as in the seed."""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Mapping
from typing import Any

from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import MinMaxScaler


class ParamError(ValueError):
    """An algorithm name or hyperparameter is not valid; the message says which and why."""


# Estimator class paths (imported lazily: loading every estimator module costs ~0.5 s of the
# trainer's start-up) and defaults on top of scikit-learn's own: the seed's k=5, and seeded
# randomness where an estimator has it (so the same seed gives the same model).
ALGORITHMS: dict[str, tuple[str, dict[str, Any]]] = {
    "knn": ("sklearn.neighbors:KNeighborsClassifier", {"n_neighbors": 5}),
    "logistic_regression": ("sklearn.linear_model:LogisticRegression", {"max_iter": 1000}),
    "random_forest": ("sklearn.ensemble:RandomForestClassifier", {"n_estimators": 100}),
    "decision_tree": ("sklearn.tree:DecisionTreeClassifier", {}),
}
# Names the trainer sets itself.
_RESERVED = {"random_state"}


def algorithm_names() -> list[str]:
    return sorted(ALGORITHMS)


def estimator_class(algorithm: str) -> Callable[..., Any]:
    if algorithm not in ALGORITHMS:
        raise ParamError(
            f"unknown algorithm {algorithm!r}; choose one of {', '.join(algorithm_names())}"
        )
    module, _, name = ALGORITHMS[algorithm][0].partition(":")
    factory: Callable[..., Any] = getattr(importlib.import_module(module), name)
    return factory


def estimator_params(algorithm: str, params: Mapping[str, Any], seed: int) -> dict[str, Any]:
    """Merge defaults and user params for `algorithm` and check names against the estimator."""
    factory = estimator_class(algorithm)
    defaults = ALGORITHMS[algorithm][1]
    accepted = set(inspect.signature(factory).parameters) - _RESERVED
    unknown = sorted(set(params) - accepted)
    if unknown:
        raise ParamError(
            f"{algorithm} has no hyperparameter(s) {', '.join(map(repr, unknown))}; "
            f"valid names: {', '.join(sorted(accepted))}"
        )
    merged = {**defaults, **params}
    if "random_state" in inspect.signature(factory).parameters:
        merged["random_state"] = seed
    return merged


def build_pipeline(algorithm: str, params: Mapping[str, Any], seed: int) -> Pipeline:
    """Build the (unfitted) pipeline; bad values raise :class:`ParamError` before training."""
    merged = estimator_params(algorithm, params, seed)
    factory = estimator_class(algorithm)
    try:
        estimator = factory(**merged)
        # scikit-learn validates values lazily at fit; check them now so a bad value
        # fails as a parameter error, not as a crash in the middle of training.
        estimator._validate_params()
    except (TypeError, ValueError) as exc:
        raise ParamError(f"invalid {algorithm} hyperparameter: {_first_line(exc)}") from None
    return Pipeline(
        [
            ("imputer", SimpleImputer(strategy="mean")),
            ("scaler", MinMaxScaler()),
            ("classifier", estimator),
        ]
    )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
