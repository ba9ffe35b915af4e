"""Training, evaluation, determinism and atomic artifacts."""

import json
import os

import pytest

from modelops_contract.artifact import (
    ARTIFACT_FORMAT,
    ArtifactError,
    read_metadata,
    verify,
)
from modelops_contract.params import decode
from modelops_trainer.data import DataError
from modelops_trainer.pipeline import ParamError, algorithm_names, build_pipeline
from modelops_trainer.train import (
    RESULT_LIMIT_BYTES,
    TrainConfig,
    encode_summary,
    result_summary,
    train,
)

from .conftest import write_csv


def test_default_iris_model(tmp_path):
    result = train(TrainConfig(version="v1", output_dir=tmp_path))
    meta = result.metadata
    assert result.accuracy >= 0.9
    assert meta["format"] == ARTIFACT_FORMAT
    assert meta["algorithm"] == "knn"
    assert meta["params"]["n_neighbors"] == 5
    assert meta["classes"] == ["setosa", "versicolor", "virginica"]
    assert meta["features"] == ["sepal_length", "sepal_width", "petal_length", "petal_width"]
    assert meta["dataset"]["train_rows"] == 120 and meta["dataset"]["test_rows"] == 30
    assert set(meta["metrics"]) >= {
        "test_accuracy",
        "train_accuracy",
        "f1_macro",
        "per_class",
        "confusion_matrix",
    }
    matrix = meta["metrics"]["confusion_matrix"]
    assert sum(map(sum, matrix)) == 30
    assert meta["metrics"]["per_class"]["setosa"]["support"] == 10  # stratified split
    assert set(meta["libraries"]) == {"python", "scikit-learn", "numpy"}
    assert sorted(p.name for p in result.artifact.iterdir()) == ["metadata.json", "model.params"]
    model, arrays = decode((result.artifact / "model.params").read_bytes())
    assert model["kind"] == "modelops.dev/model-params/v1"
    assert model["head"]["type"] == "knn" and model["head"]["estimator"]["n_neighbors"] == 5
    assert arrays["knn.fit_x"].shape == (120, 4)  # the training split: what a KNN stores
    assert list(result.pipeline.named_steps) == ["imputer", "scaler", "classifier"]
    assert verify(result.artifact)["version"] == "v1"


@pytest.mark.parametrize("algorithm", algorithm_names())
def test_every_algorithm_trains_well_on_iris(tmp_path, algorithm):
    result = train(TrainConfig(version="v1", output_dir=tmp_path, algorithm=algorithm))
    assert result.accuracy >= 0.85
    assert result.metadata["algorithm"] == algorithm


def test_deterministic_apart_from_timestamps(tmp_path):
    first = train(TrainConfig(version="a", output_dir=tmp_path, algorithm="random_forest"))
    second = train(TrainConfig(version="b", output_dir=tmp_path, algorithm="random_forest"))
    a, b = dict(first.metadata), dict(second.metadata)
    for meta in (a, b):
        meta.pop("created_at")
        meta.pop("version")
    assert a == b
    assert (first.artifact / "model.params").read_bytes() == (
        second.artifact / "model.params"
    ).read_bytes()


def test_seed_changes_the_split(tmp_path):
    a = train(TrainConfig(version="a", output_dir=tmp_path, seed=1))
    b = train(TrainConfig(version="b", output_dir=tmp_path, seed=2))
    assert a.metadata["dataset"]["seed"] == 1
    assert a.metadata["model_sha256"] != b.metadata["model_sha256"]


def test_hyperparameters_are_recorded(tmp_path):
    result = train(TrainConfig(version="v1", output_dir=tmp_path, params={"n_neighbors": 3}))
    assert result.metadata["params"]["n_neighbors"] == 3


@pytest.mark.parametrize(
    ("algorithm", "params", "message"),
    [
        ("xgboost", {}, "unknown algorithm 'xgboost'; choose one of"),
        ("knn", {"n_neighbours": 3}, "knn has no hyperparameter(s) 'n_neighbours'"),
        ("knn", {"n_neighbors": 0}, "invalid knn hyperparameter"),
        ("knn", {"n_neighbors": "five"}, "invalid knn hyperparameter"),
        ("knn", {"weights": "heavy"}, "invalid knn hyperparameter"),
        ("random_forest", {"n_estimators": -1}, "invalid random_forest hyperparameter"),
        ("logistic_regression", {"random_state": 3}, "has no hyperparameter(s) 'random_state'"),
    ],
)
def test_bad_hyperparameters(algorithm, params, message):
    with pytest.raises(ParamError) as info:
        build_pipeline(algorithm, params, seed=42)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_fit_time_error_is_a_parameter_error(tmp_path):
    # Valid for the estimator, impossible for the data: k larger than the training set.
    with pytest.raises(ParamError, match="training knn failed"):
        train(TrainConfig(version="v1", output_dir=tmp_path, params={"n_neighbors": 500}))
    assert not any(tmp_path.iterdir())


def test_existing_version_is_never_overwritten(tmp_path):
    first = train(TrainConfig(version="v1", output_dir=tmp_path))
    before = (first.artifact / "metadata.json").read_bytes()
    with pytest.raises(ArtifactError, match="already exists"):
        train(TrainConfig(version="v1", output_dir=tmp_path, params={"n_neighbors": 3}))
    assert (first.artifact / "metadata.json").read_bytes() == before


@pytest.mark.parametrize("version", ["V1", "-v1", "v1-", "v 1", "a" * 64, "", "v1/../x"])
def test_invalid_version_names(tmp_path, version):
    with pytest.raises(ArtifactError, match="is not valid"):
        train(TrainConfig(version=version, output_dir=tmp_path))


def test_bad_data_leaves_no_artifact(tmp_path):
    data = write_csv(tmp_path / "d.csv", [[1, 2, 3, 4, "a"]] * 12)
    out = tmp_path / "models"
    with pytest.raises(DataError):
        train(TrainConfig(version="v1", output_dir=out, dataset=str(data)))
    assert not out.exists() or not any(out.iterdir())


def test_crash_during_write_leaves_no_partial_artifact(tmp_path, monkeypatch):
    import modelops_trainer.artifact as artifact

    def exploding_fsync(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(artifact.os, "fsync", exploding_fsync)
    with pytest.raises(OSError, match="No space"):
        train(TrainConfig(version="v1", output_dir=tmp_path))
    monkeypatch.setattr(artifact.os, "fsync", os.fsync)
    assert list(tmp_path.iterdir()) == []


def test_unsplittable_dataset(tmp_path):
    rows = [[5.0 + i, 3.0, 1.5, 0.2, "a"] for i in range(11)] + [[7.0, 3.0, 5.0, 2.0, "b"]]
    data = write_csv(tmp_path / "d.csv", rows)
    with pytest.raises(DataError, match="cannot be split"):
        train(TrainConfig(version="v1", output_dir=tmp_path / "m", dataset=str(data)))


def test_corrupt_artifact_is_detected(tmp_path):
    result = train(TrainConfig(version="v1", output_dir=tmp_path))
    model = result.artifact / "model.params"
    model.chmod(0o644)
    model.write_bytes(model.read_bytes()[:-10] + b"0123456789")
    with pytest.raises(ArtifactError, match="is corrupt"):
        verify(result.artifact)


def test_foreign_metadata_is_rejected(tmp_path):
    (tmp_path / "metadata.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(ArtifactError, match="not a modelops model artifact"):
        read_metadata(tmp_path)


def test_result_summary_is_compact(tmp_path):
    result = train(TrainConfig(version="v1", output_dir=tmp_path))
    text = encode_summary(result_summary(result))
    assert len(text.encode()) <= RESULT_LIMIT_BYTES
    summary = json.loads(text)
    assert summary["status"] == "Succeeded"
    assert summary["accuracy"] == result.accuracy
    assert summary["modelSha256"] == result.metadata["model_sha256"]
