"""The artifact bundle and `modelops-trainer train --emit-artifact` (the artifact channel)."""

import base64
import json
import lzma

import pytest

from modelops_contract import bundle
from modelops_contract.artifact import ArtifactError, verify
from modelops_trainer.cli import main
from modelops_trainer.train import RESULT_LIMIT_BYTES


def _train(tmp_path, capsys, *extra):
    result = tmp_path / "result.json"
    code = main(
        [
            "train",
            "--version",
            "v1",
            "--output-dir",
            str(tmp_path / "models"),
            "--result-file",
            str(result),
            "--emit-artifact",
            *extra,
        ]
    )
    out = capsys.readouterr().out
    return code, out, json.loads(result.read_text())


@pytest.mark.parametrize("algorithm", ["knn", "logistic_regression", "decision_tree"])
def test_small_models_ride_in_the_termination_message(tmp_path, capsys, algorithm):
    code, out, summary = _train(tmp_path, capsys, "--algorithm", algorithm)
    assert code == 0
    text = (tmp_path / "result.json").read_bytes()
    assert len(text) <= RESULT_LIMIT_BYTES
    metadata, model = bundle.unpack(summary[bundle.SUMMARY_KEY])
    assert summary["modelSha256"] == metadata["model_sha256"]
    assert summary["accuracy"] == metadata["metrics"]["test_accuracy"]
    assert model == (tmp_path / "models" / "v1" / "model.params").read_bytes()
    # The same bundle is also the framed log line.
    assert bundle.find_in_log(out) == summary[bundle.SUMMARY_KEY]


def test_big_model_goes_to_the_log_only(tmp_path, capsys):
    code, out, summary = _train(tmp_path, capsys, "--algorithm", "random_forest")
    assert code == 0
    assert bundle.SUMMARY_KEY not in summary
    assert summary["status"] == "Succeeded" and "classes" in summary
    packed = bundle.find_in_log("2026-01-01T00:00:00Z noise\n" + out)
    assert packed is not None
    metadata, model = bundle.unpack(packed)
    target = bundle.write(metadata, model, tmp_path / "copy" / "v1")
    # Byte-identical to what the trainer wrote, and verifiable.
    original = tmp_path / "models" / "v1"
    assert (target / "metadata.json").read_bytes() == (original / "metadata.json").read_bytes()
    assert verify(target)["model_sha256"] == summary["modelSha256"]


def test_without_the_flag_nothing_changes(tmp_path, capsys):
    result = tmp_path / "r.json"
    assert (
        main(
            [
                "train",
                "--version",
                "v1",
                "--output-dir",
                str(tmp_path),
                "--result-file",
                str(result),
            ]
        )
        == 0
    )
    assert bundle.LOG_PREFIX not in capsys.readouterr().out
    assert bundle.SUMMARY_KEY not in json.loads(result.read_text())


def test_damaged_bundles_are_refused(tmp_path, capsys):
    _, _, summary = _train(tmp_path, capsys)
    packed = summary[bundle.SUMMARY_KEY]
    with pytest.raises(ArtifactError, match="damaged"):
        bundle.unpack(packed[:-20])
    with pytest.raises(ArtifactError, match="damaged"):
        bundle.unpack("not base85 \x00")
    metadata, model = bundle.unpack(packed)

    meta = json.dumps({**metadata, "model_sha256": "0" * 64}).encode()
    forged = base64.b85encode(lzma.compress(len(meta).to_bytes(4, "big") + meta + model))
    with pytest.raises(ArtifactError, match="corrupt"):
        bundle.unpack(forged.decode())


def test_attach_keeps_the_full_summary_when_it_fits():
    summary = {"status": "Succeeded", "version": "v1", "classes": ["a" * 60], "accuracy": 1.0}
    assert bundle.attach(summary, "x" * 10, 4096)["classes"] == ["a" * 60]
    slim = bundle.attach(summary, "x" * 4000, 4096)
    assert "classes" not in slim and slim["accuracy"] == 1.0
    assert bundle.attach(summary, "x" * 5000, 4096) == summary
    assert bundle.find_in_log("no frame here") is None
