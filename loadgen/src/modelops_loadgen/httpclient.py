"""A minimal HTTP/1.1 keep-alive client for the hot path: POST a body, get (status, body).

Chosen by measurement over aiohttp and httpx (loadgen/README.md, "Why this client"): it does
only what a load generator needs, so a request costs a fraction of a general client's CPU.
Responses are parsed by httptools (the C parser uvicorn uses), so Content-Length, chunked and
close-delimited bodies are all handled; connections are reused while the server keeps them
alive. A request that fails, fails once, with one exception that is not a failure: a kept-alive
connection the server closed as the request went out (its idle timer and the request crossed)
returns no byte of an answer, and the request is sent once more on a new connection
(RFC 9112 section 9.3.1; browsers do the same). Such resends are counted, never hidden.
"""

from __future__ import annotations

import asyncio
import select
import socket
import ssl
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast
from urllib.parse import urlsplit

import httptools

from modelops_loadgen import __version__


class HttpClientError(Exception):
    """Base of the client's error vocabulary (each maps to one outcome)."""


class ConnectError(HttpClientError):
    """The connection could not be made (refused, unreachable, name not resolved)."""


class DisconnectedError(HttpClientError):
    """The connection broke before a full response arrived."""


class ProtocolError(HttpClientError):
    """The server's bytes are not a valid HTTP/1.x response."""


class RequestTimeout(HttpClientError, TimeoutError):
    """No full response within the timeout."""


@dataclass(frozen=True)
class Endpoint:
    """One request URL, pre-encoded: the head is built once, only Content-Length varies."""

    url: str
    scheme: str
    host: str
    port: int
    head: bytes  # request line + fixed headers, up to "Content-Length: "

    @classmethod
    def parse(cls, url: str) -> Endpoint:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {url!r}")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        host = parts.hostname
        host_header = f"[{host}]" if ":" in host else host
        if parts.port is not None:
            host_header += f":{parts.port}"
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        head = (
            f"POST {path} HTTP/1.1\r\n"
            f"Host: {host_header}\r\n"
            f"User-Agent: modelops-loadgen/{__version__}\r\n"
            "Accept: application/json\r\n"
            "Content-Type: application/json\r\n"
            "Content-Length: "
        ).encode("ascii")
        return cls(url, parts.scheme, host, port, head)

    @property
    def key(self) -> tuple[str, str, int]:
        return (self.scheme, self.host, self.port)


class _Connection(asyncio.Protocol):
    __slots__ = (
        "_body",
        "_headers_done",
        "_length_known",
        "_parser",
        "_waiter",
        "answered",
        "closed",
        "idle_since",
        "keep_alive",
        "on_lost",
        "status",
        "transport",
    )

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self._parser = httptools.HttpResponseParser(self)
        self._waiter: asyncio.Future[tuple[int, bytes]] | None = None
        self._body: list[bytes] = []
        self._headers_done = False
        self._length_known = False
        self.status = 0
        self.keep_alive = True
        self.closed = False
        self.answered = False  # a byte of the current request's answer came back
        self.idle_since = 0.0  # monotonic time it went back to the pool
        self.on_lost: Callable[[_Connection], None] | None = None

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses but have the same API.
        self.transport = cast(asyncio.Transport, transport)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            # Small request/response pairs: never wait for Nagle.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        if self._waiter is None:
            self.close()  # bytes nobody asked for: this connection is unusable
            return
        self.answered = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(ProtocolError(f"invalid HTTP response: {exc}"))
            self.close()

    def eof_received(self) -> bool | None:
        # A response without Content-Length or chunking ends when the server closes.
        if self._waiter is not None and self._headers_done and not self._length_known:
            self.keep_alive = False
            self._complete()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.on_lost is not None:
            self.on_lost(self)
        reason = f": {exc}" if exc else ""
        self._fail(DisconnectedError(f"connection closed before the response ended{reason}"))

    # httptools callbacks
    def on_message_begin(self) -> None:
        self._body = []
        self._headers_done = False
        self._length_known = False

    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() in (b"content-length", b"transfer-encoding"):
            self._length_known = True

    def on_headers_complete(self) -> None:
        self.status = self._parser.get_status_code()
        self._headers_done = self.status < 100 or self.status >= 200

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        if 100 <= self.status < 200:
            return  # an interim response; the real one follows
        self.keep_alive = self._parser.should_keep_alive()
        self._complete()

    def _complete(self) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            body = self._body[0] if len(self._body) == 1 else b"".join(self._body)
            waiter.set_result((self.status, body))

    # used by the pool
    def _fail(self, exc: HttpClientError) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)

    def send(self, data: bytes, waiter: asyncio.Future[tuple[int, bytes]]) -> None:
        assert self.transport is not None
        self._waiter = waiter
        self.answered = False
        self._parser = httptools.HttpResponseParser(self)
        self.transport.write(data)

    def stale(self) -> bool:
        """Whether an idle connection's socket is readable: the server closed it (or sent bytes
        nobody asked for) and the loop, busy, has not seen it yet."""
        if self.closed or self.transport is None or self.transport.is_closing():
            return True
        sock = self.transport.get_extra_info("socket")
        if sock is None:
            return False
        _POLL.register(sock.fileno(), select.POLLIN | select.POLLRDHUP)
        try:
            return bool(_POLL.poll(0))
        finally:
            _POLL.unregister(sock.fileno())

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


# A connection back in the pool for less than this is reused without the stale check (servers
# close idle connections after a second or more; a close crossing a request is resent anyway),
# so a busy client pays no system call per request.
FRESH_S = 0.05
# One poll object for the stale check (register/unregister are not system calls; poll(0) is the
# only one). The client is single-threaded, like its event loop.
_POLL = select.poll()


# (status, body) of an answer → the request to send next on the same connection, or None.
FollowUp = Callable[[int, bytes], "tuple[Endpoint, bytes] | None"]


def _usable(conn: _Connection) -> bool:
    if time.monotonic() - conn.idle_since < FRESH_S:
        return not conn.closed
    return not conn.stale()


def _timeout_fired(fut: asyncio.Future[tuple[int, bytes]], timeout: float) -> None:
    if not fut.done():
        fut.set_exception(RequestTimeout(f"no complete response within {timeout:g} s"))


class HttpClient:
    """Keep-alive connection pool keyed by (scheme, host, port). One event loop only."""

    def __init__(self, timeout: float, ssl_context: ssl.SSLContext | None = None) -> None:
        self.timeout = timeout
        self._idle: dict[tuple[str, str, int], deque[_Connection]] = {}
        self._all: set[_Connection] = set()
        self._ssl = ssl_context
        self.resent = 0  # requests sent once more after a kept-alive connection closed unanswered

    async def _connect(self, ep: Endpoint, deadline: float) -> _Connection:
        loop = asyncio.get_running_loop()
        ssl_ctx: ssl.SSLContext | None = None
        if ep.scheme == "https":
            ssl_ctx = self._ssl or ssl.create_default_context()
        try:
            async with asyncio.timeout_at(deadline):
                _, proto = await loop.create_connection(_Connection, ep.host, ep.port, ssl=ssl_ctx)
        except TimeoutError:
            raise RequestTimeout(f"connecting to {ep.host}:{ep.port} timed out") from None
        except OSError as exc:  # refused, unreachable, DNS (socket.gaierror)
            raise ConnectError(f"cannot connect to {ep.host}:{ep.port}: {exc}") from None
        proto.on_lost = self._forget
        self._all.add(proto)
        return proto

    def _forget(self, conn: _Connection) -> None:
        """A connection closed (by either side): drop every reference so none accumulate."""
        self._all.discard(conn)
        for idle in self._idle.values():
            if conn in idle:
                idle.remove(conn)
                break

    async def post(self, ep: Endpoint, body: bytes) -> tuple[int, bytes]:
        """Send one POST; returns (status, body) or raises an HttpClientError."""
        deadline = asyncio.get_running_loop().time() + self.timeout
        conn, result = await self._first(ep, body, deadline)
        self._release(ep, conn)
        return result

    async def post_then(
        self, ep: Endpoint, body: bytes, then: FollowUp
    ) -> tuple[int, bytes] | HttpClientError | None:
        """Send one POST; ``then(status, body)`` runs as soon as its answer is in and may name a
        second request, sent on the same connection (so it reaches the same server behind a
        Service: feedback must). Returns the second answer, its error, or None when ``then``
        named none; the first request's errors raise as in :meth:`post`."""
        loop = asyncio.get_running_loop()
        conn, (status, raw) = await self._first(ep, body, loop.time() + self.timeout)
        try:
            follow = then(status, raw)
        except BaseException:
            self._release(ep, conn)
            raise
        if follow is None or not conn.keep_alive or conn.closed:
            self._release(ep, conn)
            return None
        try:
            result = await self._exchange(conn, follow[0], follow[1], loop.time() + self.timeout)
        except HttpClientError as exc:
            return exc
        self._release(ep, conn)
        return result

    async def _first(
        self, ep: Endpoint, body: bytes, deadline: float
    ) -> tuple[_Connection, tuple[int, bytes]]:
        """Send a request on a pooled connection (or a new one); resend it once on a new
        connection when a kept-alive one closed before any byte of the answer."""
        conn = self._reuse(ep)
        if conn is None:
            conn = await self._connect(ep, deadline)
            return conn, await self._exchange(conn, ep, body, deadline)
        try:
            return conn, await self._exchange(conn, ep, body, deadline)
        except DisconnectedError:
            if conn.answered:
                raise  # the server began answering: it broke mid-answer, a real failure
        self.resent += 1
        conn = await self._connect(ep, deadline)
        return conn, await self._exchange(conn, ep, body, deadline)

    def _reuse(self, ep: Endpoint) -> _Connection | None:
        idle = self._idle.get(ep.key)
        while idle:
            conn = idle.pop()
            if _usable(conn):
                return conn
            conn.close()
            self._all.discard(conn)
        return None

    async def _exchange(
        self, conn: _Connection, ep: Endpoint, body: bytes, deadline: float
    ) -> tuple[int, bytes]:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[tuple[int, bytes]] = loop.create_future()
        timer = loop.call_at(deadline, _timeout_fired, fut, self.timeout)
        conn.send(ep.head + str(len(body)).encode() + b"\r\n\r\n" + body, fut)
        try:
            return await fut
        except BaseException:
            conn.close()  # a half-used connection must not be reused
            self._all.discard(conn)
            raise
        finally:
            timer.cancel()

    def _release(self, ep: Endpoint, conn: _Connection) -> None:
        if conn.keep_alive and not conn.closed:
            # Look the pool up again: other requests may have created it during the awaits,
            # and a pool made here from a stale lookup would orphan their connections.
            idle = self._idle.get(ep.key)
            if idle is None:
                idle = self._idle[ep.key] = deque()
            conn.idle_since = time.monotonic()
            idle.append(conn)
        else:
            conn.close()
            self._all.discard(conn)

    def drop_idle(self, keep: set[tuple[str, str, int]]) -> None:
        """Close idle connections to hosts no longer targeted."""
        for key in [k for k in self._idle if k not in keep]:
            for conn in self._idle.pop(key):
                conn.close()
                self._all.discard(conn)

    async def close(self) -> None:
        for conn in list(self._all):
            conn.close()
        self._all.clear()
        self._idle.clear()
        await asyncio.sleep(0)  # let transports run their close callbacks
