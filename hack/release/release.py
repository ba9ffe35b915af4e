"""Model release: train, gate against what Git says is serving, and bump the GitOps directory.

Called by .github/workflows/release-model.yml (and by hand); tests/delivery/test_release.py
runs it on a temporary Git repository. Two steps, because images are built in between:

  release.py gate --model iris [--result gate.json]
      Trains config/gitops/training/<model>.yaml with the trainer CLI, gates the accuracy
      against config/gitops/models/<model>.release.json (the accuracy of the version serving
      now, as the last release recorded it) with the trainer's gate (the operator's function),
      writes the decision to --result and to $GITHUB_OUTPUT. Exit 0 accepted, 1 rejected
      (the gate's message on stderr), 2 bad input.

  release.py bump --model iris --result gate.json --image-prefix REGISTRY/OWNER --tag SHA
      Writes the accepted version into config/gitops/models/<model>.yaml (modelVersion, and
      the training/gate settings it was gated with, so the operator trains the same model),
      the image tags into config/gitops/platform/images.yaml and the record into
      <model>.release.json, then commits those files as a bot with "[skip ci]". Never
      touches a cluster: Argo CD syncs the commit.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

BOT_NAME = "modelops-release[bot]"
BOT_EMAIL = "modelops-release-bot@users.noreply.invalid"
COMPONENTS = ("operator", "trainer", "server", "loadgen")
# Environment variables of the operator that name the workload images (modelops.settings).
IMAGE_ENV = {
    "trainer": "MODELOPS_TRAINER_IMAGE",
    "server": "MODELOPS_SERVER_IMAGE",
    "loadgen": "MODELOPS_LOADGEN_IMAGE",
}
VERSION_RE = re.compile(r"^v(\d+)$")
TAG_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
# The GitOps directory, relative to the repository root: Argo CD syncs models/ and platform/;
# training/ holds the release inputs and is synced by nothing.
GITOPS = Path("config") / "gitops"


class ReleaseError(Exception):
    """Bad input: the message says what is wrong and what to do (exit 2)."""


@dataclass(frozen=True)
class Paths:
    root: Path
    model: str

    @property
    def training(self) -> Path:
        return self.root / GITOPS / "training" / f"{self.model}.yaml"

    @property
    def cr(self) -> Path:
        return self.root / GITOPS / "models" / f"{self.model}.yaml"

    @property
    def record(self) -> Path:
        return self.root / GITOPS / "models" / f"{self.model}.release.json"

    @property
    def images(self) -> Path:
        return self.root / GITOPS / "platform" / "images.yaml"


def _load_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ReleaseError(f"{path} does not exist")
    data = yaml.safe_load(path.read_text())
    if not isinstance(data, dict):
        raise ReleaseError(f"{path} must hold a YAML mapping")
    return data


def load_training(paths: Paths) -> dict[str, Any]:
    """config/gitops/training/<model>.yaml: {minAccuracy, gate: {...}, training: {...}}."""
    cfg = _load_yaml(paths.training)
    training = cfg.get("training")
    if not isinstance(training, dict):
        raise ReleaseError(f"{paths.training}: 'training' must be a mapping (algorithm, ...)")
    dataset = training.get("dataset", {"builtin": "iris"})
    if (
        not isinstance(dataset, dict)
        or len(dataset) != 1
        or not (set(dataset) <= {"builtin", "url"})
    ):
        raise ReleaseError(
            f"{paths.training}: training.dataset must be {{builtin: iris}} or {{url: https://...}}"
            " (a data set CI and the cluster's trainer Job can both read)"
        )
    return cfg


def serving_record(paths: Paths) -> dict[str, Any]:
    """What the last release recorded as serving; {} before the first release."""
    if not paths.record.is_file():
        return {}
    try:
        data = json.loads(paths.record.read_text())
    except json.JSONDecodeError as exc:
        raise ReleaseError(f"{paths.record} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ReleaseError(f"{paths.record} must hold a JSON object")
    return data


def next_version(current: str | None) -> str:
    if current is None:
        return "v1"
    m = VERSION_RE.match(current)
    if not m:
        raise ReleaseError(
            f"current modelVersion {current!r} is not of the form v<N>; set it to v<N> in the "
            "model's YAML so that releases can number the next one"
        )
    return f"v{int(m.group(1)) + 1}"


def trainer_command(cfg: dict[str, Any], version: str, out: Path, name: str) -> list[str]:
    training = cfg["training"]
    dataset = training.get("dataset", {"builtin": "iris"})
    source = f"builtin:{dataset['builtin']}" if "builtin" in dataset else str(dataset["url"])
    cmd = [
        _tool("modelops-trainer"),
        "train",
        "--name",
        name,
        "--version",
        version,
        "--output-dir",
        str(out),
        "--algorithm",
        str(training.get("algorithm", "knn")),
        "--params-json",
        json.dumps(training.get("hyperparameters", {})),
        "--dataset",
        source,
        "--test-size",
        str(training.get("testSize", 0.2)),
        "--seed",
        str(training.get("seed", 42)),
    ]
    return cmd


def _tool(name: str) -> str:
    # Prefer the tool installed beside this interpreter (the project's venv).
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.is_file() else shutil.which(name)
    if not found:
        raise ReleaseError(f"{name} not found: run `make install` (or pip install ./trainer)")
    return found


def _github_output(values: dict[str, str]) -> None:
    target = os.environ.get("GITHUB_OUTPUT")
    if not target:
        return
    with Path(target).open("a") as fh:
        for key, value in values.items():
            fh.write(f"{key}={value.replace(chr(10), ' ')}\n")


def cmd_gate(args: argparse.Namespace) -> int:
    paths = Paths(Path(args.root).resolve(), args.model)
    cfg = load_training(paths)
    cr = _load_yaml(paths.cr)
    record = serving_record(paths)
    current = cr.get("spec", {}).get("modelVersion")
    version = next_version(current)
    previous = record.get("accuracy")

    with tempfile.TemporaryDirectory(prefix="release-") as tmp:
        train = subprocess.run(
            trainer_command(cfg, version, Path(tmp), args.model),
            capture_output=True,
            text=True,
            check=False,
        )
        if train.returncode != 0:
            print(
                f"training {args.model} {version} failed:\n{train.stderr.strip()}", file=sys.stderr
            )
            _github_output({"accepted": "false", "message": "training failed"})
            return 1
        summary = json.loads(train.stdout)
        gate = cfg.get("gate", {})
        gate_cmd = [
            _tool("modelops-trainer"),
            "gate",
            "--candidate",
            str(summary["accuracy"]),
            "--min-accuracy",
            str(cfg.get("minAccuracy", 0.85)),
            "--regression-tolerance",
            str(gate.get("regressionTolerance", 0.0)),
            "--significant-improvement",
            str(gate.get("significantImprovement", 0.005)),
        ]
        if previous is not None:
            gate_cmd += ["--previous", str(previous)]
        decided = subprocess.run(gate_cmd, capture_output=True, text=True, check=False)
    if decided.returncode not in (0, 1):
        raise ReleaseError(f"modelops-trainer gate failed: {decided.stderr.strip()}")
    decision = json.loads(decided.stdout)
    result = {
        "model": args.model,
        "version": version,
        "previousVersion": record.get("modelVersion"),
        "previousAccuracy": previous,
        "accuracy": summary["accuracy"],
        "accepted": decision["accepted"],
        "reason": decision["reason"],
        "message": decision["message"],
        "warning": decision.get("warning", False),
        "modelSha256": summary.get("modelSha256"),
        "datasetSha256": summary.get("datasetSha256"),
        "trainedAt": summary.get("createdAt"),
    }
    if args.result:
        Path(args.result).write_text(json.dumps(result, indent=2) + "\n")
    _github_output(
        {
            "accepted": str(result["accepted"]).lower(),
            "version": version,
            "accuracy": str(result["accuracy"]),
            "message": result["message"],
            # The whole decision on one line: the publish job of the workflow reads it back.
            "result": json.dumps(result, separators=(",", ":")),
        }
    )
    verdict = "ACCEPTED" if result["accepted"] else "REJECTED"
    serving = "nothing recorded" if previous is None else f"{record.get('modelVersion')} {previous}"
    print(
        f"{args.model} {version}: accuracy {result['accuracy']} (serving: {serving}) -> "
        f"{verdict} ({result['reason']}): {result['message']}",
        file=sys.stderr if not result["accepted"] else sys.stdout,
    )
    if not result["accepted"] and os.environ.get("GITHUB_ACTIONS") == "true":
        # Shown on the workflow run's summary page.
        print(f"::error title=Gate rejected {args.model} {version}::{result['message']}")
    return 0 if result["accepted"] else 1


def images_patch(prefix: str, tag: str) -> dict[str, Any]:
    def image(component: str) -> str:
        return f"{prefix}/modelops-{component}:{tag}"

    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "modelops-operator", "namespace": "modelops-system"},
        "spec": {
            "template": {
                "spec": {
                    "containers": [
                        {
                            "name": "operator",
                            "image": image("operator"),
                            "env": [
                                {"name": env, "value": image(component)}
                                for component, env in IMAGE_ENV.items()
                            ],
                        }
                    ]
                }
            }
        },
    }


def _git(root: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(root), *args], check=True, capture_output=True, text=True
    ).stdout


def cmd_bump(args: argparse.Namespace) -> int:
    paths = Paths(Path(args.root).resolve(), args.model)
    result = json.loads(Path(args.result).read_text())
    if not result.get("accepted"):
        raise ReleaseError(
            f"{args.result} records a rejected model ({result.get('message')}); nothing to release"
        )
    if result.get("model") != args.model:
        raise ReleaseError(
            f"{args.result} is about model {result.get('model')!r}, not {args.model!r}"
        )
    prefix = args.image_prefix.rstrip("/")
    if not prefix or prefix != prefix.lower() or " " in prefix:
        raise ReleaseError(
            f"--image-prefix {args.image_prefix!r} must be a lower-case REGISTRY/NAMESPACE"
        )
    if not TAG_RE.match(args.tag):
        raise ReleaseError(f"--tag {args.tag!r} is not a valid image tag")

    cfg = load_training(paths)
    cr = _load_yaml(paths.cr)
    spec = cr.setdefault("spec", {})
    spec["modelVersion"] = result["version"]
    spec["minAccuracy"] = cfg.get("minAccuracy", 0.85)
    spec["training"] = cfg["training"]
    if "gate" in cfg:
        spec["gate"] = cfg["gate"]
    header = (
        f"# The {args.model} model as Argo CD deploys it. modelVersion and training/gate are\n"
        f"# written by hack/release/release.py from {paths.training.relative_to(paths.root)}\n"
        "# when the gate accepts a model; other fields (replicas, loadRate, serving) are yours\n"
        "# to edit.\n"
    )
    paths.cr.write_text(header + yaml.safe_dump(cr, sort_keys=False))

    paths.images.write_text(
        "# Image tags of the platform, written by hack/release/release.py on each release.\n"
        + yaml.safe_dump(images_patch(prefix, args.tag), sort_keys=False)
    )
    record = {
        "name": args.model,
        "modelVersion": result["version"],
        "accuracy": result["accuracy"],
        "gate": {"reason": result["reason"], "message": result["message"]},
        "previous": {
            "modelVersion": result["previousVersion"],
            "accuracy": result["previousAccuracy"],
        },
        "commit": args.commit or _git(paths.root, "rev-parse", "HEAD").strip(),
        "imageTag": args.tag,
        "modelSha256": result["modelSha256"],
        "datasetSha256": result["datasetSha256"],
        "trainedAt": result["trainedAt"],
    }
    paths.record.write_text(json.dumps(record, indent=2) + "\n")

    files = [str(p.relative_to(paths.root)) for p in (paths.cr, paths.record, paths.images)]
    _git(paths.root, "add", "--", *files)
    message = (
        f"release {args.model} {result['version']} (accuracy {result['accuracy']}) [skip ci]\n\n"
        f"Gate: {result['reason']}: {result['message']}\nImages: {prefix}/modelops-*:{args.tag}\n"
    )
    subprocess.run(
        [
            "git", "-C", str(paths.root),
            "-c", f"user.name={BOT_NAME}", "-c", f"user.email={BOT_EMAIL}",
            "commit", "--quiet", "-m", message, "--", *files,
        ],
        check=True,
    )  # fmt: skip
    print(f"committed {args.model} {result['version']}: {', '.join(files)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="release.py", description=__doc__.split("\n")[0])
    parser.add_argument("--root", default=".", help="repository root (default: .)")
    sub = parser.add_subparsers(dest="command", required=True)
    gate = sub.add_parser("gate", help="train and gate the next version")
    gate.add_argument("--model", default="iris")
    gate.add_argument("--result", help="write the decision JSON here")
    bump = sub.add_parser("bump", help="write an accepted version into the GitOps dir and commit")
    bump.add_argument("--model", default="iris")
    bump.add_argument("--result", required=True, help="the decision JSON of `gate`")
    bump.add_argument("--image-prefix", required=True, help="REGISTRY/NAMESPACE of the images")
    bump.add_argument("--tag", required=True, help="image tag (the short commit SHA)")
    bump.add_argument("--commit", help="commit the model was trained from (default: HEAD)")
    args = parser.parse_args(argv)
    try:
        return cmd_gate(args) if args.command == "gate" else cmd_bump(args)
    except ReleaseError as exc:
        print(f"release: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
