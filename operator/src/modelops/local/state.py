"""Where local mode keeps what a cluster's API server would: files under the state directory."""

from __future__ import annotations

import json
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass
class LocalPaths:
    root: Path  # <state dir>/<name>

    @property
    def status(self) -> Path:
        return self.root / "status.json"

    @property
    def models(self) -> Path:
        return self.root / "models"

    @property
    def jobs(self) -> Path:
        return self.root / "jobs"

    @property
    def run(self) -> Path:
        return self.root / "run"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def targets(self) -> Path:
        return self.run / "targets.json"

    @property
    def scrape_dir(self) -> Path:
        return self.run / "file_sd"


def write_json_atomic(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    tmp.replace(path)


def write_json_if_changed(path: Path, data: Any) -> None:
    """Rewrite only on change: readers poll these files (targets, file-based discovery)."""
    try:
        current = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        current = None
    if current != data:
        write_json_atomic(path, data)


def executable(name: str) -> str:
    """A console script of this installation (the venv's bin dir first)."""
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return str(beside)
    found = shutil.which(name)
    if found is None:
        raise FileNotFoundError(f"{name} is not installed; run `make install`")
    return found
