"""Artifact 'ConfigMaps' of local mode: the files a server pod would mount, under the state
directory (written from the ConfigMap the plan creates, read back as one)."""

from __future__ import annotations

import base64
import json
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modelops_contract.artifact import METADATA_FILE, file_sha256, model_file

from ..core import render
from ..names import ANNOTATION_SHA256


@dataclass
class Artifacts:
    name: str
    models_dir: Path

    def path(self, version: str) -> Path:
        return self.models_dir / version

    def configmaps(self, cr: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
        """The stored artifacts as ConfigMaps, rebuilt with the operator's own renderer."""
        out: dict[str, dict[str, Any]] = {}
        if not self.models_dir.is_dir():
            return out
        for directory in sorted(self.models_dir.iterdir()):
            meta_path = directory / METADATA_FILE
            if not meta_path.is_file():
                continue
            metadata = json.loads(meta_path.read_text())
            model = (directory / model_file(metadata)).read_bytes()
            out[directory.name] = render.artifact_configmap(cr, directory.name, metadata, model)
        return out

    def store(self, version: str, configmap: Mapping[str, Any]) -> None:
        """Write the ConfigMap's files where a server 'pod' of that version mounts them."""
        target = self.path(version)
        if target.exists():
            return
        staging = self.models_dir / f".{version}.tmp"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        for key, text in (configmap.get("data") or {}).items():
            (staging / key).write_text(text)
        for key, blob in (configmap.get("binaryData") or {}).items():
            (staging / key).write_bytes(base64.b64decode(blob))
        recorded = configmap["metadata"]["annotations"][ANNOTATION_SHA256]
        metadata = json.loads((staging / METADATA_FILE).read_text())
        if file_sha256(staging / model_file(metadata)) != recorded:
            shutil.rmtree(staging)
            raise ValueError(f"artifact of {version} does not match its recorded sha256")
        staging.rename(target)

    def delete(self, configmap_name: str) -> None:
        if not self.models_dir.is_dir():
            return
        for directory in self.models_dir.iterdir():
            if render.artifact_name(self.name, directory.name) == configmap_name:
                shutil.rmtree(directory, ignore_errors=True)
