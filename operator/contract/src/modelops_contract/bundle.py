"""Artifact bundles: one model version as a compact text the trainer can print.

A Kubernetes trainer Job hands its artifact to the operator without any API write of its own:
the bundle rides in the container's termination message when it fits (4096 bytes, enough for
the Iris knn/logistic-regression/decision-tree models) and is always printed as one framed line
on stdout, where the operator reads it from the pod log otherwise.

Format: ``xz( 4-byte big-endian length of the metadata JSON | metadata JSON | model.params )``
encoded with base85 (25 % overhead instead of base64's 33 %, and no character that needs
escaping in JSON). The metadata travels as compact JSON and is written back exactly as the
trainer writes ``metadata.json``; the model bytes are checked against ``model_sha256``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import lzma
from pathlib import Path
from typing import Any

from .artifact import (
    METADATA_FILE,
    ArtifactError,
    check_metadata,
    metadata_text,
    model_file,
    verify,
)

# Prefix of the one stdout line that carries a bundle; the version suffix allows a new format.
LOG_PREFIX = "modelops-artifact/v1 "
# Key of the bundle inside the JSON result summary (termination message).
SUMMARY_KEY = "artifactBundle"
# Summary fields kept when the full summary plus the bundle would not fit the limit.
ESSENTIAL_FIELDS = ("status", "name", "version", "algorithm", "accuracy", "modelSha256")


def pack(artifact: Path) -> str:
    """Bundle a verified artifact directory as base85 text."""
    metadata = verify(artifact)
    meta = json.dumps(metadata, separators=(",", ":"), sort_keys=True).encode()
    model = (artifact / model_file(metadata)).read_bytes()
    blob = len(meta).to_bytes(4, "big") + meta + model
    return base64.b85encode(lzma.compress(blob, preset=9 | lzma.PRESET_EXTREME)).decode("ascii")


def unpack(text: str) -> tuple[dict[str, Any], bytes]:
    """Decode a bundle into (metadata, model bytes); raise ArtifactError if it is damaged."""
    try:
        blob = lzma.decompress(base64.b85decode(text.strip()))
    except (ValueError, binascii.Error, lzma.LZMAError) as exc:
        raise ArtifactError(f"model artifact bundle is damaged: {exc}") from None
    size = int.from_bytes(blob[:4], "big")
    if len(blob) < 4 + size:
        raise ArtifactError("model artifact bundle is truncated")
    try:
        metadata = json.loads(blob[4 : 4 + size])
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"model artifact bundle has unreadable metadata: {exc}") from None
    check_metadata(metadata, "model artifact bundle")
    model = blob[4 + size :]
    actual = hashlib.sha256(model).hexdigest()
    if actual != metadata.get("model_sha256"):
        raise ArtifactError(
            f"model artifact bundle is corrupt: sha256 {actual[:12]}… does not match the "
            f"recorded {str(metadata.get('model_sha256'))[:12]}…"
        )
    return metadata, model


def write(metadata: dict[str, Any], model: bytes, target: Path) -> Path:
    """Write an unpacked bundle as an artifact directory (``target`` must not exist)."""
    target.mkdir(parents=True)
    (target / model_file(metadata)).write_bytes(model)
    (target / METADATA_FILE).write_text(metadata_text(metadata))
    return target


def log_line(bundle: str) -> str:
    return LOG_PREFIX + bundle


def find_in_log(log: str) -> str | None:
    """The bundle of the last framed line in a pod log, if any."""
    found = None
    for line in log.splitlines():
        # Container runtimes may prefix nothing, but tolerate a timestamped log line too.
        index = line.find(LOG_PREFIX)
        if index >= 0:
            found = line[index + len(LOG_PREFIX) :].strip()
    return found


def attach(summary: dict[str, Any], bundle: str, limit: int) -> dict[str, Any]:
    """The summary with the bundle embedded when it fits in ``limit`` bytes, else unchanged.

    The full summary is tried first, then only :data:`ESSENTIAL_FIELDS` (everything else is
    also in the bundle's metadata).
    """
    for base in (summary, {k: summary[k] for k in ESSENTIAL_FIELDS if k in summary}):
        candidate = {**base, SUMMARY_KEY: bundle}
        if len(json.dumps(candidate, separators=(",", ":"), sort_keys=True).encode()) <= limit:
            return candidate
    return summary
