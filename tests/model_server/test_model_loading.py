"""Loading an artifact: every way it can be wrong gives one actionable line."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import joblib
import pytest

from modelops_contract.artifact import METADATA_FILE, MODEL_FILE, file_sha256
from modelops_server.errors import ModelLoadError
from modelops_server.model import load_model


@pytest.fixture
def copy_of(knn_artifact: Path, tmp_path: Path):
    def make() -> Path:
        target = tmp_path / "v1"
        shutil.copytree(knn_artifact, target)
        return target

    return make


def rewrite_metadata(artifact: Path, **changes: object) -> None:
    path = artifact / METADATA_FILE
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


def load_error(path: Path) -> str:
    with pytest.raises(ModelLoadError) as caught:
        load_model(path)
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_loads_a_good_artifact(knn_artifact):
    model = load_model(knn_artifact)
    assert (model.name, model.version, model.algorithm) == ("iris", "knn", "knn")
    assert model.classes == ("setosa", "versicolor", "virginica")
    assert model.accuracy >= 0.85
    assert model.load_seconds > 0


def test_model_name_override(knn_artifact):
    assert load_model(knn_artifact, "flowers").name == "flowers"


def test_missing_directory(tmp_path):
    message = load_error(tmp_path / "absent")
    assert "does not exist" in message
    assert "modelops-trainer train" in message


def test_path_is_a_file(tmp_path):
    (tmp_path / "file").write_text("x")
    assert "not a directory" in load_error(tmp_path / "file")


def test_missing_metadata(copy_of):
    artifact = copy_of()
    (artifact / METADATA_FILE).unlink()
    assert "no model metadata" in load_error(artifact)


def test_garbage_metadata(copy_of):
    artifact = copy_of()
    (artifact / METADATA_FILE).write_text("{not json")
    assert "unreadable" in load_error(artifact)


def test_missing_model_file(copy_of):
    artifact = copy_of()
    (artifact / MODEL_FILE).unlink()
    assert "missing" in load_error(artifact)


def test_corrupt_model_file(copy_of):
    artifact = copy_of()
    with (artifact / MODEL_FILE).open("ab") as handle:
        handle.write(b"tampered")
    message = load_error(artifact)
    assert "corrupt" in message
    assert "retrain" in message


def test_unloadable_model_file(copy_of):
    artifact = copy_of()
    (artifact / MODEL_FILE).write_bytes(b"this is not a pickle")
    rewrite_metadata(artifact, model_sha256=file_sha256(artifact / MODEL_FILE))
    message = load_error(artifact)
    assert "cannot be loaded" in message
    assert "retrain" in message


def test_mismatched_features(copy_of):
    artifact = copy_of()
    rewrite_metadata(artifact, features=["a", "b", "c", "d"])
    assert "expects features" in load_error(artifact)


def test_mismatched_classes(copy_of):
    artifact = copy_of()
    rewrite_metadata(artifact, classes=["rose", "tulip", "daisy"])
    assert "inconsistent" in load_error(artifact)


def test_missing_accuracy(copy_of):
    artifact = copy_of()
    rewrite_metadata(artifact, metrics={})
    assert "test_accuracy" in load_error(artifact)


def test_not_a_classifier(copy_of):
    artifact = copy_of()
    joblib.dump({"weights": [1, 2, 3]}, artifact / MODEL_FILE)
    rewrite_metadata(artifact, model_sha256=file_sha256(artifact / MODEL_FILE))
    assert "not a classifier" in load_error(artifact)


def test_the_digest_the_operator_recorded_is_enforced(copy_of):
    artifact = copy_of()
    recorded = file_sha256(artifact / MODEL_FILE)
    assert load_model(artifact, expected_sha256=recorded).version == "knn"
    # Another model put in its place, with metadata that matches it: consistent, but not
    # the version that passed the gate.
    other = joblib.load(artifact / MODEL_FILE)
    other.steps[-1][1].n_neighbors = 1
    joblib.dump(other, artifact / MODEL_FILE)
    rewrite_metadata(artifact, model_sha256=file_sha256(artifact / MODEL_FILE))
    assert load_model(artifact).version == "knn"  # without a digest it would load
    with pytest.raises(ModelLoadError) as caught:
        load_model(artifact, expected_sha256=recorded)
    message = str(caught.value)
    assert f"not the {recorded[:12]}… this server was told to serve" in message
    assert "it is not served" in message


def test_server_exits_on_a_digest_mismatch(knn_artifact, run_cli):
    proc = run_cli(
        ["--artifact-dir", str(knn_artifact), "--port", "0"],
        {"MODELOPS_SERVER_MODEL_SHA256": "0" * 64},
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert lines[-1].startswith("modelops-server: error: model in ")
    assert "this server was told to serve" in lines[-1]
    proc = run_cli(["--artifact-dir", str(knn_artifact), "--model-sha256", "not-a-digest"], {})
    assert proc.returncode == 2
    assert "MODELOPS_SERVER_MODEL_SHA256: String should match pattern" in proc.stderr
