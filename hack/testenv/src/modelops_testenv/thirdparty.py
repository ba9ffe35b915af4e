"""Third-party data vendored into this package (see ``data/third_party/README.md``)."""

from __future__ import annotations

import importlib.resources
from pathlib import Path


def crds_dir() -> Path:
    """The folder of third-party CRDs (Argo CD, prometheus-operator), one CRD per YAML file."""
    data = importlib.resources.files("modelops_testenv") / "data"
    path = Path(str(data / "third_party" / "crds"))
    if not path.is_dir():
        raise FileNotFoundError(f"{path} is missing: the modelops_testenv package is incomplete")
    return path


def crd(file_name: str) -> Path:
    """One vendored CRD file, e.g. ``crd("argocd-application-crd.yaml")``."""
    path = crds_dir() / file_name
    if not path.is_file():
        have = ", ".join(sorted(p.name for p in crds_dir().glob("*.yaml")))
        raise FileNotFoundError(f"no vendored CRD {file_name!r} (have: {have})")
    return path
