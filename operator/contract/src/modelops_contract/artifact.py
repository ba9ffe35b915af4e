"""Model artifacts: one immutable directory per model version.

Layout of ``<root>/<version>/``:

- ``model.params``  the fitted model as plain numbers (:mod:`.params`: no code runs on load)
- ``metadata.json`` what it is and how good it is (``metrics.test_accuracy`` is the gate metric)

Format v1 (a pickled ``model.joblib``) is refused everywhere: loading a pickle can run code.

The trainer writes this format (``modelops_trainer.artifact.write_artifact``); the model server,
the operator and local mode read it through the functions here, the one place that knows it.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

ARTIFACT_FORMAT = "modelops.dev/model-artifact/v2"
# The pickle-based format of earlier releases: recognised only to refuse it clearly.
LEGACY_FORMATS = ("modelops.dev/model-artifact/v1",)
MODEL_FILE = "model.params"
METADATA_FILE = "metadata.json"
# The gate metric: metadata["metrics"][ACCURACY_METRIC].
ACCURACY_METRIC = "test_accuracy"
# DNS-label-like, as ModelDeployment.spec.modelVersion: it names Jobs, ConfigMaps and dirs.
VERSION_PATTERN = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,61}[a-z0-9])?$")


class ArtifactError(ValueError):
    """An artifact is missing, incomplete, corrupt or already exists."""


def check_version(version: str) -> str:
    if not VERSION_PATTERN.match(version):
        raise ArtifactError(
            f"model version {version!r} is not valid: use 1-63 lower-case letters, digits, "
            "'-' or '.', starting and ending with a letter or digit (e.g. v1, 2024-06-01)"
        )
    return version


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def model_file(metadata: Mapping[str, Any]) -> str:
    """The model's file name inside the artifact directory (fixed: never a path from data)."""
    recorded = metadata.get("model_file", MODEL_FILE)
    if recorded != MODEL_FILE:
        raise ArtifactError(
            f"model metadata names model file {str(recorded)[:64]!r}; this format has only "
            f"{MODEL_FILE!r}"
        )
    return MODEL_FILE


def metadata_text(metadata: Mapping[str, Any]) -> str:
    """``metadata.json`` exactly as the trainer writes it (a ConfigMap carries the same text)."""
    return json.dumps(dict(metadata), indent=2, sort_keys=True) + "\n"


def read_metadata(artifact: Path) -> dict[str, Any]:
    """Read ``metadata.json`` of an artifact directory (or the file itself)."""
    path = artifact / METADATA_FILE if artifact.is_dir() else artifact
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ArtifactError(f"no model metadata at {path}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"model metadata {path} is unreadable: {exc}") from None
    return check_metadata(data, str(path))


def check_metadata(data: Any, where: str) -> dict[str, Any]:
    """`data` if it is metadata of this artifact format; the error names `where` it came from."""
    if isinstance(data, dict) and data.get("format") in LEGACY_FORMATS:
        raise ArtifactError(
            f"{where} is a format {data['format'].rsplit('/', 1)[-1]} artifact (a pickled "
            "model.joblib), which is refused because loading a pickle can run code; retrain "
            "the version with this release's trainer"
        )
    if not isinstance(data, dict) or data.get("format") != ARTIFACT_FORMAT:
        raise ArtifactError(
            f"{where} is not a modelops model artifact (expected format {ARTIFACT_FORMAT!r})"
        )
    model_file(data)
    return data


def verify(artifact: Path) -> dict[str, Any]:
    """Check that the artifact is complete and its model file matches the recorded checksum."""
    metadata = read_metadata(artifact)
    model_path = artifact / model_file(metadata)
    if not model_path.is_file():
        raise ArtifactError(f"model file {model_path} is missing")
    actual = file_sha256(model_path)
    if actual != metadata.get("model_sha256"):
        raise ArtifactError(
            f"model file {model_path} is corrupt: sha256 {actual[:12]}… does not match the "
            f"recorded {str(metadata.get('model_sha256'))[:12]}…"
        )
    return metadata


def accuracy_of(metadata: Mapping[str, Any]) -> float:
    """The gate metric recorded in an artifact's metadata."""
    try:
        return float(metadata["metrics"][ACCURACY_METRIC])
    except (KeyError, TypeError, ValueError):
        raise ArtifactError(f"model metadata has no metrics.{ACCURACY_METRIC}") from None
