"""`modelops-loadgen`: continuous (until SIGTERM) or bounded runs with a summary.

Exit codes: 0 done; 1 --strict and the generator could not keep up; 2 bad settings.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
from collections.abc import Sequence
from typing import Any

from pydantic import ValidationError

from modelops_loadgen import __version__, logs
from modelops_loadgen.report import Summary, format_text
from modelops_loadgen.settings import ENV_PREFIX, LoadgenSettings
from modelops_loadgen.targets import TargetError

log = logging.getLogger("modelops_loadgen.cli")

EXIT_OK = 0
EXIT_BEHIND = 1
EXIT_USAGE = 2


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="modelops-loadgen",
        description="Open-loop load generator for the modelops model server. Settings come from "
        f"the environment (API_HOST, API_PORT, {ENV_PREFIX}*); flags override them. Without "
        "--duration/--requests it runs until SIGTERM/SIGINT, then prints the summary.",
    )
    a = p.add_argument
    a(
        "--target",
        action="append",
        dest="targets",
        metavar="URL",
        help="base URL such as http://127.0.0.1:8000; repeat to spread requests round-robin",
    )
    a(
        "--targets-file",
        metavar="PATH",
        help="JSON list of base URLs, re-read when it changes (replicas rolled under a live run)",
    )
    a("--host", dest="api_host", help="target host when no --target is given (env API_HOST)")
    a("--port", dest="api_port", type=int, help="target port (env API_PORT)")
    a("--rate", type=float, help="requests per second (default 1)")
    a("--arrival", choices=["constant", "poisson"], help="inter-arrival times (default constant)")
    a(
        "--mode",
        choices=["open", "closed"],
        help="open: on schedule (default); closed: back-to-back capacity measurement",
    )
    a(
        "--endpoint",
        choices=["predict", "batch", "infer", "grpc"],
        help="API to load (default predict); grpc: OIP ModelInfer, targets grpc://HOST:PORT",
    )
    a(
        "--payload",
        choices=["uniform", "iris"],
        help="uniform: the seed's random features; iris: real rows, checks accuracy",
    )
    a("--batch-size", type=int, help="rows per request for batch/infer (default 8 / 1)")
    a("--concurrency", type=int, help="max requests in flight (default 256)")
    a("--timeout", type=float, help="per-request timeout in seconds (default 10)")
    a(
        "--max-lateness",
        type=float,
        help="seconds behind schedule after which a request is skipped (default 2)",
    )
    a(
        "--lag-limit",
        type=float,
        help="schedule-lag p99 (s) above which the run counts as behind (default 0.025)",
    )
    a("--metrics-port", type=int, help="Prometheus metrics port (default 9100, 0 = off)")
    a("--metrics-host", help="address the metrics server binds (default 0.0.0.0)")
    a("--model-name", help="model name in /v2/models/{name}/infer (default iris)")
    a(
        "--feedback",
        action=argparse.BooleanOptionalAction,
        help="send iris rows' true species to POST /feedback (default on)",
    )
    a("--seed", type=int, help="random seed for payloads and Poisson arrivals")
    a("--duration", type=float, help="bounded run: stop after this many seconds")
    a("--requests", type=int, help="bounded run: stop after this many requests")
    a("--summary-interval", type=float, help="log progress every N seconds (0 = never)")
    a("--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    a("--json", action="store_true", help="print the summary as JSON")
    a("--strict", action="store_true", help="exit 1 if the generator could not keep up")
    a("--version", action="version", version=f"%(prog)s {__version__}")
    return p  # fmt: skip


_NOT_SETTINGS = {"json", "strict"}


def settings_from_args(args: argparse.Namespace) -> LoadgenSettings:
    overrides: dict[str, Any] = {
        k: v for k, v in vars(args).items() if k not in _NOT_SETTINGS and v is not None
    }
    # A target flag replaces whatever target source the environment named.
    if args.targets and "targets_file" not in overrides:
        overrides["targets_file"] = None
    if args.targets_file and not args.targets:
        overrides["targets"] = []
    return LoadgenSettings(**overrides)


def _describe_validation(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(x) for x in err["loc"]) or "settings"
        parts.append(f"{loc}: {err['msg']} (got {err.get('input')!r})")
    return "; ".join(parts)


def _emit(summary: Summary, as_json: bool) -> None:
    if as_json:
        print(json.dumps(summary.to_dict(), indent=2, sort_keys=True))
    else:
        print(format_text(summary))
    sys.stdout.flush()


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = settings_from_args(args)
    except ValidationError as exc:
        print(f"modelops-loadgen: invalid settings: {_describe_validation(exc)}", file=sys.stderr)
        return EXIT_USAGE
    logs.configure(settings.log_level)

    # Imported here so `--help` and settings errors stay fast.
    from modelops_loadgen.metrics import serve_metrics
    from modelops_loadgen.runner import Generator, uvloop_runner

    try:
        gen = Generator(settings)
    except (TargetError, ValueError) as exc:
        print(f"modelops-loadgen: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if settings.metrics_port:
        try:
            serve_metrics(gen, settings.metrics_host, settings.metrics_port)
        except OSError as exc:
            print(
                f"modelops-loadgen: cannot serve metrics on {settings.metrics_host}:"
                f"{settings.metrics_port} ({exc.strerror}); choose another "
                f"{ENV_PREFIX}METRICS_PORT / --metrics-port, or 0 to turn metrics off",
                file=sys.stderr,
            )
            return EXIT_USAGE
        log.info(
            "metrics served",
            extra={"host": settings.metrics_host, "port": settings.metrics_port},
        )

    signals_seen = 0

    def on_signal(signum: int) -> None:
        nonlocal signals_seen
        signals_seen += 1
        log.info("signal received", extra={"signal": signal.Signals(signum).name})
        gen.stop(force=signals_seen > 1)  # a second signal cancels requests in flight

    with uvloop_runner() as runner:
        loop = runner.get_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, on_signal, sig)
        summary = runner.run(gen.run())
    _emit(summary, args.json)
    if args.strict and summary.behind:
        log.error("the generator could not keep up", extra={"reasons": summary.behind_reasons})
        return EXIT_BEHIND
    return EXIT_OK
