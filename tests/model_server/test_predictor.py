"""Exactness: the server's predictors give the trained pipeline's labels and probabilities,
bit for bit.

"Identical" means: the same input array handed to the fitted pipeline's own
predict/predict_proba and to the predictor the server builds from the artifact's parameter file
gives equal arrays (np.array_equal, no tolerance).
"""

from __future__ import annotations

import numpy as np
import pytest

from modelops_contract.params import decode
from modelops_server.model import load_model, to_numpy
from modelops_server.predictor import predictor_from_params, self_check
from modelops_trainer.data import load_dataset
from modelops_trainer.export import export_model
from modelops_trainer.pipeline import build_pipeline

ALGORITHMS = ("knn", "logistic_regression", "random_forest", "decision_tree")
LOW = np.array([4.3, 2.0, 1.0, 0.1])
HIGH = np.array([7.9, 4.4, 6.9, 2.5])


@pytest.fixture(scope="module")
def iris_rows() -> np.ndarray:
    rows = load_dataset().features
    assert rows.shape == (150, 4)
    return rows


@pytest.fixture(scope="module")
def random_rows() -> np.ndarray:
    # Uniform over the seed load tester's ranges, and a wider box around them.
    rng = np.random.default_rng(7)
    inside = rng.uniform(LOW, HIGH, size=(8000, 4))
    around = rng.uniform(0.01, 12.0, size=(2000, 4))
    return np.vstack([inside, around])


def expected(pipeline, x):
    labels = pipeline.predict(x)
    proba = pipeline.predict_proba(x)
    return [str(v) for v in labels], proba


def served(model, x):
    indices, proba = model.predictor.predict(x.copy())
    return [model.classes[i] for i in indices], proba


def compiled(pipeline, classes):
    """What the server builds from the parameter file the trainer writes for `pipeline`."""
    model, raw = decode(export_model(pipeline, classes))
    layout = model.get("layout") or {}
    arrays = {n: to_numpy(a, layout.get(n) == "F") for n, a in raw.items()}
    return predictor_from_params(model, arrays, 4)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("rows", ["iris_rows", "random_rows"])
def test_vectorised_equals_estimator(artifacts, pipelines, algorithm, rows, request):
    x = request.getfixturevalue(rows)
    model = load_model(artifacts[algorithm])
    assert model.predictor.kind == "vectorised", model.predictor_reason
    labels, proba = served(model, x)
    exp_labels, exp_proba = expected(pipelines[algorithm], x)
    assert labels == exp_labels
    assert proba.dtype == exp_proba.dtype
    assert np.array_equal(proba, exp_proba)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_vectorised_equals_estimator_row_by_row(
    artifacts, pipelines, iris_rows, random_rows, algorithm
):
    # One-row requests are the common case; BLAS may round a 1-row product differently from a
    # batch, so compare against the estimator called on the same single row.
    model = load_model(artifacts[algorithm])
    x = np.vstack([iris_rows[::2], random_rows[::200]])  # 125 rows: a forest call is slow
    for row in x:
        one = row[None, :]
        labels, proba = served(model, one)
        exp_labels, exp_proba = expected(pipelines[algorithm], one)
        assert labels == exp_labels
        assert np.array_equal(proba, exp_proba), row


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_one_row_path_equals_estimator(artifacts, pipelines, iris_rows, random_rows, algorithm):
    # predict_one (the path of every one-row request) on all 150 Iris rows and 2000 random
    # ones; KNN's runs in Python floats and one matrix product, the others through predict.
    model = load_model(artifacts[algorithm])
    x = np.vstack([iris_rows, random_rows[:: (5 if algorithm == "knn" else 50)]])
    for row in x:
        index, proba = model.predictor.predict_one(row.tolist())
        exp_labels, exp_proba = expected(pipelines[algorithm], row[None, :])
        assert model.classes[index] == exp_labels[0], row
        assert proba == exp_proba[0].tolist(), row


def test_one_row_knn_ties_go_to_the_estimator(artifacts, pipelines):
    model = load_model(artifacts["knn"])
    z_step = model.predictor._one_steps  # type: ignore[attr-defined]
    assert z_step, "the KNN pipeline has preprocessing steps"
    train = pipelines["knn"][:-1].transform(load_dataset().features)
    # A training point itself: its neighbours include exact duplicates in Iris, so the k-th
    # and (k+1)-th distances tie; the one-row head must defer to the estimator.
    head = model.predictor._one_head  # type: ignore[attr-defined]
    undecided = [i for i, z in enumerate(train.tolist()) if head(z) is None]
    assert undecided, "no tied row found among the training rows"
    row = load_dataset().features[undecided[0]]
    index, proba = model.predictor.predict_one(row.tolist())
    assert proba == pipelines["knn"].predict_proba(row[None, :])[0].tolist()
    assert model.classes[index] == str(pipelines["knn"].predict(row[None, :])[0])


def test_knn_ties_go_to_the_estimator(artifacts, pipelines):
    """A query equidistant from its 5th and 6th neighbours is decided by scikit-learn."""
    model = load_model(artifacts["knn"])
    pipeline = pipelines["knn"]
    knn = pipeline.steps[-1][1]
    scaler = pipeline.steps[1][1]
    fit_x = knn._fit_X
    # Midpoints between pairs of training points are the classic tie generators; keep those
    # the fast path flags as undecided and check they still match.
    rng = np.random.default_rng(3)
    pairs = rng.integers(0, len(fit_x), size=(3000, 2))
    scaled = (fit_x[pairs[:, 0]] + fit_x[pairs[:, 1]]) / 2
    x = (scaled - scaler.min_) / scaler.scale_
    x = x[(x > 0).all(axis=1)]
    head = model.predictor._head  # type: ignore[attr-defined]
    _, _, undecided = head.run(pipeline[:-1].transform(x))
    assert undecided.any(), "expected some tied queries among pair midpoints"
    labels, proba = served(model, x)
    exp_labels, exp_proba = expected(pipeline, x)
    assert labels == exp_labels
    assert np.array_equal(proba, exp_proba)


@pytest.mark.parametrize(
    ("algorithm", "params"),
    [
        ("knn", {"weights": "distance"}),
        ("knn", {"metric": "manhattan"}),
    ],
)
def test_unsupported_configurations_use_the_estimator(algorithm, params):
    data = load_dataset()
    pipeline = build_pipeline(algorithm, params, seed=1).fit(data.features, data.labels)
    predictor, reason = compiled(pipeline, data.classes)
    assert predictor.kind == "estimator"
    assert reason.startswith("estimator path")
    labels = pipeline.predict(data.features)
    indices, proba = predictor.predict(data.features)
    assert [data.classes[i] for i in indices] == list(labels)
    assert np.array_equal(proba, pipeline.predict_proba(data.features))


def test_forest_with_parallel_jobs_is_summed_in_tree_order(iris_rows):
    # n_jobs > 1 makes scikit-learn add the trees up in whatever order its threads finish;
    # the parameter file is served with the sequential order, i.e. n_jobs=1's answers exactly.
    data = load_dataset()
    pipeline = build_pipeline("random_forest", {"n_jobs": 2}, seed=1)
    pipeline.fit(data.features, data.labels)
    predictor, _ = compiled(pipeline, data.classes)
    assert predictor.kind == "vectorised"
    pipeline.steps[-1][1].set_params(n_jobs=1)
    indices, proba = predictor.predict(iris_rows)
    assert [data.classes[i] for i in indices] == list(pipeline.predict(iris_rows))
    assert np.array_equal(proba, pipeline.predict_proba(iris_rows))


@pytest.mark.parametrize("algorithm", ["knn", "logistic_regression", "decision_tree"])
def test_other_hyperparameters_stay_exact(algorithm, random_rows):
    params = {
        "knn": {"n_neighbors": 1, "algorithm": "brute"},
        "logistic_regression": {"C": 0.05},
        "decision_tree": {"max_depth": 3, "criterion": "entropy"},
    }[algorithm]
    data = load_dataset()
    pipeline = build_pipeline(algorithm, params, seed=5).fit(data.features, data.labels)
    predictor, _ = compiled(pipeline, data.classes)
    assert predictor.kind == "vectorised"
    indices, proba = predictor.predict(random_rows)
    assert [data.classes[i] for i in indices] == list(pipeline.predict(random_rows))
    assert np.array_equal(proba, pipeline.predict_proba(random_rows))


def test_binary_logistic_regression_is_exact(random_rows):
    data = load_dataset()
    keep = data.labels != "setosa"
    x, y = data.features[keep], data.labels[keep]
    pipeline = build_pipeline("logistic_regression", {}, seed=0).fit(x, y)
    classes = sorted(set(y))
    predictor, _ = compiled(pipeline, classes)
    assert predictor.kind == "vectorised"
    indices, proba = predictor.predict(random_rows)
    assert [classes[i] for i in indices] == list(pipeline.predict(random_rows))
    assert np.array_equal(proba, pipeline.predict_proba(random_rows))


def test_self_check_catches_a_wrong_fast_path(artifacts, pipelines, iris_rows):
    model = load_model(artifacts["knn"])
    exact = expected(pipelines["knn"], iris_rows)
    index = {c: i for i, c in enumerate(model.classes)}
    known = (np.array([index[c] for c in exact[0]]), exact[1])
    assert self_check(model.predictor, known, iris_rows) is None

    class OffByOne:
        kind = "vectorised"

        def predict(self, x):
            indices, proba = model.predictor.predict(x)
            return (indices + 1) % 3, proba

    assert "label differs" in (self_check(OffByOne(), known, iris_rows) or "")


def test_parameter_file_round_trip(artifacts, pipelines, tmp_path, iris_rows):
    # The predictor is built from the file's bytes alone: a copy behaves the same.
    data = load_dataset()
    blob = export_model(pipelines["random_forest"], data.classes)
    copy = tmp_path / "copy.params"
    copy.write_bytes(blob)
    assert copy.read_bytes() == (artifacts["random_forest"] / "model.params").read_bytes()
    predictor, _ = compiled(pipelines["random_forest"], data.classes)
    _, proba = predictor.predict(iris_rows)
    assert np.array_equal(proba, pipelines["random_forest"].predict_proba(iris_rows))
