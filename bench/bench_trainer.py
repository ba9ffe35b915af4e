"""Trainer wall time: `modelops-trainer train` on Iris, imports included (goal < 3 s)."""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RUNS = 5
GOAL_SECONDS = 3.0


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        times: dict[str, list[float]] = {}
        commands = {
            "python -c pass (interpreter floor)": [sys.executable, "-c", "pass"],
            "import sklearn (library floor)": [sys.executable, "-c", "import sklearn.base"],
        }
        for label, cmd in commands.items():
            times[label] = []
            for _ in range(RUNS):
                started = time.perf_counter()
                subprocess.run(cmd, check=True)
                times[label].append(time.perf_counter() - started)
        for algorithm in ("knn", "logistic_regression", "random_forest"):
            label = f"train {algorithm}"
            times[label] = []
            for i in range(RUNS):
                cmd = [
                    sys.executable,
                    "-m",
                    "modelops_trainer",
                    "train",
                    "--version",
                    f"v{i}",
                    "--output-dir",
                    str(Path(tmp) / algorithm),
                    "--algorithm",
                    algorithm,
                ]
                started = time.perf_counter()
                subprocess.run(cmd, check=True, capture_output=True)
                times[label].append(time.perf_counter() - started)
    floor = statistics.median(times["import sklearn (library floor)"])
    print(f"{'command':40} {'median s':>9} {'min s':>7} {'x sklearn import':>17}")
    for label, values in times.items():
        median = statistics.median(values)
        print(f"{label:40} {median:9.2f} {min(values):7.2f} {median / floor:17.2f}")
    knn = statistics.median(times["train knn"])
    print(
        f"goal: train knn < {GOAL_SECONDS:.0f} s -> {'met' if knn < GOAL_SECONDS else 'NOT met'}"
        f" ({knn:.2f} s)"
    )


if __name__ == "__main__":
    main()
