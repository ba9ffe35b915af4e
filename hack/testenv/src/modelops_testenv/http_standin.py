"""An HTTP/1.1 server on loopback, in the test's own event loop, that answers as a test says:
kept-alive connections, each request read whole (head and Content-Length body) and handed to a
responder that writes the answer, or closes the connection ("close"), or does both in part.
Tests of HTTP clients (the load generator's, the model server's shadow) use it to meet idle
closes, requests that cross a close, resets and cut-off answers at a time they choose."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

# (the request's head and body, the connection's writer) → "close" to close it after.
Responder = Callable[[bytes, asyncio.StreamWriter], Awaitable[str | None]]


@dataclass
class Served:
    server: asyncio.Server
    port: int
    requests: list[bytes] = field(default_factory=list)  # every request read, in order
    connections: list[int] = field(default_factory=list)  # one entry per connection accepted


async def serve(responder: Responder, idle: float | None = None, port: int = 0) -> Served:
    """Start the server (on ``port``, else a free one); a connection with no request for
    ``idle`` seconds is closed, as a server's keep-alive timeout closes it."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        served.connections.append(1)
        try:
            while True:
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), idle)
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                request = head + await reader.readexactly(length)
                served.requests.append(request)
                if await responder(request, writer) == "close":
                    break
        except (TimeoutError, asyncio.IncompleteReadError, ConnectionError):
            pass  # idle past the timeout, or the client left
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", port)
    served = Served(server, int(server.sockets[0].getsockname()[1]))
    return served
