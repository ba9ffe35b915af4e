"""A request that reaches a kept-alive connection while the server's loop is held up.

On a loaded node the server's event loop can stall for seconds. A client that reuses an idle
connection during the stall has sent its request before the connection's idle time ran out,
but the server reads it only afterwards; uvloop runs due timers before it polls sockets, so
the idle timeout fired first and closed a socket holding an unread request: the kernel
answered with a reset and the client saw "Connection reset by peer". A real server process,
stalled by SIGSTOP past its TIMEOUT_KEEP_ALIVE, must answer such requests instead.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time

import pytest

from .test_overload import REQUEST, host_port, read_response

pytestmark = pytest.mark.integration
KEEP_ALIVE_S = 1
# GET /docs is answered by the app behind uvicorn (uvicorn's own keep-alive timer), POST
# /predict by the fast path (the server's sweep): both idle clocks are checked.
DOCS = b"GET /docs HTTP/1.1\r\nHost: t\r\n\r\n"


async def _exchange(host: str, port: int, pid: int) -> list[tuple[int, bytes]]:
    conns = [await asyncio.open_connection(host, port) for _ in range(2)]
    for (reader, writer), first in zip(conns, (REQUEST, DOCS), strict=True):
        writer.write(first)
        assert (await read_response(reader))[0] == 200
    os.kill(pid, signal.SIGSTOP)
    try:
        time.sleep(KEEP_ALIVE_S * 0.6)
        for _, writer in conns:  # sent within the idle time, read by the server only after it
            writer.write(REQUEST)
            await writer.drain()
        time.sleep(KEEP_ALIVE_S * 1.5)
    finally:
        os.kill(pid, signal.SIGCONT)
    answers = []
    for reader, writer in conns:
        status, _, body = await asyncio.wait_for(read_response(reader), 10)
        answers.append((status, body))
        writer.close()
    return answers


def test_a_request_sent_before_the_idle_timeout_is_answered_after_a_stall(server, knn_artifact):
    proc = server(knn_artifact, {"MODELOPS_SERVER_TIMEOUT_KEEP_ALIVE": str(KEEP_ALIVE_S)})
    host, port = host_port(proc.base_url)
    for _ in range(3):  # the stall may end in either order of timers and reads: several tries
        answers = asyncio.run(_exchange(host, port, proc.process.pid))
        assert [status for status, _ in answers] == [200, 200], answers
        assert all(b'"species"' in body for _, body in answers), answers
