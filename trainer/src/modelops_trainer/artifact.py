"""Writing model artifacts: one immutable directory per model version.

The format (files, metadata, checksum, the gate metric) is the contract's
(:mod:`modelops_contract.artifact`); this module only writes it. The model file is the
parameter file of :mod:`modelops_trainer.export` (no pickle).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from modelops_contract.artifact import (
    METADATA_FILE,
    MODEL_FILE,
    ArtifactError,
    check_version,
    file_sha256,
    metadata_text,
)


def write_artifact(root: Path, version: str, model: bytes, metadata: dict[str, Any]) -> Path:
    """Write the artifact for `version` under `root` atomically; never overwrite one.

    Everything goes to a temporary directory beside the target first and is renamed into
    place only when complete, so a crash leaves no partial artifact.
    """
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
        model_path.write_bytes(model)
        full = {**metadata, "model_file": MODEL_FILE, "model_sha256": file_sha256(model_path)}
        (staging / METADATA_FILE).write_text(metadata_text(full))
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
