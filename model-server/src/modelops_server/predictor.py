"""Predictors: turn a feature matrix into class indices and class probabilities.

scikit-learn spends ~0.2-10 ms of fixed overhead per ``predict`` call (input validation,
dispatch, joblib for forests) whatever the batch size, which caps a one-row-per-request API at
a few hundred requests per second. :func:`compile_predictor` rebuilds the fitted pipeline's
arithmetic in plain numpy, doing the same floating-point operations in the same order as
scikit-learn, so labels and probabilities are bit-for-bit those of the estimator (the test
suite checks this on all Iris rows and 10,000 random points per algorithm, and
:func:`self_check` repeats it at start-up). Anything the numpy path does not replicate
exactly falls back to the estimator itself: unknown pipeline steps or hyperparameters as a
whole, and KNN rows whose k-th neighbour is tied with the next one row by row.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

Matrix = npt.NDArray[np.float64]
Indices = npt.NDArray[np.intp]

# KNN: distances are computed differently by scikit-learn's tree and brute-force backends
# (the latter expands |x-y|^2 = |x|^2 - 2xy + |y|^2). A k-th/(k+1)-th gap below this relative
# tolerance means the neighbour set could differ, so that row goes to the estimator.
_KNN_TIE_RTOL = 1e-9
# ndarray.any() goes through a Python wrapper; the ufunc reduction it ends in is ~3x cheaper.
_ANY = np.logical_or.reduce
# Bound the (queries x training rows x features) temporary of the KNN distance computation.
_KNN_CHUNK_ELEMENTS = 1 << 20


class Predictor(Protocol):
    """Maps an (n, n_features) float64 matrix to (class indices, probabilities (n, n_classes))."""

    kind: str  # "vectorised" or "estimator": reported by GET / and the logs

    def predict(self, x: Matrix) -> tuple[Indices, Matrix]: ...

    def predict_one(self, row: list[float]) -> tuple[int, list[float]]:
        """One row: (class index, probabilities), as ``predict`` answers for it."""
        ...


class EstimatorPredictor:
    """The fitted pipeline's own ``predict`` and ``predict_proba``: always exact, slower."""

    kind = "estimator"

    def __init__(self, pipeline: Any, classes: Sequence[str]) -> None:
        self._pipeline = pipeline
        self._index = {label: i for i, label in enumerate(classes)}

    def predict(self, x: Matrix) -> tuple[Indices, Matrix]:
        proba = np.asarray(self._pipeline.predict_proba(x), dtype=np.float64)
        labels = self._pipeline.predict(x)
        indices = np.fromiter((self._index[str(v)] for v in labels), np.intp, len(labels))
        return indices, proba

    def predict_one(self, row: list[float]) -> tuple[int, list[float]]:
        indices, proba = self.predict(np.array([row], dtype=np.float64))
        return int(indices[0]), proba[0].tolist()


@dataclass(frozen=True)
class _Imputer:
    statistics: Matrix

    def apply(self, x: Matrix) -> Matrix:
        # A NaN makes the sum NaN (so does inf - inf, then the mask below finds no NaN): one
        # ufunc call instead of isnan + any on the common, complete row.
        total = np.add.reduce(x, axis=None)
        if total != total:
            missing = np.isnan(x)
            if _ANY(missing, axis=None):
                return np.where(missing, self.statistics, x)
        return x

    def one_row(self) -> Callable[[list[float]], list[float]]:
        stats = self.statistics.tolist()
        return lambda row: [s if v != v else v for v, s in zip(row, stats, strict=True)]


@dataclass(frozen=True)
class _MinMax:
    scale: Matrix
    offset: Matrix
    clip: tuple[float, float] | None

    def apply(self, x: Matrix) -> Matrix:
        # Same two rounding steps as MinMaxScaler.transform: X *= scale_; X += min_.
        out = x * self.scale
        out += self.offset
        if self.clip is not None:
            np.clip(out, self.clip[0], self.clip[1], out=out)
        return out

    def one_row(self) -> Callable[[list[float]], list[float]]:
        # Python floats round each * and + exactly as numpy's float64 ufuncs (IEEE, no FMA).
        pairs = list(zip(self.scale.tolist(), self.offset.tolist(), strict=True))
        if self.clip is None:
            return lambda row: [v * s + o for v, (s, o) in zip(row, pairs, strict=True)]
        low, high = self.clip
        return lambda row: [
            min(max(v * s + o, low), high) for v, (s, o) in zip(row, pairs, strict=True)
        ]


class _Head(Protocol):
    def run(self, x: Matrix, raw: Matrix) -> tuple[Indices, Matrix, npt.NDArray[np.bool_]]: ...


class VectorisedPredictor:
    """Preprocessing steps + one classifier head, all numpy; see the module docstring."""

    kind = "vectorised"

    def __init__(
        self,
        steps: Sequence[_Imputer | _MinMax],
        head: _Head,
        fallback: EstimatorPredictor,
    ) -> None:
        self._steps = tuple(steps)
        self._head = head
        self._fallback = fallback
        # One row through the same arithmetic in Python floats and a few numpy calls: a
        # request's single row costs a fifth of the array path's ~20 numpy calls.
        one = getattr(head, "one_row", None)
        self._one_steps = [step.one_row() for step in self._steps]
        self._one_head: Callable[[list[float]], tuple[int, list[float]] | None] | None = (
            one() if one is not None else None
        )

    def predict_one(self, row: list[float]) -> tuple[int, list[float]]:
        head = self._one_head
        if head is not None:
            z = row
            for step in self._one_steps:
                z = step(z)
            decided = head(z)
            if decided is not None:
                return decided
        indices, proba = self.predict(np.array([row], dtype=np.float64))
        return int(indices[0]), proba[0].tolist()

    def predict(self, x: Matrix) -> tuple[Indices, Matrix]:
        z = x
        for step in self._steps:
            z = step.apply(z)
        indices, proba, undecided = self._head.run(z, x)
        if _ANY(undecided, axis=None):
            rows = np.flatnonzero(undecided)
            exact_indices, exact_proba = self._fallback.predict(x[rows])
            indices[rows] = exact_indices
            proba[rows] = exact_proba
        return indices, proba


class _KNNHead:
    def __init__(self, fit_x: Matrix, y: Indices, k: int, n_classes: int) -> None:
        self._fit_x = np.ascontiguousarray(fit_x, dtype=np.float64)
        self._y = y
        self._k = k
        self._n_classes = n_classes
        fit_sq = np.einsum("ij,ij->i", self._fit_x, self._fit_x)
        self._fit_norm_max = float(np.max(fit_sq))
        self._fit_sq = fit_sq
        self._fit_minus2 = -2.0 * self._fit_x
        self._chunk = max(1, _KNN_CHUNK_ELEMENTS // max(1, self._fit_x.size))

    def one_row(self) -> Callable[[list[float]], tuple[int, list[float]] | None]:
        """A one-row KNN: (index, probabilities), or None when the row is undecided (a tie)."""
        k, n_classes = self._k, self._n_classes
        # Distances up to |z|^2 in one product: [-2f, |f|^2] @ [z, 1].
        weights = np.ascontiguousarray(np.hstack([self._fit_minus2, self._fit_sq[:, None]]))
        labels = self._y.tolist()
        n_fit = len(labels)
        norm_max = self._fit_norm_max

        def run(z: list[float]) -> tuple[int, list[float]] | None:
            d2 = weights @ np.array([*z, 1.0])
            if n_fit > k:
                part = d2.argpartition((k - 1, k))
                gap = float(d2[part[k]] - d2[part[k - 1]])
                if gap <= _KNN_TIE_RTOL * (1.0 + sum(v * v for v in z) + norm_max):
                    return None
                nearest = part[:k].tolist()
            else:
                nearest = list(range(n_fit))
            counts = [0] * n_classes
            for i in nearest:
                counts[labels[i]] += 1
            # As KNeighborsClassifier: counts / counts.sum(), mode = the first maximum.
            return counts.index(max(counts)), [c / len(nearest) for c in counts]

        return run

    def run(self, x: Matrix, raw: Matrix) -> tuple[Indices, Matrix, npt.NDArray[np.bool_]]:
        n = x.shape[0]
        indices = np.empty(n, dtype=np.intp)
        proba = np.empty((n, self._n_classes), dtype=np.float64)
        undecided = np.zeros(n, dtype=np.bool_)
        if n == 1:
            self._run_one(x[0], indices, proba, undecided)
            return indices, proba, undecided
        for start in range(0, n, self._chunk):
            stop = min(n, start + self._chunk)
            self._run_chunk(
                x[start:stop], indices[start:stop], proba[start:stop], undecided[start:stop]
            )
        return indices, proba, undecided

    def _run_one(
        self,
        x: Matrix,
        indices: Indices,
        proba: Matrix,
        undecided: npt.NDArray[np.bool_],
    ) -> None:
        # One row is the common case: as few numpy calls as possible. Distances up to the
        # row's own |x|^2 (the same for every neighbour, so the order and gaps do not change)
        # as |f|^2 - 2 f.x, one matrix product; its rounding differs from the difference form
        # by ~1e-15, far below the tie tolerance, so every decided row has the same neighbours.
        k = self._k
        d2 = self._fit_sq + self._fit_minus2 @ x
        if d2.shape[0] > k:
            part = d2.argpartition((k - 1, k))
            kth, following = d2[part[k - 1 : k + 1]].tolist()
            undecided[0] = following - kth <= _KNN_TIE_RTOL * (1.0 + x @ x + self._fit_norm_max)
            nearest = part[:k]
        else:
            nearest = np.arange(d2.shape[0])
        counts = np.bincount(self._y[nearest], minlength=self._n_classes)
        # KNeighborsClassifier: counts / counts.sum() (= k: exact), mode = argmax's first max.
        proba[0] = counts / len(nearest)
        indices[0] = counts.argmax()

    def _run_chunk(
        self,
        x: Matrix,
        indices: Indices,
        proba: Matrix,
        undecided: npt.NDArray[np.bool_],
    ) -> None:
        k = self._k
        n = x.shape[0]
        diff = x[:, None, :] - self._fit_x[None, :, :]
        d2 = np.einsum("nmf,nmf->nm", diff, diff)
        rows = np.arange(n)[:, None]
        if d2.shape[1] > k:
            part = np.argpartition(d2, k, axis=1)
            nearest = part[:, :k]
            kth = d2[rows, nearest].max(axis=1)
            following = d2[np.arange(n), part[:, k]]
            scale = 1.0 + np.einsum("ij,ij->i", x, x) + self._fit_norm_max
            undecided |= (following - kth) <= _KNN_TIE_RTOL * scale
        else:
            nearest = np.broadcast_to(np.arange(d2.shape[1]), (n, d2.shape[1]))
        labels = self._y[nearest]
        counts = np.zeros((n, self._n_classes), dtype=np.float64)
        np.add.at(counts, (np.broadcast_to(rows, labels.shape), labels), 1.0)
        # KNeighborsClassifier: proba = counts / counts.sum(); predict = mode (lowest on ties),
        # which is argmax's first maximum.
        proba[...] = counts / counts.sum(axis=1)[:, None]
        indices[...] = np.argmax(counts, axis=1)


class _LogisticHead:
    def __init__(self, coef: Matrix, intercept: Matrix, n_classes: int) -> None:
        self._coef_t = coef.T
        self._intercept = intercept
        self._binary = n_classes <= 2

    def run(self, x: Matrix, raw: Matrix) -> tuple[Indices, Matrix, npt.NDArray[np.bool_]]:
        # As LinearClassifierMixin.decision_function / LogisticRegression.predict_proba.
        scores = x @ self._coef_t + self._intercept
        undecided = np.zeros(x.shape[0], dtype=np.bool_)
        if self._binary:
            from scipy.special import expit

            flat = scores.reshape(-1)
            indices = (flat > 0).astype(np.intp)
            p = expit(flat)
            return indices, np.stack([1 - p, p], axis=1), undecided
        indices = np.argmax(scores, axis=1).astype(np.intp)
        proba = scores.copy()
        proba -= np.max(proba, axis=1).reshape(-1, 1)
        np.exp(proba, out=proba)
        proba /= np.sum(proba, axis=1).reshape(-1, 1)
        return indices, proba, undecided


class _ForestHead:
    """One or many decision trees walked level by level, all trees and rows at once."""

    def __init__(self, trees: Sequence[Any], n_classes: int, average: bool) -> None:
        lefts, rights, features, thresholds, values, roots = [], [], [], [], [], []
        offset = 0
        for tree in trees:
            left = tree.children_left.astype(np.intp)
            right = tree.children_right.astype(np.intp)
            leaf = left == -1
            # Leaves point at themselves so the walk can run a fixed number of levels.
            own = np.arange(tree.node_count, dtype=np.intp) + offset
            lefts.append(np.where(leaf, own, left + offset))
            rights.append(np.where(leaf, own, right + offset))
            features.append(np.where(leaf, 0, tree.feature).astype(np.intp))
            thresholds.append(tree.threshold.astype(np.float64))
            values.append(np.asarray(tree.value, dtype=np.float64)[:, 0, :n_classes])
            roots.append(offset)
            offset += tree.node_count
        self._left = np.concatenate(lefts)
        self._right = np.concatenate(rights)
        self._feature = np.concatenate(features)
        self._threshold = np.concatenate(thresholds)
        self._value = np.concatenate(values)
        self._roots = np.asarray(roots, dtype=np.intp)
        self._depth = max(int(tree.max_depth) for tree in trees)
        self._average = average

    def run(self, x: Matrix, raw: Matrix) -> tuple[Indices, Matrix, npt.NDArray[np.bool_]]:
        n = x.shape[0]
        # Trees compare float32 features with float64 thresholds (sklearn's DTYPE).
        x32 = x.astype(np.float32)
        node = np.repeat(self._roots[:, None], n, axis=1)  # (trees, rows)
        cols = np.broadcast_to(np.arange(n), node.shape)
        for _ in range(self._depth):
            go_left = x32[cols, self._feature[node]] <= self._threshold[node]
            node = np.where(go_left, self._left[node], self._right[node])
        leaf_values = self._value[node]  # (trees, rows, classes)
        if self._average:
            # RandomForestClassifier.predict_proba: zeros, += each tree in order, /= n_trees.
            # cumsum is strictly sequential, unlike sum's pairwise reduction.
            proba = np.cumsum(leaf_values, axis=0)[-1]
            proba /= len(self._roots)
        else:
            proba = leaf_values[0].copy()
        indices = np.argmax(proba, axis=1).astype(np.intp)
        return indices, proba, np.zeros(n, dtype=np.bool_)


def compile_predictor(pipeline: Any, classes: Sequence[str]) -> tuple[Predictor, str]:
    """Return the fastest exact predictor for `pipeline` and a one-line reason for the choice."""
    fallback = EstimatorPredictor(pipeline, classes)
    try:
        steps, estimator = _split_pipeline(pipeline)
        pre = [_compile_step(step) for step in steps]
        head = _compile_head(estimator, len(classes))
    except _Unsupported as exc:
        return fallback, f"estimator path: {exc}"
    if [str(c) for c in estimator.classes_] != list(classes):
        return fallback, "estimator path: estimator classes differ from the metadata"
    return VectorisedPredictor(pre, head, fallback), f"vectorised {type(estimator).__name__}"


def self_check(fast: Predictor, exact: Predictor, x: Matrix) -> str | None:
    """Compare two predictors on `x`; return a description of the first difference, if any."""
    fast_idx, fast_proba = fast.predict(x)
    exact_idx, exact_proba = exact.predict(x)
    if not np.array_equal(fast_idx, exact_idx):
        row = int(np.flatnonzero(fast_idx != exact_idx)[0])
        return f"label differs on row {row} ({x[row].tolist()})"
    if fast_proba.shape != exact_proba.shape or not np.array_equal(fast_proba, exact_proba):
        return "probabilities differ"
    return None


class _Unsupported(Exception):
    pass


def _split_pipeline(pipeline: Any) -> tuple[list[Any], Any]:
    steps = getattr(pipeline, "steps", None)
    if not isinstance(steps, list) or not steps:
        return [], pipeline
    return [step for _, step in steps[:-1]], steps[-1][1]


def _compile_step(step: Any) -> _Imputer | _MinMax:
    name = type(step).__name__
    if name == "SimpleImputer":
        stats = np.asarray(step.statistics_, dtype=np.float64)
        if getattr(step, "add_indicator", False) or not np.isfinite(stats).all():
            raise _Unsupported("SimpleImputer with indicators or empty features")
        return _Imputer(stats)
    if name == "MinMaxScaler":
        clip = tuple(map(float, step.feature_range)) if step.clip else None
        return _MinMax(
            np.asarray(step.scale_, dtype=np.float64),
            np.asarray(step.min_, dtype=np.float64),
            clip,  # type: ignore[arg-type]
        )
    raise _Unsupported(f"pipeline step {name} has no vectorised form")


def _compile_head(estimator: Any, n_classes: int) -> _Head:
    name = type(estimator).__name__
    if name == "KNeighborsClassifier":
        metric_ok = (estimator.metric == "minkowski" and estimator.p == 2) or (
            estimator.metric == "euclidean"
        )
        if estimator.weights != "uniform" or not metric_ok or estimator.metric_params:
            raise _Unsupported("KNN with non-uniform weights or a non-euclidean metric")
        y = np.asarray(estimator._y)
        if y.ndim != 1:
            raise _Unsupported("multi-output KNN")
        return _KNNHead(estimator._fit_X, y.astype(np.intp), estimator.n_neighbors, n_classes)
    if name == "LogisticRegression":
        return _LogisticHead(
            np.asarray(estimator.coef_, dtype=np.float64),
            np.asarray(estimator.intercept_, dtype=np.float64),
            n_classes,
        )
    if name == "DecisionTreeClassifier":
        _check_tree_outputs(estimator)
        return _ForestHead([estimator.tree_], n_classes, average=False)
    if name == "RandomForestClassifier":
        if estimator.n_jobs not in (None, 1):
            raise _Unsupported("forest with n_jobs > 1 sums trees in a nondeterministic order")
        _check_tree_outputs(estimator)
        return _ForestHead([e.tree_ for e in estimator.estimators_], n_classes, average=True)
    raise _Unsupported(f"{name} has no vectorised form")


def _check_tree_outputs(estimator: Any) -> None:
    if getattr(estimator, "n_outputs_", 1) != 1:
        raise _Unsupported("multi-output trees")
