"""Loading an artifact: every way it can be wrong gives one actionable line."""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import pytest

from modelops_contract.artifact import METADATA_FILE, MODEL_FILE, file_sha256
from modelops_contract.params import Array, decode, encode
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
    (artifact / MODEL_FILE).write_bytes(b"this is not a parameter file")
    rewrite_metadata(artifact, model_sha256=file_sha256(artifact / MODEL_FILE))
    message = load_error(artifact)
    assert "not a modelops parameter file" in message
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


def rewrite_params(artifact: Path, change) -> None:
    """Edit the parameter file's description and arrays, keeping the checksum consistent."""
    model, arrays = decode((artifact / MODEL_FILE).read_bytes())
    change(model, arrays)
    (artifact / MODEL_FILE).write_bytes(encode(model, arrays))
    rewrite_metadata(artifact, model_sha256=file_sha256(artifact / MODEL_FILE))


def test_not_a_classifier(copy_of):
    artifact = copy_of()
    rewrite_params(artifact, lambda model, _: model["head"].update(type="svm"))
    assert "not a classifier" in load_error(artifact)


def test_the_digest_the_operator_recorded_is_enforced(copy_of, artifacts):
    artifact = copy_of()
    recorded = file_sha256(artifact / MODEL_FILE)
    assert load_model(artifact, expected_sha256=recorded).version == "knn"
    # Another good model put in its place, metadata and all: consistent, but not the
    # version that passed the gate.
    for name in (MODEL_FILE, METADATA_FILE):
        shutil.copy(artifacts["logistic_regression"] / name, artifact / name)
    assert load_model(artifact).algorithm == "logistic_regression"  # no digest: it loads
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


class Plant:
    """Unpickling this creates a marker file: what a hostile pickle could do instead."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def hostile_artifact(copy_of, marker: Path, legacy: bool) -> Path:
    artifact = copy_of()
    payload = pickle.dumps(Plant(marker))
    name = "model.joblib" if legacy else MODEL_FILE
    (artifact / MODEL_FILE).unlink()
    (artifact / name).write_bytes(payload)
    changes: dict[str, object] = {"model_sha256": file_sha256(artifact / name)}
    if legacy:
        changes |= {"format": "modelops.dev/model-artifact/v1", "model_file": "model.joblib"}
    rewrite_metadata(artifact, **changes)
    return artifact


def test_the_hostile_pickle_is_live(tmp_path):
    # The payload below really runs code when unpickled, so the refusals that follow mean it.
    marker = tmp_path / "ran"
    pickle.loads(pickle.dumps(Plant(marker)))
    assert marker.exists()


@pytest.mark.parametrize("legacy", [True, False], ids=["format-v1-joblib", "pickle-as-params"])
def test_a_pickled_model_never_runs_and_never_serves(copy_of, tmp_path, legacy, run_cli):
    marker = tmp_path / "ran"
    artifact = hostile_artifact(copy_of, marker, legacy)
    message = load_error(artifact)
    expected = "loading a pickle can run code" if legacy else "not a modelops parameter file"
    assert expected in message
    proc = run_cli(["--artifact-dir", str(artifact), "--port", "0"], {})
    assert proc.returncode == 2
    assert expected in proc.stderr
    assert not marker.exists(), "the pickle ran"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda m, a: a.update({"knn.y": Array("<i8", (3,), bytes(24))}), "knn.y has shape"),
        (lambda m, a: a.pop("scaler.scale"), "array scaler.scale is missing"),
        (lambda m, a: m["head"]["estimator"].update(n_neighbors=10**6), "n_neighbors"),
        (lambda m, a: m.update(layout=[1]), "layout is not a mapping"),
        (lambda m, a: m["probe"].update(rows="many"), "no probe rows"),
        (
            lambda m, a: a.update({"imputer.statistics": Array("<f8", (4,), b"\xff" * 32)}),
            "NaN or infinite",
        ),
    ],
)
def test_damaged_parameters_are_refused(copy_of, change, message):
    artifact = copy_of()
    rewrite_params(artifact, change)
    error = load_error(artifact)
    assert message in error and "retrain" in error


def test_a_tree_pointing_outside_itself_is_refused(artifacts, tmp_path):
    artifact = tmp_path / "tree"
    shutil.copytree(artifacts["decision_tree"], artifact)

    def change(model, arrays):
        left = arrays["trees.left"]
        values = bytearray(left.data)
        values[8:16] = (10**6).to_bytes(8, "little", signed=True)
        arrays["trees.left"] = Array("<i8", left.shape, bytes(values))

    rewrite_params(artifact, change)
    assert "point at nodes that do not exist" in load_error(artifact)


def test_answers_that_differ_from_the_recorded_probe_are_refused(copy_of):
    artifact = copy_of()

    def change(model, arrays):
        proba = arrays["probe.proba"]
        arrays["probe.proba"] = Array("<f8", proba.shape, bytes(len(proba.data)))

    rewrite_params(artifact, change)
    message = load_error(artifact)
    assert "does not reproduce the answers recorded when it was trained" in message
