"""The GitHub workflows: actions pinned by commit, credentials only where they are used."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

pytestmark = pytest.mark.unit

WORKFLOWS = Path(__file__).resolve().parents[2] / ".github" / "workflows"
PINNED = re.compile(r"^[\w.-]+/[\w./-]+@[0-9a-f]{40}$")
# Steps of release-model.yml that may see a secret, and how.
SECRET_STEPS = {
    "Check the registry settings": "presence",  # only `secrets.X != ''`, never the value
    "Build and push the images tagged with the short SHA": "value",
    "Commit the new version to the GitOps directory": "value",
}


def load(name: str) -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load((WORKFLOWS / name).read_text())
    return doc


def steps(doc: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for job_name, job in doc["jobs"].items():
        for step in job.get("steps", []):
            yield job_name, step


def strings(node: Any) -> Iterator[str]:
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for value in node.values():
            yield from strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from strings(value)


@pytest.mark.parametrize("name", sorted(p.name for p in WORKFLOWS.glob("*.yml")))
def test_actions_pinned_by_commit_and_checkouts_keep_no_token(name: str) -> None:
    for job, step in steps(load(name)):
        uses = step.get("uses")
        if uses is None or uses.startswith("./"):
            continue
        assert PINNED.match(uses), f"{name} job {job}: {uses} is not pinned to a commit"
        if uses.startswith("actions/checkout@"):
            assert step.get("with", {}).get("persist-credentials") is False, (
                f"{name} job {job}: checkout must not leave the token in .git/config"
            )


def test_release_secrets_only_in_the_steps_that_use_them() -> None:
    doc = load("release-model.yml")
    assert doc["permissions"] == {}
    for key in ("env",):
        assert "secrets." not in " ".join(strings(doc.get(key, {})))
    for job_name, job in doc["jobs"].items():
        assert "secrets." not in " ".join(strings(job.get("env", {}))), job_name
    seen = set()
    for _, step in steps(doc):
        text = " ".join(strings(step))
        if "secrets." not in text:
            continue
        name = step.get("name", step.get("uses"))
        assert name in SECRET_STEPS, f"step {name!r} sees a secret"
        seen.add(name)
        if SECRET_STEPS[name] == "presence":
            uses = re.findall(r"\$\{\{([^}]*secrets\.[^}]*)\}\}", text)
            assert uses and all(re.fullmatch(r"\s*secrets\.\w+ != ''\s*", u) for u in uses), uses
    assert seen == set(SECRET_STEPS)


def test_release_training_job_cannot_write() -> None:
    jobs = load("release-model.yml")["jobs"]
    assert jobs["gate"]["permissions"] == {"contents": "read"}
    assert jobs["publish"]["needs"] == "gate"
    assert "accepted == 'true'" in jobs["publish"]["if"]
