"""The engine: CONCURRENCY workers share one arrival schedule.

Open loop: each free worker claims the next slot of the schedule, sleeps until its intended
time and sends, whether or not earlier requests have returned. Latency is measured from the
intended time, so a slow server shows as latency rather than silently slowing the generator
(no coordinated omission). When every worker is busy the next slot waits for one and its
lateness is recorded as schedule lag; a slot more than MAX_LATENESS late is not sent but
counted ('skipped'), so memory stays bounded and an outage ends without a catch-up storm.

Closed loop: each worker sends back-to-back (capacity measurement).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import random
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Protocol

from modelops_loadgen.httpclient import (
    ConnectError,
    DisconnectedError,
    Endpoint,
    HttpClient,
    HttpClientError,
    ProtocolError,
)
from modelops_loadgen.payloads import (
    BadResponse,
    PayloadSource,
    endpoint_path,
    feedback_body,
    parse_answer,
)
from modelops_loadgen.report import Summary, behind_reasons, build_summary
from modelops_loadgen.schedule import Schedule, make_schedule
from modelops_loadgen.settings import LoadgenSettings
from modelops_loadgen.stats import RunStats, window_percentile
from modelops_loadgen.targets import TargetSet, TargetsFileWatcher, read_targets_file

log = logging.getLogger("modelops_loadgen.runner")

clock = time.perf_counter

# Workers start this long after the run's clock starts, so spawning them is not lag.
_START_GRACE = 0.02
_WINDOW_SECONDS = 10.0
_ERROR_LOG_INTERVAL = 10.0


@dataclass
class LiveView:
    """What the metrics endpoint shows between scrapes; updated once a second."""

    achieved_rate: float = 0.0
    lag_p99: float = float("nan")
    behind: bool = False


def initial_targets(settings: LoadgenSettings) -> list[str]:
    if settings.targets:
        return list(settings.targets)
    if settings.targets_file is not None:
        return read_targets_file(settings.targets_file)
    return [settings.default_target]


class Client(Protocol):
    """HttpClient or GrpcClient: one request, answer (status, body), or an HttpClientError."""

    # Requests sent once more because a kept-alive connection closed before any byte of the
    # answer (the HTTP client's stale-connection race; see httpclient.py).
    resent: int

    async def post(self, ep: Any, body: bytes) -> tuple[int, bytes]: ...

    def drop_idle(self, keep: set[tuple[str, str, int]]) -> None: ...

    async def close(self) -> None: ...


class Generator:
    def __init__(self, settings: LoadgenSettings, stats: RunStats | None = None) -> None:
        self.settings = settings
        self.stats = stats if stats is not None else RunStats()
        self.live = LiveView()
        rng = random.Random(settings.seed)
        self.payload = PayloadSource(
            settings.payload, settings.endpoint, settings.rows_per_request, rng, settings.model_name
        )
        self._schedule: Schedule = make_schedule(
            settings.arrival, settings.rate, random.Random(rng.random())
        )
        self.targets = TargetSet(
            initial_targets(settings), endpoint_path(settings.endpoint, settings.model_name)
        )
        self._open = settings.mode == "open"
        self._rows = settings.rows_per_request
        self._endpoint = settings.endpoint
        self._max_late = settings.max_lateness
        self._headers = {"Content-Type": "application/json"}
        self._feedback = settings.feedback and settings.payload == "iris"
        self._start = 0.0
        self._end = float("inf")
        self._next_t = 0.0
        self._remaining: int | None = settings.requests
        self._seq = 0
        self._stopping = False
        self._stopped_at: float | None = None
        self._sleeping: set[asyncio.Task[None]] = set()
        self._workers: list[asyncio.Task[None]] = []
        self._last_error_log: dict[str, float] = {}
        self._schedule_end: float | None = None
        self._client: Client | None = None
        self._cpu0 = 0.0
        self._cpu: float | None = None

    @property
    def resent(self) -> int:
        return self._client.resent if self._client is not None else 0

    # -- control ---------------------------------------------------------------------------

    def stop(self, *, force: bool = False) -> None:
        """Stop claiming new requests; in-flight ones finish (force: cancel them too)."""
        if not self._stopping:
            self._stopping = True
            self._stopped_at = clock()
            log.info("stopping: no new requests, waiting for those in flight")
        for task in list(self._sleeping):
            task.cancel()
        if force:
            for task in self._workers:
                task.cancel()

    @property
    def started(self) -> bool:
        return self._start > 0

    # -- schedule --------------------------------------------------------------------------

    def _claim(self) -> tuple[int, float] | None:
        """The next slot to send (sequence number, intended time), skipping hopeless ones."""
        while not self._stopping:
            if self._remaining is not None and self._remaining <= 0:
                self._mark_schedule_end(self._next_t)
                return None
            t = self._next_t
            if t >= self._end:
                return None
            self._next_t = self._start + self._schedule.next_offset()
            if self._remaining is not None:
                self._remaining -= 1
            seq = self._seq
            self._seq += 1
            if clock() - t > self._max_late:
                self.stats.record_not_sent("skipped")
                continue
            return seq, t
        return None

    def _mark_schedule_end(self, t: float) -> None:
        if self._schedule_end is None:
            self._schedule_end = t

    def backlog(self) -> float:
        """How late (seconds) the next unclaimed slot already is; 0 when on time."""
        if not self._open or not self.started or self._stopping:
            return 0.0
        if self._remaining is not None and self._remaining <= 0:
            return 0.0
        if self._next_t >= self._end:
            return 0.0
        return max(0.0, clock() - self._next_t)

    def _count_unsent_backlog(self, until: float) -> None:
        """At a stop, slots that were due but never claimed count as skipped (honest ratio)."""
        n = 0
        while self._next_t <= until and self._next_t < self._end and n < 10_000_000:
            if self._remaining is not None:
                if self._remaining <= 0:
                    break
                self._remaining -= 1
            self._next_t = self._start + self._schedule.next_offset()
            self.stats.record_not_sent("skipped")
            n += 1

    # -- workers ---------------------------------------------------------------------------

    async def _sleep_until(self, t: float) -> None:
        delay = t - clock()
        if delay > 0:
            task = asyncio.current_task()
            assert task is not None
            self._sleeping.add(task)
            try:
                # uvloop's timers tick in whole milliseconds and may fire up to ~1 ms early.
                # Spinning to the exact microsecond would burn a core at high rates, so such a
                # request leaves a little early and its latency counts from when it left.
                await asyncio.sleep(delay)
            finally:
                self._sleeping.discard(task)

    async def _open_worker(self, client: Client) -> None:
        while True:
            slot = self._claim()
            if slot is None:
                return
            seq, t = slot
            try:
                await self._sleep_until(t)
            except asyncio.CancelledError:
                if self._stopping:
                    return  # woken by stop(): this slot was never due
                raise
            await self._send(client, seq, t)

    async def _closed_worker(self, client: Client) -> None:
        while not self._stopping:
            if self._remaining is not None:
                if self._remaining <= 0:
                    return
                self._remaining -= 1
            if clock() >= self._end:
                return
            seq = self._seq
            self._seq += 1
            await self._send(client, seq, 0.0)

    def _note_error(self, outcome: str, detail: str, url: object) -> None:
        now = clock()
        if now - self._last_error_log.get(outcome, -1e9) >= _ERROR_LOG_INTERVAL:
            self._last_error_log[outcome] = now
            log.warning(
                "request failed",
                extra={"outcome": outcome, "detail": detail, "url": str(url)},
            )

    async def _send(self, client: Client, seq: int, intended: float) -> None:
        stats = self.stats
        endpoints = self.targets.endpoints
        if not endpoints:
            stats.record_not_sent("no_target")
            self._note_error("no_target", "the targets file lists no target", "-")
            return
        index = seq % len(endpoints)
        ep = endpoints[index]
        feedback = self.targets.feedback[index] if self._feedback else None
        body, expected = self.payload.next()
        t0 = clock()
        if self._open and t0 > intended:
            stats.lag.observe(t0 - intended)
        else:
            if self._open:
                stats.lag.observe(0.0)  # left (slightly) early: on time
            intended = t0
        stats.sent += 1
        stats.in_flight += 1
        outcome = "ok"
        code = ""
        answered: list[tuple[str, str]] = []

        def then(status: int, raw: bytes) -> tuple[Endpoint, bytes] | None:
            stats.latency.observe(clock() - intended)
            found, prediction_id = self._check(status, raw, expected, ep)
            answered.append(found)
            if feedback is None or expected is None or not prediction_id:
                return None
            return feedback, feedback_body(prediction_id, expected)

        try:
            if feedback is not None and expected is not None and isinstance(client, HttpClient):
                assert isinstance(ep, Endpoint)
                self._count_feedback(await client.post_then(ep, body, then), feedback)
            else:
                then(*await client.post(ep, body))
            outcome, code = answered[0]
        except TimeoutError as exc:
            # The latency of a timed-out request is a lower bound; kept so the tail shows it.
            stats.latency.observe(clock() - intended)
            outcome = "timeout"
            self._note_error(outcome, str(exc), ep.url)
        except ConnectError as exc:
            outcome = "connect_error"
            self._note_error(outcome, str(exc), ep.url)
        except DisconnectedError as exc:
            outcome = "disconnected"
            self._note_error(outcome, str(exc), ep.url)
        except ProtocolError as exc:
            outcome = "bad_response"
            self._note_error(outcome, str(exc), ep.url)
        except HttpClientError as exc:
            outcome = "client_error"
            self._note_error(outcome, f"{type(exc).__name__}: {exc}", ep.url)
        except asyncio.CancelledError:
            stats.record("aborted")
            raise
        except Exception:
            # A bug must not silently kill a worker (and shrink the concurrency): count it,
            # log it with its traceback, keep going.
            outcome = "client_error"
            if clock() - self._last_error_log.get("internal", -1e9) >= _ERROR_LOG_INTERVAL:
                self._last_error_log["internal"] = clock()
                log.exception("unexpected error while sending", extra={"url": ep.url})
        finally:
            stats.in_flight -= 1
        stats.record(outcome, code)

    def _check(
        self, status: int, raw: bytes, expected: list[str] | None, ep: object
    ) -> tuple[tuple[str, str], str]:
        """((outcome, code), prediction id) of an answer; counts the labels it got right."""
        if not 200 <= status < 300:
            self._note_error("http_error", f"HTTP {status}: {raw[:200]!r}", ep)
            return ("http_error", str(status)), ""
        try:
            labels, prediction_id = parse_answer(self._endpoint, raw, self._rows)
        except BadResponse as exc:
            self._note_error("bad_response", str(exc), ep)
            return ("bad_response", str(status)), ""
        if expected is not None:
            self.stats.checked += len(expected)
            self.stats.correct += sum(1 for a, b in zip(labels, expected, strict=True) if a == b)
        return ("ok", str(status)), prediction_id

    def _count_feedback(
        self, answer: tuple[int, bytes] | HttpClientError | None, ep: Endpoint
    ) -> None:
        if answer is None:
            return  # nothing to send (the prediction failed or carried no id)
        if isinstance(answer, HttpClientError):
            self.stats.record_feedback("error")
            self._note_error("feedback_error", str(answer), ep.url)
        elif 200 <= answer[0] < 300:
            self.stats.record_feedback("ok")
        else:
            self.stats.record_feedback("refused")
            self._note_error("feedback_refused", f"HTTP {answer[0]}: {answer[1][:200]!r}", ep.url)

    # -- monitoring ------------------------------------------------------------------------

    async def _monitor(self) -> None:
        """Once a second: windowed achieved rate, lag p99 and the behind verdict."""
        history: deque[tuple[float, int, int, list[int]]] = deque()
        last_progress = clock()
        interval = self.settings.summary_interval
        while True:
            await asyncio.sleep(1.0)
            now = clock()
            if self._client is not None:
                # Connections to targets that left the list are closed once they are idle.
                self._client.drop_idle({ep.key for ep in self.targets.endpoints})
            skipped = self.stats.counts.get(("skipped", ""), 0)
            snap = (now, self.stats.sent, skipped, self.stats.lag.snapshot())
            history.append(snap)
            while len(history) > 1 and now - history[0][0] > _WINDOW_SECONDS:
                history.popleft()
            t0, sent0, skipped0, lag0 = history[0]
            span = now - max(t0, self._start) if len(history) > 1 else now - self._start
            sent_w = self.stats.sent - (sent0 if len(history) > 1 else 0)
            skipped_w = skipped - (skipped0 if len(history) > 1 else 0)
            if len(history) > 1:
                lag_p99 = window_percentile(snap[3], lag0, 0.99)
            else:
                lag_p99 = self.stats.lag.percentile(0.99)
            self.live.achieved_rate = sent_w / span if span > 0 else 0.0
            self.live.lag_p99 = float("nan") if lag_p99 is None else lag_p99
            if self._open:
                reasons = behind_reasons(
                    sent=sent_w,
                    skipped=skipped_w,
                    lag_p99=lag_p99,
                    backlog=self.backlog(),
                    lag_limit=self.settings.lag_limit,
                )
                if reasons and not self.live.behind:
                    log.warning("cannot keep up", extra={"reasons": reasons})
                elif not reasons and self.live.behind:
                    log.info("keeping up again")
                self.live.behind = bool(reasons)
            if interval and now - last_progress >= interval:
                last_progress = now
                log.info(
                    "progress",
                    extra={
                        "sent": self.stats.sent,
                        "achieved_rate": round(self.live.achieved_rate, 3),
                        "outcomes": self.stats.by_outcome(),
                        "resent": self.resent,
                        "latency_p99_seconds": self.stats.latency.percentile(0.99),
                        "online_accuracy": self.stats.online_accuracy,
                        "behind": self.live.behind,
                    },
                )

    # -- run -------------------------------------------------------------------------------

    async def run(self) -> Summary:
        s = self.settings
        watcher = (
            TargetsFileWatcher(s.targets_file, self.targets)
            if s.targets_file is not None and not s.targets
            else None
        )
        client: Client
        if s.endpoint == "grpc":
            from modelops_loadgen.grpcclient import GrpcClient  # grpc only for gRPC runs

            client = GrpcClient(s.timeout)
        else:
            client = HttpClient(s.timeout)
        self._client = client
        background: list[asyncio.Task[None]] = []
        try:
            self._cpu0 = time.process_time()
            self._start = clock() + _START_GRACE
            self._next_t = self._start + self._schedule.next_offset()
            if s.duration is not None:
                self._end = self._start + s.duration
            log.info(
                "starting",
                extra={
                    "mode": s.mode,
                    "rate": s.rate if self._open else None,
                    "arrival": s.arrival,
                    "endpoint": s.endpoint,
                    "payload": s.payload,
                    "targets": list(self.targets.bases),
                    "concurrency": s.concurrency,
                    "duration": s.duration,
                    "requests": s.requests,
                },
            )
            background.append(asyncio.create_task(self._monitor()))
            if watcher is not None:
                background.append(asyncio.create_task(watcher.run()))
            # Long-lived start-up objects leave the collector's view, so the periodic full
            # collections that would add millisecond pauses to the schedule stay short.
            gc.collect()
            gc.freeze()
            work = self._open_worker if self._open else self._closed_worker
            if not self._open:
                await self._sleep_until(self._start)
            self._workers = [asyncio.create_task(work(client)) for _ in range(s.concurrency)]
            await self._wait_workers()
            end = clock()
            self._cpu = time.process_time() - self._cpu0
            for task in background:
                task.cancel()
            await asyncio.gather(*background, return_exceptions=True)
        finally:
            await client.close()
        return self._summary(end)

    async def _wait_workers(self) -> None:
        pending = set(self._workers)
        while pending:
            if self._stopping and self._stopped_at is not None:
                # In-flight requests end by their own timeout; allow that plus a margin.
                budget = self._stopped_at + self.settings.timeout + 2.0 - clock()
                if budget <= 0:
                    log.warning("forcing stop: requests still in flight after the timeout")
                    self.stop(force=True)
                    await asyncio.gather(*pending, return_exceptions=True)
                    return
                _, pending = await asyncio.wait(pending, timeout=min(budget, 0.5))
            else:
                _, pending = await asyncio.wait(pending, timeout=0.5)

    def _summary(self, end: float) -> Summary:
        s = self.settings
        if self._open and self._stopped_at is not None:
            self._count_unsent_backlog(self._stopped_at)
        if self._stopped_at is not None:
            span_end = self._stopped_at
        elif not self._open:
            span_end = min(end, self._end)
        elif s.duration is not None:
            span_end = self._end
        else:
            span_end = self._schedule_end if self._schedule_end is not None else end
        elapsed = max(span_end - self._start, 0.0)
        return build_summary(
            self.stats,
            mode=s.mode,
            arrival=s.arrival,
            endpoint=s.endpoint,
            payload=s.payload,
            targets=list(self.targets.bases),
            target_rate=s.rate,
            elapsed=elapsed,
            backlog=0.0,
            lag_limit=s.lag_limit,
            cpu_seconds=self._cpu,
            resent=self.resent,
        )


def uvloop_runner() -> asyncio.Runner:
    """An asyncio runner on uvloop when available (it is measured faster; see README)."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - non-Linux fallback
        return asyncio.Runner()
    return asyncio.Runner(loop_factory=uvloop.new_event_loop)


__all__ = ["Generator", "LiveView", "initial_targets", "uvloop_runner"]
