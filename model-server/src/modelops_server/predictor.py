"""Predictors: turn a feature matrix into class indices and class probabilities.

scikit-learn spends ~0.2-10 ms of fixed overhead per ``predict`` call (input validation,
dispatch, joblib for forests) whatever the batch size, which caps a one-row-per-request API at
a few hundred requests per second. The server therefore never loads an estimator: it builds
the fitted pipeline's arithmetic in plain numpy from the artifact's parameter file
(:mod:`modelops_contract.params`, written by ``modelops_trainer.export``), doing the same
floating-point operations in the same order as scikit-learn, so labels and probabilities are
bit-for-bit those of the trained pipeline (the test suite checks this on all Iris rows and
10,000 random points per algorithm; the server repeats it on the probe rows recorded in the
file before it serves). KNN is the one exception, because its answer near ties depends on how
scikit-learn's tree orders equal distances: rows whose k-th neighbour is tied with the next one,
and KNN configurations without a vectorised form, are answered by scikit-learn's own
``KNeighborsClassifier`` rebuilt from the stored training points (fitting a KNN only stores
them, so the rebuilt model is the trained one).
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


class InvalidParams(ValueError):
    """The parameter file does not describe a model this server can run; says what is off."""


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
    kind: str

    def prepare(self) -> None: ...

    def run(self, x: Matrix) -> tuple[Indices, Matrix, npt.NDArray[np.bool_]]: ...

    def exact(self, x: Matrix) -> tuple[Indices, Matrix]: ...


class VectorisedPredictor:
    """Preprocessing steps + one classifier head, all numpy; see the module docstring."""

    def __init__(self, steps: Sequence[_Imputer | _MinMax], head: _Head) -> None:
        self._steps = tuple(steps)
        self._head = head
        self.kind = head.kind
        # One row through the same arithmetic in Python floats and a few numpy calls: a
        # request's single row costs a fifth of the array path's ~20 numpy calls.
        one = getattr(head, "one_row", None)
        self._one_steps = [step.one_row() for step in self._steps]
        self._one_head: Callable[[list[float]], tuple[int, list[float]] | None] | None = (
            one() if one is not None else None
        )

    def prepare(self) -> None:
        """Build what a later request could need (scikit-learn's KNN), not on that request."""
        self._head.prepare()

    def disable_one_row(self) -> None:
        """Answer single rows through the array path too (the start-up check found a gap)."""
        self._one_head = None

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
        indices, proba, undecided = self._head.run(z)
        if _ANY(undecided, axis=None):
            rows = np.flatnonzero(undecided)
            exact_indices, exact_proba = self._head.exact(z[rows])
            indices[rows] = exact_indices
            proba[rows] = exact_proba
        return indices, proba


class _KNNExact:
    """scikit-learn's KNeighborsClassifier rebuilt from the stored points, built on first use."""

    def __init__(self, fit_x: Matrix, y: Indices, params: dict[str, Any]) -> None:
        self._fit_x = fit_x
        self._y = y
        self._params = params
        self._model: Any = None

    def prepare(self) -> None:
        if self._model is None:
            from sklearn.neighbors import KNeighborsClassifier

            self._model = KNeighborsClassifier(**self._params).fit(self._fit_x, self._y)

    def predict(self, x: Matrix) -> tuple[Indices, Matrix]:
        self.prepare()
        proba = np.asarray(self._model.predict_proba(x), dtype=np.float64)
        return np.asarray(self._model.predict(x), dtype=np.intp), proba


class _KNNHead:
    def __init__(self, fit_x: Matrix, y: Indices, n_classes: int, params: dict[str, Any]) -> None:
        self._fit_x = np.ascontiguousarray(fit_x, dtype=np.float64)
        self._y = y
        self._k = int(params["n_neighbors"])
        self._n_classes = n_classes
        fit_sq = np.einsum("ij,ij->i", self._fit_x, self._fit_x)
        self._fit_norm_max = float(np.max(fit_sq))
        self._fit_sq = fit_sq
        self._fit_minus2 = -2.0 * self._fit_x
        self._chunk = max(1, _KNN_CHUNK_ELEMENTS // max(1, self._fit_x.size))
        self._exact = _KNNExact(self._fit_x, y, params)
        metric_ok = (params.get("metric") == "minkowski" and params.get("p") == 2) or (
            params.get("metric") == "euclidean"
        )
        self.vectorised = params.get("weights") == "uniform" and metric_ok
        self.vectorised = self.vectorised and not params.get("metric_params")
        self.kind = "vectorised" if self.vectorised else "estimator"

    def exact(self, x: Matrix) -> tuple[Indices, Matrix]:
        return self._exact.predict(x)

    def prepare(self) -> None:
        self._exact.prepare()

    def one_row(self) -> Callable[[list[float]], tuple[int, list[float]] | None] | None:
        """A one-row KNN: (index, probabilities), or None when the row is undecided (a tie);
        no one-row form at all when scikit-learn's KNN answers every row."""
        if not self.vectorised:
            return None
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

    def run(self, x: Matrix) -> tuple[Indices, Matrix, npt.NDArray[np.bool_]]:
        n = x.shape[0]
        indices = np.empty(n, dtype=np.intp)
        proba = np.empty((n, self._n_classes), dtype=np.float64)
        if not self.vectorised:  # every row goes to scikit-learn's own KNN
            return indices, proba, np.ones(n, dtype=np.bool_)
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


class _NoFallback:
    kind = "vectorised"

    def prepare(self) -> None:
        pass

    def exact(self, x: Matrix) -> tuple[Indices, Matrix]:
        raise AssertionError("this head decides every row itself")


class _LogisticHead(_NoFallback):
    def __init__(self, coef: Matrix, intercept: Matrix, n_classes: int) -> None:
        self._coef_t = coef.T
        self._intercept = intercept
        self._binary = n_classes <= 2

    def run(self, x: Matrix) -> tuple[Indices, Matrix, npt.NDArray[np.bool_]]:
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


class _ForestHead(_NoFallback):
    """One or many decision trees walked level by level, all trees and rows at once."""

    def __init__(self, arrays: dict[str, Any], depth: int, average: bool) -> None:
        left, right = arrays["trees.left"], arrays["trees.right"]
        leaf = left == -1
        # Leaves point at themselves so the walk can run a fixed number of levels.
        own = np.arange(left.shape[0], dtype=np.intp)
        self._left = np.where(leaf, own, left).astype(np.intp)
        self._right = np.where(leaf, own, right).astype(np.intp)
        self._feature = np.where(leaf, 0, arrays["trees.feature"]).astype(np.intp)
        self._threshold = arrays["trees.threshold"]
        self._value = arrays["trees.value"]
        self._roots = arrays["trees.roots"].astype(np.intp)
        self._depth = depth
        self._average = average

    def run(self, x: Matrix) -> tuple[Indices, Matrix, npt.NDArray[np.bool_]]:
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


def predictor_from_params(
    model: dict[str, Any], arrays: dict[str, Any], n_features: int
) -> tuple[VectorisedPredictor, str]:
    """The predictor a parameter file describes, and a one-line reason for its kind.

    `arrays` maps names to numpy arrays (already shaped); every shape and index is checked
    against the description first, so a damaged file fails here, not on a request.
    """
    classes = model.get("classes")
    if not isinstance(classes, list) or len(classes) < 2:
        raise InvalidParams("it lists fewer than two classes")
    n_classes = len(classes)
    steps = _steps(model, arrays, n_features)
    desc = model.get("head")
    kind = desc.get("type") if isinstance(desc, dict) else None
    head: _Head
    if kind == "knn" and isinstance(desc, dict):
        head = _knn_head(desc, arrays, n_classes, n_features)
    elif kind == "linear":
        head = _linear_head(arrays, n_classes, n_features)
    elif kind == "trees" and isinstance(desc, dict):
        head = _forest_head(desc, arrays, n_classes, n_features)
    else:
        raise InvalidParams(
            f"its head is not a classifier this server knows (type {str(kind)[:32]!r}; "
            "knn, linear or trees)"
        )
    predictor = VectorisedPredictor(steps, head)
    if head.kind == "estimator":
        reason = "estimator path: scikit-learn's KNN (no vectorised form for these hyperparameters)"
        return predictor, reason
    return predictor, f"vectorised {kind}"


def self_check(fast: Predictor, exact: tuple[Indices, Matrix], x: Matrix) -> str | None:
    """Compare a predictor's answers on `x` with known ones; describe the first difference."""
    fast_idx, fast_proba = fast.predict(x)
    exact_idx, exact_proba = exact
    if not np.array_equal(fast_idx, exact_idx):
        row = int(np.flatnonzero(fast_idx != exact_idx)[0])
        return f"label differs on row {row} ({x[row].tolist()})"
    if fast_proba.shape != exact_proba.shape or not np.array_equal(fast_proba, exact_proba):
        return "probabilities differ"
    return None


def _shape(arrays: dict[str, Any], name: str, shape: tuple[int | None, ...], dtype: str) -> Any:
    array = arrays.get(name)
    if array is None:
        raise InvalidParams(f"array {name} is missing")
    if array.dtype != np.dtype(dtype) or array.ndim != len(shape):
        raise InvalidParams(f"array {name} has type {array.dtype} and {array.ndim} dimensions")
    if any(want is not None and got != want for got, want in zip(array.shape, shape, strict=True)):
        raise InvalidParams(f"array {name} has shape {list(array.shape)}, not {list(shape)}")
    if dtype == "<f8" and not np.isfinite(array).all() and name != "trees.threshold":
        raise InvalidParams(f"array {name} holds NaN or infinite values")
    return array


def _steps(model: dict[str, Any], arrays: dict[str, Any], n: int) -> list[_Imputer | _MinMax]:
    clip = (model.get("scaler") or {}).get("clip")
    if clip is not None and (
        not isinstance(clip, list) or len(clip) != 2 or not all(isinstance(c, float) for c in clip)
    ):
        raise InvalidParams("its scaler clip range is not two numbers")
    return [
        _Imputer(_shape(arrays, "imputer.statistics", (n,), "<f8")),
        _MinMax(
            _shape(arrays, "scaler.scale", (n,), "<f8"),
            _shape(arrays, "scaler.offset", (n,), "<f8"),
            (clip[0], clip[1]) if clip else None,
        ),
    ]


def _knn_head(desc: dict[str, Any], arrays: dict[str, Any], c: int, n: int) -> _KNNHead:
    fit_x = _shape(arrays, "knn.fit_x", (None, n), "<f8")
    y = _shape(arrays, "knn.y", (fit_x.shape[0],), "<i8")
    params = desc.get("estimator")
    if not isinstance(params, dict):
        raise InvalidParams("its knn has no hyperparameters")
    k = params.get("n_neighbors")
    if not isinstance(k, int) or not 1 <= k <= fit_x.shape[0]:
        raise InvalidParams(f"its knn n_neighbors {k!r} is not between 1 and the points stored")
    if y.size and (y.min() < 0 or y.max() >= c or len(set(y.tolist())) != c):
        raise InvalidParams("its knn labels do not cover exactly its classes")
    return _KNNHead(fit_x, y.astype(np.intp), c, params)


def _linear_head(arrays: dict[str, Any], c: int, n: int) -> _LogisticHead:
    rows = 1 if c == 2 else c
    coef = _shape(arrays, "linear.coef", (rows, n), "<f8")
    return _LogisticHead(coef, _shape(arrays, "linear.intercept", (rows,), "<f8"), c)


def _forest_head(desc: dict[str, Any], arrays: dict[str, Any], c: int, n: int) -> _ForestHead:
    left = _shape(arrays, "trees.left", (None,), "<i8")
    nodes = left.shape[0]
    found = {
        name: _shape(arrays, name, (nodes,), "<i8") for name in ("trees.right", "trees.feature")
    }
    threshold = _shape(arrays, "trees.threshold", (nodes,), "<f8")
    _shape(arrays, "trees.value", (nodes, c), "<f8")
    roots = _shape(arrays, "trees.roots", (None,), "<i8")
    depth = desc.get("max_depth")
    if not isinstance(depth, int) or not 0 <= depth <= nodes or not roots.size or not nodes:
        raise InvalidParams("its trees have no valid depth, root or node")
    for children in (left, found["trees.right"]):
        if ((children < -1) | (children >= nodes)).any():
            raise InvalidParams("its trees point at nodes that do not exist")
    if ((roots < 0) | (roots >= nodes)).any():
        raise InvalidParams("its trees start at nodes that do not exist")
    internal = left != -1
    if ((found["trees.feature"][internal] < 0) | (found["trees.feature"][internal] >= n)).any():
        raise InvalidParams("its trees split on features that do not exist")
    if not np.isfinite(threshold[internal]).all():
        raise InvalidParams("its trees have thresholds that are not numbers")
    return _ForestHead(arrays, depth, bool(desc.get("average")))
