"""`modelops local up`: run one ModelDeployment YAML on this machine until stopped."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import yaml

from .. import names
from ..core.state import Event
from ..names import KIND
from ..settings import Settings
from ..validation import ValidationError, validate
from .driver import LocalDriver
from .processes import ManagedProcess, PortBusyError, check_port_free
from .state import LocalPaths

log = logging.getLogger("modelops.local")

PASS_SECONDS = 0.5


class LocalError(RuntimeError):
    """A problem a newcomer can meet; the message is one line saying what to do."""


@dataclass(frozen=True)
class Options:
    file: Path
    state_dir: Path
    duration: float | None = None
    json_output: bool = False
    prometheus: bool = True
    prometheus_port: int = 9090
    config_dir: Path | None = None


def load_manifest(path: Path) -> dict[str, Any]:
    """Read the first ModelDeployment of a YAML file and validate it against the CRD."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise LocalError(f"{path} does not exist; pass a ModelDeployment YAML with -f") from None
    except OSError as exc:
        raise LocalError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        documents = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise LocalError(f"{path} is not valid YAML{where}: {problem}") from None
    found = [d for d in documents if isinstance(d, dict) and d.get("kind") == KIND]
    if not found:
        raise LocalError(
            f"{path} holds no {KIND} (kind: {KIND}, apiVersion: modelops.dev/v1alpha1)"
        )
    try:
        return validate(found[0])
    except ValidationError as exc:
        raise LocalError(f"{path}: {exc}") from None


def find_config_dir(explicit: Path | None) -> Path:
    """The repository's config/ (Prometheus configuration and rules)."""
    candidates = [explicit] if explicit else []
    if os.environ.get("MODELOPS_CONFIG_DIR"):
        candidates.append(Path(os.environ["MODELOPS_CONFIG_DIR"]))
    for base in (Path.cwd(), Path(__file__).resolve()):
        candidates.extend(parent / "config" for parent in [base, *base.parents])
    for candidate in candidates:
        if candidate and (candidate / "prometheus" / "local" / "prometheus.yml").is_file():
            return candidate
    raise LocalError(
        "cannot find config/prometheus/local/prometheus.yml; run from the modelops checkout "
        "or set MODELOPS_CONFIG_DIR"
    )


class StatusView:
    """Prints a `kubectl get md -w`-like row on every change, and events as they happen."""

    COLUMNS = ("NAME", "VERSION", "SERVING", "ACCURACY", "GATE", "READY", "PHASE", "AGE")

    def __init__(self, out: TextIO, started: float) -> None:
        self.out = out
        self.started = started
        self.last_row: tuple[str, ...] | None = None
        self.header_shown = False

    @staticmethod
    def row(cr: dict[str, Any], age: str) -> tuple[str, ...]:
        status = cr.get("status") or {}
        accuracy = status.get("accuracy")
        return (
            cr["metadata"]["name"],
            str(cr["spec"].get("modelVersion", "")),
            str(status.get("servingVersion") or "<none>"),
            f"{accuracy:.4f}" if isinstance(accuracy, int | float) else "<none>",
            str((status.get("gate") or {}).get("result") or "<none>"),
            str(status.get("ready") or "0/0"),
            str(status.get("phase") or names.PENDING),
            age,
        )

    def _age(self) -> str:
        seconds = int(time.monotonic() - self.started)
        return f"{seconds}s" if seconds < 120 else f"{seconds // 60}m{seconds % 60}s"

    def status(self, cr: dict[str, Any]) -> None:
        row = self.row(cr, self._age())
        if self.last_row is not None and row[:-1] == self.last_row[:-1]:
            return
        self.last_row = row
        widths = (12, 10, 10, 9, 9, 6, 11, 6)
        if not self.header_shown:
            self.header_shown = True
            self._print("".join(c.ljust(w) for c, w in zip(self.COLUMNS, widths, strict=True)))
        self._print("".join(v.ljust(w) for v, w in zip(row, widths, strict=True)))

    def event(self, event: Event) -> None:
        self._print(f"  {event.type:<8}{event.reason:<20}{event.message}")

    def line(self, text: str) -> None:
        self._print(text)

    def _print(self, text: str) -> None:
        self.out.write(text.rstrip() + "\n")
        self.out.flush()


async def _start_prometheus(
    options: Options, paths: LocalPaths, view: StatusView
) -> ManagedProcess | None:
    if not options.prometheus:
        return None
    binary = shutil.which("prometheus")
    if binary is None:
        view.line(
            "prometheus is not installed (Debian: apt-get install prometheus; `make demo` "
            "installs it): running without metrics storage"
        )
        return None
    config_dir = find_config_dir(options.config_dir)
    template = (config_dir / "prometheus" / "local" / "prometheus.yml").read_text()
    paths.scrape_dir.mkdir(parents=True, exist_ok=True)
    config = template.replace("@FILE_SD_DIR@", str(paths.scrape_dir)).replace(
        "@RULES_DIR@", str((config_dir / "prometheus" / "rules").resolve())
    )
    config_file = paths.run / "prometheus.yml"
    config_file.write_text(config)
    address = f"127.0.0.1:{options.prometheus_port}"
    process = ManagedProcess(
        name="prometheus",
        argv=[
            binary,
            f"--config.file={config_file}",
            f"--storage.tsdb.path={paths.run / 'prometheus-data'}",
            "--storage.tsdb.retention.time=2d",
            f"--web.listen-address={address}",
            "--web.enable-lifecycle",
        ],
        log_path=paths.logs / "prometheus.log",
        ready_url=f"http://{address}/-/ready",
    )
    await process.start()
    await process.wait_ready(30)
    return process


def preflight(options: Options) -> None:
    """Checks that must fail before anything starts or prints, each with its own message."""
    if options.prometheus and shutil.which("prometheus") is not None:
        check_port_free(options.prometheus_port, "Prometheus", "--prometheus-port")


class SpecFile:
    """The YAML being run: a change of its spec is applied, an invalid one reported."""

    def __init__(self, path: Path, view: StatusView, md: LocalDriver) -> None:
        self.path, self.view, self.md = path, view, md
        self.mtime = path.stat().st_mtime_ns

    def check(self) -> None:
        with contextlib.suppress(OSError):
            current = self.path.stat().st_mtime_ns
            if current == self.mtime:
                return
            self.mtime = current
            try:
                changed = load_manifest(self.path)
            except LocalError as exc:
                self.view.event(
                    Event(
                        names.WARNING,
                        names.EVENT_INVALID_SPEC,
                        f"{exc} (keeping the last good spec)",
                    )
                )
                return
            if self.md.update_spec(changed["spec"]):
                self.view.event(
                    Event(names.NORMAL, names.EVENT_SPEC_CHANGED, f"{self.path} changed")
                )


def _show_serving(view: StatusView, md: LocalDriver, shown: str | None) -> str | None:
    """Print where a newly serving version answers (once per version)."""
    serving = (md.status or {}).get("servingVersion")
    urls = md.serving_urls()
    if not (serving and urls and serving != shown):
        return shown
    view.line(
        f"  {serving} serving at {', '.join(urls)}; try:\n    curl -s -X POST "
        f"{urls[0]}/predict -H 'Content-Type: application/json' -d "
        '\'{"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, '
        '"petal_width": 0.2}\''
    )
    return str(serving)


async def run(options: Options, out: TextIO = sys.stdout) -> int:
    manifest = load_manifest(options.file)
    preflight(options)
    name = manifest["metadata"]["name"]
    paths = LocalPaths(options.state_dir.resolve() / name)
    for directory in (paths.root, paths.run, paths.logs):
        directory.mkdir(parents=True, exist_ok=True)
    view = StatusView(out, time.monotonic())
    # A rollout's analysis queries the Prometheus local mode runs (unless the spec names one).
    settings = Settings(
        log_format="text", prometheus_url=f"http://127.0.0.1:{options.prometheus_port}"
    )
    md = LocalDriver(
        name=name,
        spec=manifest["spec"],
        paths=paths,
        settings=settings,
        on_event=view.event,
        on_status=view.status,
    )
    md.load_state()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    prometheus: ManagedProcess | None = None
    exit_code = 0
    try:
        prometheus = await _start_prometheus(options, paths, view)
        view.line(f"modelops local: {name} from {options.file} (state: {paths.root})")
        if prometheus is not None:
            view.line(f"prometheus: http://127.0.0.1:{options.prometheus_port}")
        deadline = None if options.duration is None else time.monotonic() + options.duration
        watch = SpecFile(options.file, view, md)
        shown_version: str | None = None
        while not stop.is_set():
            if deadline is not None and time.monotonic() >= deadline:
                break
            watch.check()
            try:
                await md.reconcile()
            except ValueError as exc:
                view.event(Event(names.WARNING, names.EVENT_RECONCILE_ERROR, str(exc)))
            shown_version = _show_serving(view, md, shown_version)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), PASS_SECONDS)
    finally:
        summary = md.load_summary()
        if summary:
            view.line(summary)
        view.line("stopping: load generator, servers, trainers, prometheus ...")
        await md.shutdown()
        if prometheus is not None:
            await prometheus.stop()
        md.save_state()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    if options.json_output:
        out.write(json.dumps(md.cr(), indent=2, sort_keys=True) + "\n")
    else:
        view.line("stopped; state kept in " + str(paths.root))
    return exit_code


def main_up(options: Options) -> int:
    try:
        return asyncio.run(run(options))
    except (LocalError, PortBusyError) as exc:
        print(f"modelops local: error: {exc}", file=sys.stderr)  # noqa: T201
        return 1
    except RuntimeError as exc:  # a process that would not start (e.g. Prometheus)
        print(f"modelops local: error: {exc}", file=sys.stderr)  # noqa: T201
        return 1
