"""A local stand-in for a Kubernetes Service: one loopback port whose connections go, round
robin, to the ready replicas behind it (as kube-proxy spreads connections over endpoints).

Local mode runs it for a Shadow rollout's candidate Service, which the stable servers copy
requests to; it moves bytes only, so keep-alive connections stay with one replica.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

log = logging.getLogger("modelops.local")


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        with contextlib.suppress(OSError, RuntimeError):
            writer.close()


class LocalService:
    def __init__(self, port: int, backends: Callable[[], list[int]]) -> None:
        self.port = port
        self.backends = backends  # ports of the ready replicas, read per connection
        self._next = 0
        self._server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self._server is not None

    async def start(self) -> None:
        if self._server is None:
            self._server = await asyncio.start_server(self._connect, "127.0.0.1", self.port)

    async def _connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        ports = self.backends()
        if not ports:  # no ready endpoint: the connection is refused, as by kube-proxy
            writer.close()
            return
        port = ports[self._next % len(ports)]
        self._next += 1
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            writer.close()
            return
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)
            self._server = None
