"""`modelops-trainer` command line: `train` and `gate`.

Exit codes: 0 success / accepted, 1 training failed / rejected, 2 usage error, 143 stopped by
SIGTERM (its pod was deleted: the operator's Job runs it again instead of failing the version).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from modelops_contract.artifact import ArtifactError, accuracy_of, read_metadata
from modelops_contract.gate import GatePolicy, decide

if TYPE_CHECKING:
    from .data import DownloadPolicy

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_TERMINATED = 143  # 128 + SIGTERM, what a shell reports for a process the signal ended


class UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def _param(text: str) -> tuple[str, Any]:
    """`name=value`; the value is read as JSON when it parses (5, 0.1, true, "x", null)."""
    name, sep, raw = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    try:
        value: Any = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return name.strip(), value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text} must be greater than 0")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"{text} must be a finite number greater than 0")
    return value


def _names(text: str) -> tuple[str, ...]:
    return tuple(part.strip().lower() for part in text.split(",") if part.strip())


def _probability(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not (math.isfinite(value) and 0 <= value <= 1):
        raise argparse.ArgumentTypeError(f"{text} is not in [0, 1]")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="modelops-trainer", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    train = sub.add_parser("train", help="train one model version and write its artifact")
    train.add_argument("--version", required=True, help="model version name (e.g. v2)")
    train.add_argument(
        "--output-dir", required=True, type=Path, help="artifacts root; writes OUTPUT_DIR/VERSION"
    )
    train.add_argument("--name", default="iris", help="model name (default: iris)")
    train.add_argument("--algorithm", default="knn", help="knn (default), logistic_regression, …")
    train.add_argument(
        "--param",
        action="append",
        type=_param,
        default=[],
        metavar="NAME=VALUE",
        help="hyperparameter (repeatable), e.g. --param n_neighbors=7",
    )
    train.add_argument(
        "--params-json", default=None, help="hyperparameters as a JSON object (merged first)"
    )
    train.add_argument(
        "--dataset", default="builtin:iris", help="builtin:iris (default), a CSV path or URL"
    )
    train.add_argument(
        "--max-download-bytes",
        type=_positive_int,
        default=None,
        help="largest dataset URL body read, in bytes (default: 64 MiB)",
    )
    train.add_argument(
        "--download-timeout",
        type=_positive_float,
        default=None,
        help="seconds a dataset URL download may take in all (default: 30)",
    )
    train.add_argument(
        "--allowed-url-schemes",
        type=_names,
        default=("https", "http"),
        help="comma-separated schemes a dataset URL (and its redirects) may use (https,http)",
    )
    train.add_argument(
        "--allowed-url-hosts",
        type=_names,
        default=(),
        help="comma-separated hosts a dataset URL may name; '.example.org' allows subdomains "
        "(default: any)",
    )
    train.add_argument("--test-size", type=float, default=0.2, help="held-out fraction (0.2)")
    train.add_argument("--seed", type=int, default=42, help="random seed (42)")
    train.add_argument(
        "--result-file",
        type=Path,
        default=None,
        help="also write the JSON summary here (e.g. /dev/termination-log)",
    )
    train.add_argument(
        "--emit-artifact",
        action="store_true",
        help="print the artifact as one framed line (for the operator to read from the pod "
        "log) and embed it in the summary when that still fits in 4096 bytes",
    )

    gate = sub.add_parser("gate", help="decide whether a candidate may replace the serving model")
    gate.add_argument(
        "--candidate", required=True, help="candidate metadata.json, artifact dir, or accuracy"
    )
    previous = gate.add_mutually_exclusive_group()
    previous.add_argument(
        "--previous", default=None, help="serving model: metadata.json, artifact dir, or accuracy"
    )
    gate.add_argument("--min-accuracy", type=_probability, default=GatePolicy.min_accuracy)
    gate.add_argument(
        "--regression-tolerance", type=_probability, default=GatePolicy.regression_tolerance
    )
    gate.add_argument(
        "--significant-improvement", type=_probability, default=GatePolicy.significant_improvement
    )
    return parser


def _accuracy_from(ref: str) -> float:
    """A number, or the test accuracy recorded in a metadata file / artifact directory."""
    try:
        return float(ref)
    except ValueError:
        pass
    path = Path(ref)
    if not path.exists():
        raise UsageError(f"{ref} is neither an accuracy number nor an existing file or directory")
    try:
        return accuracy_of(read_metadata(path))
    except ArtifactError as exc:
        raise UsageError(str(exc)) from None


def _emit(summary: dict[str, Any], result_file: Path | None) -> None:
    from .train import encode_summary

    text = encode_summary(summary)
    print(text)
    if result_file is not None:
        result_file.parent.mkdir(parents=True, exist_ok=True)
        result_file.write_text(text)


def _download_policy(args: argparse.Namespace) -> DownloadPolicy:
    from .data import DownloadPolicy

    base = DownloadPolicy()
    return DownloadPolicy(
        max_bytes=args.max_download_bytes or base.max_bytes,
        timeout_seconds=args.download_timeout or base.timeout_seconds,
        schemes=args.allowed_url_schemes,
        hosts=args.allowed_url_hosts,
    )


def _stop(signum: int, frame: object) -> None:
    # As PID 1 of a container (the operator's Job shares the pod's process namespace, so
    # there it is not) the trainer would ignore SIGTERM without a handler: the pod would wait
    # out its grace period and die by SIGKILL. Nothing half-written is reported: no result
    # file, a distinct exit code.
    os._exit(EXIT_TERMINATED)


def _run_train(args: argparse.Namespace) -> int:
    signal.signal(signal.SIGTERM, _stop)
    from .data import DataError
    from .pipeline import ParamError
    from .train import TrainConfig, failure_summary, result_summary, train

    params: dict[str, Any] = {}
    if args.params_json:
        try:
            loaded = json.loads(args.params_json)
        except json.JSONDecodeError as exc:
            raise UsageError(f"--params-json is not valid JSON: {exc.msg}") from None
        if not isinstance(loaded, dict):
            raise UsageError("--params-json must be a JSON object")
        params.update(loaded)
    params.update(dict(args.param))
    config = TrainConfig(
        version=args.version,
        output_dir=args.output_dir,
        name=args.name,
        algorithm=args.algorithm,
        params=params,
        dataset=args.dataset,
        test_size=args.test_size,
        seed=args.seed,
        download=_download_policy(args),
    )
    reasons: list[tuple[type[Exception], str]] = [
        (DataError, "InvalidData"),
        (ParamError, "InvalidParameters"),
        (ArtifactError, "ArtifactError"),
    ]
    # Said once SIGTERM is handled: from here on a deleted pod exits 143, and is run again.
    print(f"modelops-trainer: training {args.version} ({args.algorithm})", file=sys.stderr)
    try:
        result = train(config)
    except (DataError, ParamError, ArtifactError) as exc:
        reason = next(code for kind, code in reasons if isinstance(exc, kind))
        print(f"modelops-trainer: error: {exc}", file=sys.stderr)
        _emit(failure_summary(args.version, reason, str(exc)), args.result_file)
        return EXIT_FAILED
    summary = result_summary(result)
    if args.emit_artifact:
        from modelops_contract import bundle

        from .train import RESULT_LIMIT_BYTES

        packed = bundle.pack(result.artifact)
        print(bundle.log_line(packed))
        summary = bundle.attach(summary, packed, RESULT_LIMIT_BYTES)
    _emit(summary, args.result_file)
    return EXIT_OK


def _run_gate(args: argparse.Namespace) -> int:
    candidate = _accuracy_from(args.candidate)
    previous = None if args.previous is None else _accuracy_from(args.previous)
    policy = GatePolicy(
        min_accuracy=args.min_accuracy,
        regression_tolerance=args.regression_tolerance,
        significant_improvement=args.significant_improvement,
    )
    decision = decide(candidate, previous, policy)
    print(json.dumps(decision.to_dict(), sort_keys=True))
    stream = sys.stderr
    label = "WARNING" if decision.warning else ("ACCEPTED" if decision.accepted else "REJECTED")
    print(f"gate: {label} ({decision.reason}): {decision.message}", file=stream)
    return EXIT_OK if decision.accepted else EXIT_FAILED


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "train":
            return _run_train(args)
        return _run_gate(args)
    except UsageError as exc:
        print(f"modelops-trainer: error: {exc}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
