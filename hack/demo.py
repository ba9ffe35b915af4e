"""`make demo` until local mode lands: train the next Iris version, gate it, report.

State lives in $MODELOPS_STATE_DIR (default ./.modelops): `models/<version>/` artifacts and
`serving.json` naming the version that passed the gate last (the seed's "previous model").
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path

from modelops_trainer.artifact import ArtifactError, accuracy_of, read_metadata
from modelops_trainer.data import DataError
from modelops_trainer.gate import decide
from modelops_trainer.pipeline import ParamError
from modelops_trainer.train import TrainConfig, train


def next_version(models: Path) -> str:
    numbers = [
        int(m.group(1))
        for p in (models.iterdir() if models.is_dir() else [])
        if (m := re.fullmatch(r"v(\d+)", p.name))
    ]
    return f"v{max(numbers, default=0) + 1}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration", type=float, default=None, help="accepted; bounds local mode")
    parser.parse_args()
    state = Path(os.environ.get("MODELOPS_STATE_DIR", ".modelops")).resolve()
    models = state / "models"
    serving_file = state / "serving.json"
    serving = json.loads(serving_file.read_text()) if serving_file.exists() else None
    version = next_version(models)
    print(f"state directory: {state}")
    print(f"training {version} (knn, built-in Iris) ...")
    try:
        result = train(TrainConfig(version=version, output_dir=models))
    except (DataError, ParamError, ArtifactError) as exc:
        print(f"training failed: {exc}", file=sys.stderr)
        return 1
    previous = None
    if serving:
        previous = accuracy_of(read_metadata(models / serving["version"]))
    decision = decide(result.accuracy, previous)
    print(f"  accuracy (held-out 20 %): {result.accuracy:.4f}")
    if serving:
        print(f"  serving before: {serving['version']} with accuracy {previous:.4f}")
    label = "WARNING" if decision.warning else ("ACCEPTED" if decision.accepted else "REJECTED")
    print(f"gate: {label} ({decision.reason}) {decision.message}")
    if decision.accepted:
        serving_file.write_text(json.dumps({"version": version}) + "\n")
        print(f"serving: {version}")
    else:
        print(f"serving: {serving['version'] if serving else 'nothing'} (unchanged)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
