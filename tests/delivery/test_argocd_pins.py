"""The Argo CD the tests build is the one argocd/install.sh installs, with the CRDs we vendor."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
from pathlib import Path

import pytest

from modelops_testenv.binaries import ARGOCD_VERSION, find_argocd
from modelops_testenv.thirdparty import crd

ROOT = Path(__file__).resolve().parents[2]
GO_MOD = (ROOT / "hack" / "argocd" / "go.mod").read_text()
ARGO_MODULE = "github.com/argoproj/argo-cd/v3"
# The nested gitops-engine module is not in argo-cd's module zip: pinned to the release tag's
# commit, the only pairing the Go module proxy serves for v3.5.x (docs/argocd-local.md).
GITOPS_ENGINE = "github.com/argoproj/argo-cd/gitops-engine v0.0.0-20260914071520-c9c369efcc5b"
VENDORED_CRDS = {
    "argocd-application-crd.yaml": "manifests/crds/application-crd.yaml",
    "argocd-appproject-crd.yaml": "manifests/crds/appproject-crd.yaml",
}


def test_one_argocd_version_everywhere() -> None:
    assert re.search(rf"^\t{re.escape(ARGO_MODULE)} {re.escape(ARGOCD_VERSION)}\b", GO_MOD, re.M)
    assert f"=> {GITOPS_ENGINE}" in GO_MOD
    for script in ("install.sh", "uninstall.sh"):
        text = (ROOT / "argocd" / script).read_text()
        assert f'ARGOCD_VERSION="{ARGOCD_VERSION}"' in text, script
    readme = (crd("argocd-application-crd.yaml").parent.parent / "README.md").read_text()
    rows = [line for line in readme.splitlines() if line.startswith("| `argocd-")]
    assert len(rows) == 2 and all(f"| {ARGOCD_VERSION} (" in row for row in rows)


def test_argo_cds_own_replace_lines_are_copied() -> None:
    """A dependant does not inherit replace lines: the wrapper repeats argo-cd's k8s pins."""
    replaced = dict(re.findall(r"^\t(k8s\.io/[\w.-]+) => \1 (v[\w.-]+)$", GO_MOD, re.M))
    assert len(replaced) >= 30
    assert set(replaced.values()) == {"v0.36.1"}, "argo-cd v3.5.3 pins k8s.io staging at v0.36.1"


@pytest.mark.integration
def test_built_binary_and_vendored_crds_match_the_module() -> None:
    out = subprocess.run(
        [str(find_argocd()), "version", "--client", "--short"],
        env={"ARGOCD_BINARY_NAME": "argocd", "HOME": "/nonexistent"},
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout  # fmt: skip
    assert out.strip().startswith(f"argocd: {ARGOCD_VERSION}"), out
    # The module source hack/build-argocd.sh built from (in the Go module cache by now).
    info = subprocess.run(
        ["go", "mod", "download", "-json", f"{ARGO_MODULE}@{ARGOCD_VERSION}"],
        cwd=ROOT / "hack" / "argocd",
        env={**_go_env(), "GOFLAGS": "-mod=mod", "GOPROXY": "off"},
        capture_output=True, text=True, timeout=120, check=True,
    ).stdout  # fmt: skip
    module_dir = Path(json.loads(info)["Dir"])
    for ours, upstream in VENDORED_CRDS.items():
        theirs = hashlib.sha256((module_dir / upstream).read_bytes()).hexdigest()
        assert hashlib.sha256(crd(ours).read_bytes()).hexdigest() == theirs, ours


def _go_env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if k.startswith(("GO", "HOME", "PATH", "XDG"))}
