"""``modelops-server``: verify, load and warm the model, then serve it with uvicorn.

The artifact is loaded before the port opens, so a bad artifact ends the process with a
non-zero status and one line on stderr (what is wrong, what to do) that the operator can show.
"""

from __future__ import annotations

import argparse
import logging.config
import sys
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from . import __version__
from .errors import ModelLoadError
from .logs import log_config
from .settings import ENV_PREFIX, ServerSettings

EXIT_CONFIG = 2  # bad settings or artifact


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="modelops-server",
        description="Serve one modelops model version over HTTP (seed API + Open Inference "
        f"Protocol v2). Every setting is also an environment variable {ENV_PREFIX}<NAME>; "
        "flags win over the environment.",
    )
    parser.add_argument("--artifact-dir", type=Path, help="model version directory (required)")
    parser.add_argument("--host", help="address to listen on (default 0.0.0.0)")
    parser.add_argument("--port", type=int, help="HTTP port to listen on (default 8000)")
    parser.add_argument(
        "--grpc-port", type=int, help="OIP gRPC port to listen on (default 0: off; 8001 in k8s)"
    )
    parser.add_argument("--model-name", help="name under /v2/models/ (default: the artifact's)")
    parser.add_argument("--model-sha256", help="refuse a model file without this sha256")
    parser.add_argument("--log-level", choices=["debug", "info", "warning", "error", "critical"])
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return parser.parse_args(argv)


def load_settings(args: argparse.Namespace) -> ServerSettings:
    overrides: dict[str, Any] = {
        key: value
        for key, value in {
            "artifact_dir": args.artifact_dir,
            "host": args.host,
            "port": args.port,
            "grpc_port": args.grpc_port,
            "model_name": args.model_name,
            "model_sha256": args.model_sha256,
            "log_level": args.log_level,
        }.items()
        if value is not None
    }
    return ServerSettings(**overrides)


def describe_settings_error(exc: ValidationError) -> str:
    problems = []
    for error in exc.errors(include_url=False):
        field = ".".join(str(part) for part in error["loc"])
        env = f"{ENV_PREFIX}{field.upper()}"
        if error["type"] == "missing":
            flag = f"--{field.replace('_', '-')} or " if field == "artifact_dir" else ""
            problems.append(f"{env} is not set; pass {flag}set {env}")
        else:
            problems.append(f"{env}: {error['msg']}")
    return "; ".join(problems)


def fail(message: str) -> int:
    print(f"modelops-server: error: {message}", file=sys.stderr)
    return EXIT_CONFIG


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        settings = load_settings(args)
    except ValidationError as exc:
        return fail(describe_settings_error(exc))
    logging.config.dictConfig(log_config(settings.log_level))

    from .model import load_model

    try:
        model = load_model(
            settings.artifact_dir,
            settings.model_name,
            expected_sha256=settings.model_sha256,
        )
        model.warm_up()
    except ModelLoadError as exc:
        return fail(str(exc))

    from .server import run

    run(settings, model)
    return 0


if __name__ == "__main__":
    sys.exit(main())
