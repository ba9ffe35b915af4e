"""`make bench`: run every bench/bench_*.py (or those named on the command line) in turn.

Each benchmark prints its own table with ratios against baselines measured in the same run.
A failing benchmark is reported and the others still run; the exit code is non-zero then.
"""

from __future__ import annotations

import platform
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import os

    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, {platform.system()}"


def main(argv: list[str]) -> int:
    names = argv or sorted(p.stem.removeprefix("bench_") for p in HERE.glob("bench_*.py"))
    print(f"machine: {machine()}")
    failed = []
    for name in names:
        script = HERE / f"bench_{name}.py"
        print(f"\n=== {name} ({script.relative_to(HERE.parent)}) ===", flush=True)
        started = time.monotonic()
        code = subprocess.call([sys.executable, str(script)])
        print(
            f"--- {name}: {'ok' if code == 0 else f'FAILED (exit {code})'} "
            f"in {time.monotonic() - started:.0f} s",
            flush=True,
        )
        if code:
            failed.append(name)
    if failed:
        print(f"\nfailed benchmarks: {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
