"""Running the app: uvicorn with connection guards and a fast path, and the gRPC service.

uvicorn closes idle keep-alive connections but puts no time limit on a request's headers or
body, nor on a new connection that never sends one: a few hundred slow clients could hold the
server. :func:`guarded_protocol` adds those limits to uvicorn's httptools protocol (enforced by
one :class:`ConnectionGuard` sweep for all connections):
- a new connection that sends nothing within TIMEOUT_KEEP_ALIVE is closed (as an idle
  kept-alive one is);
- a request's headers and body must arrive within TIMEOUT_REQUEST, else 408 and close;
- past MAX_CONNECTIONS open connections, new ones are closed at once;
- a connection older than MAX_CONNECTION_AGE (when set) is answered once more, with
  ``Connection: close``: its client reconnects, and a Service's rules pick a replica again (a
  Canary's weight, a scale-up reach clients that keep their connections open).

The same protocol answers API routes without ASGI (the fast path): once a request to a route
of the table is fully received, it calls :meth:`ServerApp.complete` (the handler the ASGI path
calls too) and writes the answer to the socket. That skips uvicorn's per-request task, event,
ASGI messages and header assembly, which cost more than the prediction itself. Docs pages,
unknown paths, upgrades, ``Expect: 100-continue``, percent-encoded paths and requests pipelined
behind an ASGI one take the ASGI path (the app behind uvicorn) as before; so does everything
when ACCESS_LOG is on (uvicorn writes the access log).

Overload: requests answered by the fast path never wait as tasks, they wait unread in their
sockets; the ones that became readable in the same loop iteration are the requests in flight
there (:class:`Burst`), counted with uvicorn's tasks against MAX_CONCURRENCY.
"""

from __future__ import annotations

import asyncio
import fcntl
import gc
import logging
import struct
import termios
import time
from http import HTTPStatus
from typing import Any

import orjson
import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from .app import create_app
from .asgi import ServerApp
from .errors import RequestTimeout
from .grpc_service import create_grpc_server
from .logs import log_config
from .model import LoadedModel
from .rest import HttpResponse
from .routes import Route
from .settings import ServerSettings

log = logging.getLogger("modelops_server.server")
# On SIGTERM, how long a kept-alive connection may stay idle before it is closed (a client
# sending on it meanwhile is answered, with Connection: close).
DRAIN_IDLE_S = 1.0
_STATUS_LINES = {
    status.value: f"HTTP/1.1 {status.value} {status.phrase}\r\n".encode() for status in HTTPStatus
}


def _unread(transport: asyncio.BaseTransport) -> bool:
    """Whether bytes wait unread in the connection's socket.

    uvloop runs due timers before it polls sockets: after a stall (a loaded node) an idle
    timeout fires while the client's next request already waits in the socket, and closing a
    socket with unread bytes sends a reset, which fails that request ("Connection reset by
    peer") although it was sent in time.
    """
    sock = transport.get_extra_info("socket")
    if sock is None:
        return False
    try:
        raw = fcntl.ioctl(sock.fileno(), termios.FIONREAD, b"\0\0\0\0")
    except OSError:
        return False
    count: int = struct.unpack("i", raw)[0]
    return count > 0


class Burst:
    """Requests that became readable in the current event-loop iteration."""

    def __init__(self) -> None:
        self.count = 0
        self._scheduled = False

    def add(self, loop: asyncio.AbstractEventLoop) -> None:
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._reset)  # runs after this iteration's I/O callbacks
        self.count += 1

    def _reset(self) -> None:
        self.count = 0
        self._scheduled = False


def _encode(response: HttpResponse, keep_alive: bool, defaults: list[tuple[bytes, bytes]]) -> bytes:
    body = response.body
    parts = [
        _STATUS_LINES.get(response.status) or f"HTTP/1.1 {response.status} \r\n".encode(),
        b"content-type: ",
        response.content_type,
        b"\r\ncontent-length: ",
        str(len(body)).encode(),
        b"\r\n",
    ]
    for name, value in (*defaults, *response.headers):
        parts += (name, b": ", value, b"\r\n")
    if not keep_alive:
        parts.append(b"connection: close\r\n")
    parts += (b"\r\n", body)
    return b"".join(parts)


def _timeout_response(seconds: float) -> bytes:
    body = orjson.dumps(
        RequestTimeout(
            f"the request did not arrive within {seconds:g} s (TIMEOUT_REQUEST); send it at once"
        ).body()
    )
    head = (
        "HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    )
    return head.encode() + body


class ConnectionGuard:
    """One timer for every connection instead of two per request: each SWEEP_S it closes
    connections idle past TIMEOUT_KEEP_ALIVE and answers 408 to requests still arriving after
    TIMEOUT_REQUEST (a timer per request costs more than parsing it)."""

    SWEEP_S = 0.25

    def __init__(self, settings: ServerSettings) -> None:
        self.idle_timeout = float(settings.timeout_keep_alive)
        self.request_timeout = settings.timeout_request
        self.connections: set[Any] = set()
        self._handle: asyncio.TimerHandle | None = None

    def start(self, loop: asyncio.AbstractEventLoop, connections: set[Any]) -> None:
        self.connections = connections
        self._handle = loop.call_later(self.SWEEP_S, self._sweep, loop)

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _sweep(self, loop: asyncio.AbstractEventLoop) -> None:
        now = loop.time()
        for protocol in [p for p in self.connections if getattr(p, "deadline", None)]:
            if now >= protocol.deadline:
                protocol.expire()
        self._handle = loop.call_later(self.SWEEP_S, self._sweep, loop)


def guarded_protocol(
    settings: ServerSettings,
    app: ServerApp | None = None,
    burst: Burst | None = None,
    guard: ConnectionGuard | None = None,
) -> type[HttpToolsProtocol]:
    """uvicorn's httptools protocol with the guards above, and the fast path if `app` is given."""
    max_connections = settings.max_connections
    max_age = settings.max_connection_age
    timeouts = guard or ConnectionGuard(settings)
    timeout_response = _timeout_response(timeouts.request_timeout)
    fast_app = None if settings.access_log else app
    keep_limit = settings.max_body_bytes + 1  # one byte over the limit is enough to refuse
    counter = burst or Burst()

    class GuardedHttpToolsProtocol(HttpToolsProtocol):
        deadline: float | None = None  # loop time the connection or request expires at
        _reading = False  # a request has begun and is not yet complete
        _fast: tuple[Route, dict[str, str], float] | None = None
        _fast_body: list[bytes]
        _fast_size = 0
        _reading_paused = False
        _draining = False  # shutting down: answer what comes, then close
        _closes_at = 0.0  # loop time from which the next answer closes the connection (0: never)

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            if len(self.connections) > max_connections:
                transport.close()
                return
            self.deadline = self.loop.time() + timeouts.idle_timeout  # until it sends
            if max_age > 0:
                self._closes_at = self.loop.time() + max_age

        def connection_lost(self, exc: Exception | None) -> None:
            self.deadline = None
            self._fast = None
            super().connection_lost(exc)

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._reading = True
            self.deadline = self.loop.time() + timeouts.request_timeout

        def on_headers_complete(self) -> None:
            target = self._fast_target() if fast_app is not None else None
            if target is None:
                super().on_headers_complete()
                if (self._draining or self._aged()) and self.cycle is not None:
                    self.cycle.keep_alive = False
                return
            self._fast = (*target, time.perf_counter())
            self._fast_body = []
            self._fast_size = 0

        def on_body(self, body: bytes) -> None:
            if self._fast is None:
                super().on_body(body)
                return
            if self._fast_size <= keep_limit:
                self._fast_body.append(body)
            self._fast_size += len(body)

        def on_message_complete(self) -> None:
            self._reading = False
            self.deadline = None  # answering; uvicorn's keep-alive timer follows an ASGI answer
            fast = self._fast
            if fast is None:
                super().on_message_complete()
                return
            self._fast = None
            self._answer(*fast)

        def resume_writing(self) -> None:
            super().resume_writing()
            if self._reading_paused:
                self._reading_paused = False
                self.transport.resume_reading()

        def _aged(self) -> bool:
            return 0 < self._closes_at <= self.loop.time()

        def _fast_target(self) -> tuple[Route, dict[str, str]] | None:
            if self.expect_100_continue or self.parser.should_upgrade():
                return None
            cycle = self.cycle
            if cycle is not None and not cycle.response_complete:
                return None  # answers must leave in request order
            path = self.url.split(b"?", 1)[0]
            if b"%" in path:
                return None
            assert fast_app is not None
            found = fast_app.router.match(path.decode("latin-1"))
            if found is None:
                return None
            route = found[0].get(self.parser.get_method().decode("latin-1"))
            return None if route is None else (route, found[1])

        def _answer(self, route: Route, params: dict[str, str], started: float) -> None:
            assert fast_app is not None
            counter.add(self.loop)
            headers = (
                {n.decode("latin-1"): v.decode("latin-1") for n, v in self.headers}
                if route.body is not None
                else {}
            )
            body = b"".join(self._fast_body)
            self._fast_body = []
            response = fast_app.complete(route, params, headers, body, started)
            keep_alive = self.parser.should_keep_alive() and not self._draining and not self._aged()
            self.transport.write(_encode(response, keep_alive, self.server_state.default_headers))
            self.server_state.total_requests += 1
            if not keep_alive:
                self.transport.close()
                return
            if self.flow.write_paused and not self._reading_paused:
                # A client that sends requests without reading answers waits for itself.
                self._reading_paused = True
                self.transport.pause_reading()
            if not self._reading:  # (a pipelined request may have begun meanwhile)
                self.deadline = self.loop.time() + timeouts.idle_timeout

        def shutdown(self) -> None:
            """Graceful stop (SIGTERM). uvicorn closes idle keep-alive connections at once,
            which races a request the client is sending on one: it fails as "connection
            closed". Instead, the next request on each connection is answered with
            ``Connection: close``; a connection that stays idle closes after DRAIN_IDLE_S."""
            if self._reading or (self.cycle is not None and not self.cycle.response_complete):
                self._draining = True
                if self.cycle is not None:
                    self.cycle.keep_alive = False
                return
            if self._draining:
                return
            self._draining = True
            self.deadline = self.loop.time() + DRAIN_IDLE_S

        def timeout_keep_alive_handler(self) -> None:
            # uvicorn's idle timer (after an answer from the app behind it).
            if not self.transport.is_closing() and _unread(self.transport):
                self.timeout_keep_alive_task = None  # the next request is here: read it
                return
            super().timeout_keep_alive_handler()

        def expire(self) -> None:
            if self.transport.is_closing():
                self.deadline = None
                return
            if not self._reading and _unread(self.transport):
                # Idle no longer: the next request is here; it must now arrive in time.
                self.deadline = self.loop.time() + timeouts.request_timeout
                return
            self.deadline = None
            cycle = self.cycle
            answering = (
                cycle is not None and cycle.response_started and not (cycle.response_complete)
            )
            if self._reading and not answering:
                self.transport.write(timeout_response)
            self.transport.close()

    return GuardedHttpToolsProtocol


def freeze_heap() -> int:
    """Collect once, then move every object alive (modules, the model, the app) out of the
    collector's reach, returning how many were frozen.

    The start-up heap is ~130,000 objects (scikit-learn, numpy, pydantic, grpc) that live as
    long as the process; a full collection walks all of them, ~70 ms of CPU on a 2-core machine,
    during which no request is answered. Frozen, they are never walked again: a full collection
    then costs what the objects made while serving cost.
    """
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


def uvicorn_config(
    settings: ServerSettings,
    app: ServerApp,
    burst: Burst | None = None,
    guard: ConnectionGuard | None = None,
) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        loop="uvloop",
        http=guarded_protocol(settings, app, burst, guard),
        lifespan="on",
        access_log=settings.access_log,
        log_config=log_config(settings.log_level),
        timeout_keep_alive=settings.timeout_keep_alive,
        server_header=False,
        backlog=max(2048, settings.max_connections),
    )


async def serve(settings: ServerSettings, model: LoadedModel) -> None:
    """Serve HTTP (and gRPC unless GRPC_PORT is 0) until SIGTERM/SIGINT."""
    app = create_app(settings, model)
    burst = Burst()
    guard = ConnectionGuard(settings)
    server = uvicorn.Server(uvicorn_config(settings, app, burst, guard))
    guard.start(asyncio.get_running_loop(), server.server_state.connections)
    tasks = server.server_state.tasks
    # In flight: ASGI request tasks (queued ones too) and this iteration's fast-path requests.
    app.pending = lambda: len(tasks) + burst.count
    await app.plane.start()
    grpc_server = None
    if settings.grpc_port:
        grpc_server = create_grpc_server(app.plane)
        await grpc_server.start()
        log.info("gRPC listening", extra={"host": settings.host, "port": settings.grpc_port})
    log.info("start-up heap frozen", extra={"objects": freeze_heap()})
    try:
        await server.serve()
    finally:
        guard.stop()
        if grpc_server is not None:
            await grpc_server.stop(grace=5)


def run(settings: ServerSettings, model: LoadedModel) -> None:
    import uvloop

    uvloop.run(serve(settings, model))
