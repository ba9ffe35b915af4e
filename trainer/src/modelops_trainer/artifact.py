"""Model artifacts: one immutable directory per model version.

Layout of ``<root>/<version>/``:

- ``model.joblib``  the fitted scikit-learn pipeline
- ``metadata.json`` what it is and how good it is (see :func:`build_metadata` in train.py)

The model server reads exactly this format; :func:`read_metadata` and :func:`verify` are the
one place that knows it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

ARTIFACT_FORMAT = "modelops.dev/model-artifact/v1"
MODEL_FILE = "model.joblib"
METADATA_FILE = "metadata.json"
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


def write_artifact(root: Path, version: str, model: object, metadata: dict[str, Any]) -> Path:
    """Write the artifact for `version` under `root` atomically; never overwrite one.

    Everything goes to a temporary directory beside the target first and is renamed into
    place only when complete, so a crash leaves no partial artifact.
    """
    import joblib

    check_version(version)
    root.mkdir(parents=True, exist_ok=True)
    target = root / version
    if target.exists():
        raise ArtifactError(
            f"model version {version} already exists at {target}; versions are immutable, "
            "choose a new version name"
        )
    staging = Path(tempfile.mkdtemp(prefix=f".{version}.", suffix=".tmp", dir=root))
    try:
        model_path = staging / MODEL_FILE
        joblib.dump(model, model_path)
        full = {**metadata, "model_file": MODEL_FILE, "model_sha256": file_sha256(model_path)}
        (staging / METADATA_FILE).write_text(json.dumps(full, indent=2, sort_keys=True) + "\n")
        for path in (model_path, staging / METADATA_FILE):
            with path.open("rb") as handle:
                os.fsync(handle.fileno())
        staging.chmod(0o755)
        try:
            # rename() of a directory fails if the target appeared meanwhile: no overwrite race.
            staging.rename(target)
        except OSError:
            raise ArtifactError(
                f"model version {version} already exists at {target}; versions are immutable"
            ) from None
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


def read_metadata(artifact: Path) -> dict[str, Any]:
    """Read ``metadata.json`` of an artifact directory (or the file itself)."""
    path = artifact / METADATA_FILE if artifact.is_dir() else artifact
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ArtifactError(f"no model metadata at {path}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"model metadata {path} is unreadable: {exc}") from None
    if not isinstance(data, dict) or data.get("format") != ARTIFACT_FORMAT:
        raise ArtifactError(
            f"{path} is not a modelops model artifact (expected format {ARTIFACT_FORMAT!r})"
        )
    return data


def verify(artifact: Path) -> dict[str, Any]:
    """Check that the artifact is complete and its model file matches the recorded checksum."""
    metadata = read_metadata(artifact)
    model_path = artifact / str(metadata.get("model_file", MODEL_FILE))
    if not model_path.is_file():
        raise ArtifactError(f"model file {model_path} is missing")
    actual = file_sha256(model_path)
    if actual != metadata.get("model_sha256"):
        raise ArtifactError(
            f"model file {model_path} is corrupt: sha256 {actual[:12]}… does not match the "
            f"recorded {str(metadata.get('model_sha256'))[:12]}…"
        )
    return metadata


def accuracy_of(metadata: dict[str, Any]) -> float:
    """The gate metric recorded in an artifact's metadata."""
    try:
        return float(metadata["metrics"]["test_accuracy"])
    except (KeyError, TypeError, ValueError):
        raise ArtifactError("model metadata has no metrics.test_accuracy") from None
