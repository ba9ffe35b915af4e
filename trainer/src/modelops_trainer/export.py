"""A fitted pipeline as a model parameter file: the numbers the server predicts with.

The artifact holds no pickle: only what :mod:`modelops_contract.params` can carry (a JSON
description and float64/int64 arrays). The model server rebuilds the same arithmetic from
these numbers; so that it can prove it did, the file also records the pipeline's own labels
and probabilities on :data:`PROBE_ROWS` rows spread over the training range, which the server
recomputes before it serves. A pipeline the format cannot describe exactly is refused here,
at training time, with a :class:`ParamError` naming the hyperparameter.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import numpy as np

from modelops_contract.params import Array, encode, probe_rows

from .pipeline import ParamError

PARAMS_KIND = "modelops.dev/model-params/v1"
PROBE_ROWS = 32


def export_model(pipeline: Any, classes: Sequence[str]) -> bytes:
    """The parameter file of a fitted imputer → min-max scaler → classifier pipeline."""
    imputer, scaler, estimator = _steps(pipeline)
    if [str(c) for c in estimator.classes_] != list(classes):
        raise ParamError("the classifier's classes differ from the data's; retrain")
    arrays: dict[str, Array] = {
        "imputer.statistics": _f8(imputer.statistics_),
        "scaler.scale": _f8(scaler.scale_),
        "scaler.offset": _f8(scaler.min_),
    }
    head = _head(estimator, len(classes), arrays)
    low = [float(v) for v in scaler.data_min_]
    high = [float(v) for v in scaler.data_max_]
    rows = np.asarray(probe_rows(low, high, PROBE_ROWS), dtype=np.float64)
    index = {label: i for i, label in enumerate(classes)}
    arrays["probe.labels"] = _i8([index[str(v)] for v in pipeline.predict(rows)])
    arrays["probe.proba"] = _f8(pipeline.predict_proba(rows))
    model = {
        "kind": PARAMS_KIND,
        "layout": _layout(estimator),
        "classes": list(classes),
        "features": int(scaler.n_features_in_),
        "scaler": {"clip": [float(v) for v in scaler.feature_range] if scaler.clip else None},
        "head": head,
        "probe": {"low": low, "high": high, "rows": PROBE_ROWS},
    }
    return encode(model, arrays)


def _steps(pipeline: Any) -> tuple[Any, Any, Any]:
    names = [type(step).__name__ for _, step in getattr(pipeline, "steps", [])]
    if names[:2] != ["SimpleImputer", "MinMaxScaler"] or len(names) != 3:
        raise ParamError(f"pipeline {names} is not imputer → min-max scaler → classifier")
    imputer, scaler, estimator = (step for _, step in pipeline.steps)
    stats = np.asarray(imputer.statistics_, dtype=np.float64)
    if imputer.strategy != "mean" or imputer.add_indicator or not np.isfinite(stats).all():
        raise ParamError("the imputer must fill the column means of features that have values")
    return imputer, scaler, estimator


def _head(estimator: Any, n_classes: int, arrays: dict[str, Array]) -> dict[str, Any]:
    name = type(estimator).__name__
    if name == "KNeighborsClassifier":
        y = np.asarray(estimator._y)
        if y.ndim != 1:
            raise ParamError("multi-output knn is not supported")
        arrays["knn.fit_x"] = _f8(estimator._fit_X)
        arrays["knn.y"] = _i8(y)
        return {"type": "knn", "estimator": _knn_params(estimator)}
    if name == "LogisticRegression":
        if getattr(estimator, "solver", "") == "liblinear" and n_classes > 2:
            raise ParamError(
                "logistic_regression solver 'liblinear' (one-vs-rest) is not supported for "
                "more than two classes; use the default solver"
            )
        arrays["linear.coef"] = _f8(estimator.coef_)
        arrays["linear.intercept"] = _f8(estimator.intercept_)
        return {"type": "linear"}
    if name in ("DecisionTreeClassifier", "RandomForestClassifier"):
        forest = name == "RandomForestClassifier"
        trees = [e.tree_ for e in estimator.estimators_] if forest else [estimator.tree_]
        if getattr(estimator, "n_outputs_", 1) != 1:
            raise ParamError("multi-output trees are not supported")
        depth = _trees(trees, n_classes, arrays)
        return {"type": "trees", "average": forest, "max_depth": depth}
    raise ParamError(f"classifier {name} has no parameter form")


def _layout(estimator: Any) -> dict[str, str]:
    """Arrays the estimator keeps in Fortran order: BLAS rounds a product by memory layout."""
    sources = {"linear.coef": "coef_", "knn.fit_x": "_fit_X"}
    layout = {}
    for name, attribute in sources.items():
        value = getattr(estimator, attribute, None)
        if isinstance(value, np.ndarray) and value.ndim == 2 and not value.flags.c_contiguous:
            layout[name] = "F"
    return layout


def _knn_params(estimator: Any) -> dict[str, Any]:
    params = estimator.get_params()
    try:
        json.dumps(params, allow_nan=False)
    except (TypeError, ValueError):
        raise ParamError("knn hyperparameters must be plain values (no callables)") from None
    return dict(params)


def _trees(trees: Sequence[Any], n_classes: int, arrays: dict[str, Array]) -> int:
    """All trees' nodes in one set of arrays; children are indices into them (-1: a leaf)."""
    left, right, feature, threshold, value, roots = [], [], [], [], [], []
    offset = 0
    for tree in trees:
        is_leaf = tree.children_left == -1
        left.append(np.where(is_leaf, -1, tree.children_left + offset))
        right.append(np.where(is_leaf, -1, tree.children_right + offset))
        feature.append(np.where(is_leaf, -1, tree.feature))
        threshold.append(np.asarray(tree.threshold, dtype=np.float64))
        value.append(np.asarray(tree.value, dtype=np.float64)[:, 0, :n_classes])
        roots.append(offset)
        offset += tree.node_count
    arrays["trees.left"] = _i8(np.concatenate(left))
    arrays["trees.right"] = _i8(np.concatenate(right))
    arrays["trees.feature"] = _i8(np.concatenate(feature))
    arrays["trees.threshold"] = _f8(np.concatenate(threshold))
    arrays["trees.value"] = _f8(np.concatenate(value))
    arrays["trees.roots"] = _i8(roots)
    return max(int(tree.max_depth) for tree in trees)


def _f8(values: Any) -> Array:
    array = np.ascontiguousarray(values, dtype="<f8")
    return Array("<f8", tuple(int(n) for n in array.shape), array.tobytes())


def _i8(values: Any) -> Array:
    array = np.ascontiguousarray(values, dtype="<i8")
    return Array("<i8", tuple(int(n) for n in array.shape), array.tobytes())
