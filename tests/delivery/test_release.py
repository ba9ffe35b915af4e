"""The model-release scripts on a temporary Git repository, as the workflow runs them."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "hack" / "release" / "release.py"
FILES = [
    "config/gitops/training/iris.yaml",
    "config/gitops/models/iris.yaml",
    "config/gitops/models/iris.release.json",
    "config/gitops/models/kustomization.yaml",
    "config/gitops/platform/images.yaml",
    "config/gitops/platform/kustomization.yaml",
]
PREFIX = "registry.invalid/someone"


def git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(repo), *args], check=True, capture_output=True, text=True
    ).stdout


def release(repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), "--root", str(repo), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A Git repository holding this project's release inputs, one commit by a human."""
    repo = tmp_path / "repo"
    for rel in FILES:
        (repo / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / rel, repo / rel)
    git(repo, "init", "--quiet", "--initial-branch=main")
    git(repo, "add", ".")
    git(
        repo, "-c", "user.name=dev", "-c", "user.email=dev@example.invalid", "commit", "-qm", "init"
    )
    return repo


def set_record_accuracy(repo: Path, accuracy: float) -> None:
    path = repo / "config/gitops/models/iris.release.json"
    record = json.loads(path.read_text())
    record["accuracy"] = accuracy
    path.write_text(json.dumps(record))
    git(repo, "-c", "user.name=dev", "-c", "user.email=dev@example.invalid", "commit", "-qam", "x")


def test_accepted_model_commits_the_bump(repo: Path, tmp_path: Path):
    set_record_accuracy(repo, 0.9)  # serving 0.90; the committed config trains 0.9667
    base = git(repo, "rev-parse", "HEAD").strip()
    result = tmp_path / "gate.json"
    out = output = tmp_path / "github_output"
    gate = subprocess.run(
        [sys.executable, str(SCRIPT), "--root", str(repo), "gate", "--result", str(result)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={"GITHUB_OUTPUT": str(output), "PATH": "/usr/bin:/bin"},
    )
    assert gate.returncode == 0, gate.stderr
    assert "ACCEPTED (Improved)" in gate.stdout
    outputs = dict(line.split("=", 1) for line in out.read_text().splitlines())
    assert outputs["accepted"] == "true"
    assert outputs["version"] == "v2"
    # The workflow's publish job gets the decision only through the `result` output.
    assert json.loads(outputs["result"]) == json.loads(result.read_text())
    handed_over = tmp_path / "handed-over.json"
    handed_over.write_text(outputs["result"] + "\n")

    bump = release(
        repo, "bump", "--result", str(handed_over), "--image-prefix", PREFIX, "--tag", "abc1234"
    )
    assert bump.returncode == 0, bump.stderr

    assert git(repo, "rev-parse", "HEAD~1").strip() == base  # exactly one new commit
    assert git(repo, "status", "--porcelain") == ""
    log = git(repo, "log", "-1", "--format=%an <%ae>%n%B")
    assert log.startswith("modelops-release[bot] <")
    assert "release iris v2" in log and "[skip ci]" in log and "Gate: Improved" in log
    changed = set(git(repo, "diff", "--name-only", "HEAD~1", "HEAD").split())
    assert changed == {
        "config/gitops/models/iris.yaml",
        "config/gitops/models/iris.release.json",
        "config/gitops/platform/images.yaml",
    }

    bumped = (repo / "config/gitops/models/iris.yaml").read_text()
    # The comment the release writes is the one committed (it names the training config).
    committed = (ROOT / "config/gitops/models/iris.yaml").read_text()
    assert bumped.split("apiVersion:")[0] == committed.split("apiVersion:")[0]
    assert "config/gitops/training/iris.yaml" in committed.split("apiVersion:")[0]
    cr = yaml.safe_load(bumped)
    assert cr["spec"]["modelVersion"] == "v2"
    assert cr["spec"]["replicas"] == 2  # fields the release does not own are kept
    record = json.loads((repo / "config/gitops/models/iris.release.json").read_text())
    assert record["modelVersion"] == "v2"
    assert record["accuracy"] == pytest.approx(0.966667)
    assert record["previous"] == {"modelVersion": "v1", "accuracy": 0.9}
    assert record["commit"] == base
    images = (repo / "config/gitops/platform/images.yaml").read_text()
    for component in ("operator", "trainer", "server", "loadgen"):
        assert f"{PREFIX}/modelops-{component}:abc1234" in images
    # The bumped models directory still builds (the platform needs ../../default: not here).
    subprocess.run(
        ["kubectl", "kustomize", str(repo / "config/gitops/models")],
        check=True,
        capture_output=True,
    )

    # The next run gates against v2, as recorded by this release.
    again = release(repo, "gate")
    assert again.returncode == 0
    assert "iris v3" in again.stdout and "serving: v2 0.966667" in again.stdout


def test_rejected_model_commits_nothing_and_says_why(repo: Path, tmp_path: Path):
    set_record_accuracy(repo, 0.99)  # serving 0.99: the committed config (0.9667) is worse
    head = git(repo, "rev-parse", "HEAD").strip()
    result = tmp_path / "gate.json"
    gate = release(repo, "gate", "--result", str(result))
    assert gate.returncode == 1
    assert "REJECTED (RegressionDetected)" in gate.stderr
    assert "worse than the serving model's 0.9900" in gate.stderr
    assert json.loads(result.read_text())["accepted"] is False

    # Even if a workflow went on, bump refuses a rejected decision.
    bump = release(repo, "bump", "--result", str(result), "--image-prefix", PREFIX, "--tag", "abc")
    assert bump.returncode == 2
    assert "rejected model" in bump.stderr
    assert git(repo, "rev-parse", "HEAD").strip() == head
    assert git(repo, "status", "--porcelain") == ""


def test_below_minimum_is_rejected_even_for_a_first_version(repo: Path, tmp_path: Path):
    (repo / "config/gitops/models/iris.release.json").unlink()
    cfg = yaml.safe_load((repo / "config/gitops/training/iris.yaml").read_text())
    cfg["minAccuracy"] = 0.99
    (repo / "config/gitops/training/iris.yaml").write_text(yaml.safe_dump(cfg))
    gate = release(repo, "gate")
    assert gate.returncode == 1
    assert "AccuracyBelowMinimum" in gate.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--image-prefix", "Registry/Upper", "--tag", "abc"], "lower-case"),
        (["--image-prefix", PREFIX, "--tag", "bad tag"], "not a valid image tag"),
    ],
)
def test_bump_rejects_bad_image_names(repo: Path, tmp_path: Path, args: list[str], message: str):
    result = tmp_path / "gate.json"
    assert release(repo, "gate", "--result", str(result)).returncode == 0
    bump = release(repo, "bump", "--result", str(result), *args)
    assert bump.returncode == 2
    assert message in bump.stderr
    assert git(repo, "status", "--porcelain") == ""


def test_bad_dataset_is_a_clear_usage_error(repo: Path):
    cfg = yaml.safe_load((repo / "config/gitops/training/iris.yaml").read_text())
    cfg["training"]["dataset"] = {"configMap": {"name": "data"}}
    (repo / "config/gitops/training/iris.yaml").write_text(yaml.safe_dump(cfg))
    gate = release(repo, "gate")
    assert gate.returncode == 2
    assert "training.dataset must be" in gate.stderr
