"""The lean ASGI application: route table → handler → bytes, with no framework in between.

A request is matched against the flat route table (routes.py), its body read within the size
limit, handed to a plain handler (rest.py), and the answer sent as two ASGI messages. Errors of
any kind become the JSON error body, counted by route template. Requests past
``MAX_CONCURRENCY`` are refused at once with 503 and ``Retry-After`` before any work is done on
them; probes and /metrics are never refused, so a busy server still answers its kubelet.
"""

from __future__ import annotations

import asyncio
import logging
import time
import zlib
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from .dataplane import DataPlane
from .errors import (
    MethodNotAllowed,
    NotFound,
    Overloaded,
    PayloadTooLarge,
    RequestTimeout,
    ServerError,
    UnsupportedMediaType,
)
from .metrics import UNMATCHED
from .rest import BINARY_HEADER, HttpRequest, HttpResponse, error_response
from .routes import ROUTES, Route, Router, docs_pages

log = logging.getLogger("modelops_server.asgi")
Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class ClientGone(Exception):
    """The client disconnected before sending its whole request."""


class ServerApp:
    """The model server's ASGI app around one :class:`DataPlane`."""

    def __init__(self, plane: DataPlane, router: Router | None = None) -> None:
        settings = plane.settings
        self.plane = plane
        self.router = router or Router(ROUTES)
        self.docs = docs_pages()
        self.body_limit = settings.max_body_bytes
        self.body_timeout = settings.timeout_request
        self.max_concurrency = settings.max_concurrency
        self.retry_after = settings.retry_after
        self.in_flight = 0
        # Requests accepted by the HTTP server and not yet answered, queued ones included. The
        # default counts only requests inside this app; cli.py binds uvicorn's task set.
        self.pending: Callable[[], int] = lambda: self.in_flight

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self.http(scope, receive, send)
        elif kind == "lifespan":
            await self.lifespan(receive, send)
        elif kind == "websocket":
            await receive()
            await send({"type": "websocket.close", "code": 1003})

    async def lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.plane.start()
                except Exception as exc:
                    log.exception("start-up failed")
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                self.plane.stop()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def http(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        path: str = scope["path"]
        found = self.router.match(path)
        if found is None:
            await self.unrouted(scope, send)
            return
        methods, params = found
        route = methods.get(scope["method"])
        self.in_flight += 1
        try:
            if route is None:
                response = self.method_not_allowed(methods, scope["method"], path)
            else:
                response = await self.respond(route, params, scope, receive, started)
        except ClientGone:
            return
        finally:
            self.in_flight -= 1
        await _send(send, response)

    async def respond(
        self, route: Route, params: dict[str, str], scope: Scope, receive: Receive, started: float
    ) -> HttpResponse:
        headers: dict[str, str] = {}
        body = b""
        if route.body is not None:
            headers = _headers(scope)
            try:
                # Refuse before reading a body that would be refused anyway.
                self.admit(route)
                self.check_headers(route, headers)
                body = await self.read_body(receive)
            except ServerError as error:
                return self.failed(route.path, error)
        return self.complete(route, params, headers, body, started)

    def complete(
        self,
        route: Route,
        params: dict[str, str],
        headers: dict[str, str],
        body: bytes,
        started: float,
    ) -> HttpResponse:
        """Answer a fully received request (the ASGI path and server.py's fast path)."""
        try:
            self.admit(route)
            if route.body is not None:
                self.check_headers(route, headers)
                if len(body) > self.body_limit:
                    raise PayloadTooLarge(f"request body is over the {self.body_limit}-byte limit")
                encoding = headers.get("content-encoding")
                if encoding is not None:
                    body = _decode(body, encoding.strip().lower(), self.body_limit)
            response = route.handler(self.plane, HttpRequest(params, headers, body, started))
        except ServerError as error:
            return self.failed(route.path, error)
        except Exception:
            log.exception("unexpected error on %s %s", route.method, route.path)
            internal = ServerError("internal error while handling the request; see the server log")
            return self.failed(route.path, internal)
        self.plane.metrics.count_request(route.path, response.status)
        return response

    def failed(self, endpoint: str, error: ServerError) -> HttpResponse:
        metrics = self.plane.metrics
        metrics.count_error(endpoint, error.kind)
        metrics.count_request(endpoint, error.status_code)
        return error_response(error)

    def method_not_allowed(self, methods: dict[str, Route], method: str, path: str) -> HttpResponse:
        template = next(iter(methods.values())).path
        error = MethodNotAllowed(
            f"method {method} is not allowed on {path!r}", ", ".join(sorted(methods))
        )
        return self.failed(template, error)

    def admit(self, route: Route) -> None:
        if route.limited and self.pending() > self.max_concurrency:
            raise Overloaded(
                f"the server is at its limit of {self.max_concurrency} requests in flight; "
                f"retry after {self.retry_after} s",
                self.retry_after,
            )

    def check_headers(self, route: Route, headers: dict[str, str]) -> None:
        _check_media_type(route, headers)
        length = headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > self.body_limit:
            raise PayloadTooLarge(
                f"request body of {length} bytes is over the {self.body_limit}-byte limit"
            )

    async def unrouted(self, scope: Scope, send: Send) -> None:
        path: str = scope["path"]
        page = self.docs.get(path)
        if page is not None and scope["method"] == "GET":
            await _send(send, page)  # docs are not API requests: not counted
            return
        if len(path) > 1 and path.endswith("/") and self.router.match(path.rstrip("/")):
            # As Starlette's redirect_slashes: /predict/ → /predict.
            location = path.rstrip("/")
            query = scope.get("query_string") or b""
            if query:
                location += "?" + query.decode("latin-1")
            await _send(send, HttpResponse(307, b"", headers=[(b"location", location.encode())]))
            return
        error = NotFound(f"no route {path!r}; GET / lists the endpoints")
        metrics = self.plane.metrics
        metrics.count_error(UNMATCHED, error.kind)
        metrics.count_request(UNMATCHED, error.status_code)
        await _send(send, error_response(error))

    async def read_body(self, receive: Receive) -> bytes:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        body: bytes = message.get("body", b"")
        if message.get("more_body"):
            body = await self._read_rest(body, receive)
        return body

    async def _read_rest(self, first: bytes, receive: Receive) -> bytes:
        limit = self.body_limit
        chunks, size = [first], len(first)
        try:
            async with asyncio.timeout(self.body_timeout):
                while True:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        raise ClientGone
                    chunk = message.get("body", b"")
                    size += len(chunk)
                    if size > limit:
                        raise PayloadTooLarge(f"request body is over the {limit}-byte limit")
                    chunks.append(chunk)
                    if not message.get("more_body"):
                        return b"".join(chunks)
        except TimeoutError:
            raise RequestTimeout(
                f"the request body did not arrive within {self.body_timeout:g} s; send it at once"
            ) from None


def _headers(scope: Scope) -> dict[str, str]:
    return {name.decode("latin-1"): value.decode("latin-1") for name, value in scope["headers"]}


def _check_media_type(route: Route, headers: dict[str, str]) -> None:
    content_type = headers.get("content-type")
    if content_type is None or (route.binary and BINARY_HEADER in headers):
        return  # no header: read as JSON, so that seed clients keep working
    media = content_type.split(";", 1)[0].strip().lower()
    if media != "application/json" and not media.endswith("+json"):
        raise UnsupportedMediaType(
            f"content type {media!r} is not supported; send JSON with "
            "'Content-Type: application/json'"
        )


def _decode(body: bytes, encoding: str, limit: int) -> bytes:
    """Undo Content-Encoding (tritonclient compresses with gzip or deflate), within the limit."""
    if encoding in ("", "identity"):
        return body
    if encoding not in ("gzip", "deflate"):
        raise UnsupportedMediaType(
            f"content encoding {encoding!r} is not supported; send identity, gzip or deflate"
        )
    wbits = 16 + zlib.MAX_WBITS if encoding == "gzip" else zlib.MAX_WBITS
    inflater = zlib.decompressobj(wbits)
    try:
        out = inflater.decompress(body, limit + 1)
    except zlib.error as exc:
        raise UnsupportedMediaType(f"request body is not valid {encoding} data ({exc})") from None
    if len(out) > limit:
        raise PayloadTooLarge(f"decompressed request body is over the {limit}-byte limit")
    return out


async def _send(send: Send, response: HttpResponse) -> None:
    body = response.body
    headers = [
        (b"content-type", response.content_type),
        (b"content-length", str(len(body)).encode()),
        *response.headers,
    ]
    await send({"type": "http.response.start", "status": response.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
