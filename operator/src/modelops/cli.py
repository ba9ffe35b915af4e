"""`modelops` command: `modelops operator` runs the operator; `modelops local` runs a
ModelDeployment on this machine without Kubernetes."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="modelops", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser(
        "operator",
        help="run the ModelDeployment operator (settings from MODELOPS_* environment)",
        add_help=False,
    )
    local = sub.add_parser("local", help="run a ModelDeployment as local processes")
    local_sub = local.add_subparsers(dest="local_command", required=True)
    state_default = Path(os.environ.get("MODELOPS_STATE_DIR", ".modelops"))

    up = local_sub.add_parser(
        "up", help="train, gate and serve a ModelDeployment YAML until Ctrl-C (or --duration)"
    )
    up.add_argument("-f", "--file", type=Path, required=True, help="ModelDeployment YAML")
    up.add_argument("--duration", type=float, default=None, help="stop after this many seconds")
    up.add_argument(
        "--state-dir",
        type=Path,
        default=state_default,
        help="artifacts and history (default: $MODELOPS_STATE_DIR or ./.modelops)",
    )
    up.add_argument("--json", action="store_true", help="print the final object as JSON")
    up.add_argument("--prometheus-port", type=int, default=9090, help="Prometheus port (9090)")
    up.add_argument("--no-prometheus", action="store_true", help="run without Prometheus")
    up.add_argument("--config-dir", type=Path, default=None, help="the repository's config/")

    status = local_sub.add_parser("status", help="show the saved status of local runs")
    status.add_argument("--state-dir", type=Path, default=state_default)
    status.add_argument("--json", action="store_true", help="as JSON")
    return parser


def _status(state_dir: Path, as_json: bool) -> int:
    from .local.runner import StatusView

    saved = sorted(state_dir.glob("*/status.json"))
    objects = []
    for path in saved:
        data = json.loads(path.read_text())
        objects.append(
            {
                "apiVersion": data["apiVersion"],
                "kind": data["kind"],
                "metadata": {"name": data["name"], "generation": data["generation"]},
                "spec": data["spec"],
                "status": data["status"],
            }
        )
    if as_json:
        print(json.dumps({"items": objects}, indent=2, sort_keys=True))
        return 0
    if not objects:
        print(f"no local ModelDeployments in {state_dir}")
        return 0
    view = StatusView(sys.stdout, 0.0)
    for obj in objects:
        view.last_row = None
        view.status(obj)
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["operator"]:
        from .operator import main as operator_main

        return operator_main(argv[1:])
    args = _build_parser().parse_args(argv)
    if args.local_command == "status":
        return _status(args.state_dir, args.json)
    from .local.runner import Options, main_up

    return main_up(
        Options(
            file=args.file,
            state_dir=args.state_dir,
            duration=args.duration,
            json_output=args.json,
            prometheus=not args.no_prometheus,
            prometheus_port=args.prometheus_port,
            config_dir=args.config_dir,
        )
    )


if __name__ == "__main__":
    sys.exit(main())
