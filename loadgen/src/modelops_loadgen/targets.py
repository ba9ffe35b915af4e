"""Targets: base URLs spread round-robin, optionally re-read from a JSON file while running.

A supervisor (local mode) rewrites the file when it rolls server replicas; the generator
notices within about a second and keeps its schedule, connections and statistics.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlsplit

from modelops_loadgen.httpclient import Endpoint
from modelops_loadgen.oip_wire import GrpcEndpoint

log = logging.getLogger("modelops_loadgen.targets")
FEEDBACK_PATH = "/feedback"


class TargetError(ValueError):
    """A target list or URL a user must fix."""


def validate_base_url(raw: object) -> str:
    if not isinstance(raw, str) or not raw.strip():
        raise TargetError(f"a target must be a non-empty URL string, got {raw!r}")
    url = raw.strip().rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https", "grpc") or not parts.hostname:
        raise TargetError(
            f"target {raw!r} is not a base URL like http://127.0.0.1:8000 or (--endpoint grpc) "
            "grpc://127.0.0.1:8001 (scheme and host needed)"
        )
    if parts.scheme == "grpc" and (parts.port is None or parts.path not in ("", "/")):
        raise TargetError(f"gRPC target {raw!r} must be grpc://HOST:PORT")
    if parts.query or parts.fragment:
        raise TargetError(f"target {raw!r} must not have a query or fragment")
    return url


def parse_targets_json(text: str, source: str) -> list[str]:
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise TargetError(f"{source}: not valid JSON ({exc}); expected a list of URLs") from None
    if not isinstance(doc, list):
        raise TargetError(f'{source}: expected a JSON list of base URLs like ["http://h:8000"]')
    return [validate_base_url(x) for x in doc]


class TargetSet:
    """The current request URLs (base + endpoint path), replaced atomically on change."""

    def __init__(self, bases: Sequence[str], path: str) -> None:
        self._path = path
        self.bases: tuple[str, ...] = ()
        self.endpoints: tuple[Endpoint | GrpcEndpoint, ...] = ()
        # The same targets' POST /feedback (None for gRPC ones), index for index.
        self.feedback: tuple[Endpoint | None, ...] = ()
        self.generation = 0
        self.replace(bases)

    def replace(self, bases: Sequence[str]) -> bool:
        """Swap in a new list; returns whether it changed."""
        clean = tuple(validate_base_url(b) for b in bases)
        if clean == self.bases:
            return False
        self.bases = clean
        self.endpoints = tuple(
            GrpcEndpoint.parse(b) if b.startswith("grpc://") else Endpoint.parse(b + self._path)
            for b in clean
        )
        self.feedback = tuple(
            None if b.startswith("grpc://") else Endpoint.parse(b + FEEDBACK_PATH) for b in clean
        )
        self.generation += 1
        return True


def _file_signature(path: Path) -> tuple[int, int, int] | None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


def read_targets_file(path: Path) -> list[str]:
    try:
        text = path.read_text("utf-8")
    except FileNotFoundError:
        raise TargetError(
            f"targets file {path} does not exist; write a JSON list of base URLs there"
        ) from None
    except OSError as exc:
        raise TargetError(f"targets file {path} cannot be read: {exc.strerror}") from None
    return parse_targets_json(text, str(path))


class TargetsFileWatcher:
    """Polls the file's mtime/size/inode and re-reads it on change.

    A bad rewrite (half-written JSON, invalid URL) is logged and the last good list kept;
    writers should still replace the file atomically (write + rename).
    """

    def __init__(self, path: Path, targets: TargetSet, interval: float = 1.0) -> None:
        self.path = path
        self.targets = targets
        self.interval = interval
        self._sig = _file_signature(path)
        self._warned_missing = False

    def poll(self) -> bool:
        """One check; returns whether the target list changed."""
        sig = _file_signature(self.path)
        if sig is None:
            if not self._warned_missing:
                log.warning(
                    "targets file disappeared; keeping the last list",
                    extra={"path": str(self.path), "targets": list(self.targets.bases)},
                )
                self._warned_missing = True
            self._sig = None
            return False
        self._warned_missing = False
        if sig == self._sig:
            return False
        self._sig = sig
        try:
            bases = read_targets_file(self.path)
        except TargetError as exc:
            log.error("targets file rejected; keeping the last list", extra={"error": str(exc)})
            return False
        changed = self.targets.replace(bases)
        if changed:
            log.info(
                "targets changed",
                extra={"path": str(self.path), "targets": list(bases)},
            )
        return changed

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            self.poll()


def describe(bases: Sequence[str]) -> str:
    return ", ".join(bases) if bases else "(none)"


__all__ = [
    "TargetError",
    "TargetSet",
    "TargetsFileWatcher",
    "describe",
    "parse_targets_json",
    "read_targets_file",
    "validate_base_url",
]
