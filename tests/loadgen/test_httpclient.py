"""The hot-path HTTP client against tiny in-process TCP servers on loopback, one per behaviour."""

import asyncio
import socket
import threading
import time

import pytest

from modelops_loadgen.httpclient import (
    ConnectError,
    DisconnectedError,
    Endpoint,
    HttpClient,
    ProtocolError,
    RequestTimeout,
)
from modelops_testenv import http_standin

pytestmark = pytest.mark.integration

OK = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"


async def _serve(responder):
    """Start a server whose handler gets (request bytes, writer); returns (server, port)."""
    served = await http_standin.serve(responder)
    serve_state[served.port] = served.connections
    return served.server, served.port, served.requests


serve_state: dict[int, list[int]] = {}


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 20))


def test_keep_alive_reuses_one_connection_and_sends_the_body():
    async def go():
        async def ok(req, w):
            w.write(OK)
            await w.drain()

        server, port, reqs = await _serve(ok)
        client = HttpClient(5.0)
        ep = Endpoint.parse(f"http://127.0.0.1:{port}/predict")
        for i in range(5):
            assert await client.post(ep, b'{"i": %d}' % i) == (200, b"{}")
        await client.close()
        server.close()
        return reqs, len(serve_state[port])

    reqs, connections = run(go())
    assert len(reqs) == 5
    assert connections == 1
    assert reqs[0].startswith(b"POST /predict HTTP/1.1\r\n")
    assert b"Content-Type: application/json\r\n" in reqs[0]
    assert reqs[3].endswith(b'{"i": 3}')


def test_a_concurrent_first_burst_pools_every_connection():
    async def go():
        async def slow_ok(req, w):
            await asyncio.sleep(0.05)  # all 20 requests are in flight together
            w.write(OK)
            await w.drain()

        server, port, _ = await _serve(slow_ok)
        client = HttpClient(5.0)
        ep = Endpoint.parse(f"http://127.0.0.1:{port}/x")
        await asyncio.gather(*[client.post(ep, b"{}") for _ in range(20)])
        pooled = sum(len(d) for d in client._idle.values())
        opened = len(serve_state[port])
        await asyncio.gather(*[client.post(ep, b"{}") for _ in range(20)])
        reopened = len(serve_state[port]) - opened
        await client.close()
        server.close()
        return opened, pooled, reopened

    opened, pooled, reopened = run(go())
    assert opened == 20
    assert pooled == 20  # none orphaned by a pool created from a stale lookup
    assert reopened == 0  # the second burst reuses them all


def test_chunked_and_split_responses_are_reassembled():
    async def go():
        async def chunked(req, w):
            w.write(b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n")
            await w.drain()
            await asyncio.sleep(0.01)
            w.write(b"5\r\nhello\r\n")
            await w.drain()
            await asyncio.sleep(0.01)
            w.write(b"6\r\n world\r\n0\r\n\r\n")
            await w.drain()

        server, port, _ = await _serve(chunked)
        client = HttpClient(5.0)
        ep = Endpoint.parse(f"http://127.0.0.1:{port}/x")
        got = [await client.post(ep, b"{}") for _ in range(2)]
        await client.close()
        server.close()
        return got

    assert run(go()) == [(201, b"hello world")] * 2


def test_close_delimited_body_ends_at_eof_and_the_connection_is_not_reused():
    async def go():
        async def http10(req, w):
            w.write(b"HTTP/1.0 200 OK\r\n\r\nuntil-eof")
            await w.drain()
            return "close"

        server, port, reqs = await _serve(http10)
        client = HttpClient(5.0)
        ep = Endpoint.parse(f"http://127.0.0.1:{port}/x")
        got = [await client.post(ep, b"{}") for _ in range(3)]
        await client.close()
        server.close()
        return got, reqs

    got, reqs = run(go())
    assert got == [(200, b"until-eof")] * 3
    assert len(reqs) == 3


def test_connections_the_server_closes_are_forgotten():
    async def go():
        async def once(req, w):
            w.write(OK)  # keep-alive by default in HTTP/1.1, but the server hangs up after it
            await w.drain()
            return "close"

        server, port, _ = await _serve(once)
        client = HttpClient(5.0)
        ep = Endpoint.parse(f"http://127.0.0.1:{port}/x")
        for _ in range(20):
            assert await client.post(ep, b"{}") == (200, b"{}")
            await asyncio.sleep(0.02)  # let the close arrive before the next request
        await asyncio.sleep(0.05)
        leftover = (len(client._all), sum(len(d) for d in client._idle.values()))
        await client.close()
        server.close()
        return leftover, len(serve_state[port])

    leftover, connections = run(go())
    assert connections == 20
    assert leftover == (0, 0)


def test_interim_100_continue_is_skipped():
    async def go():
        async def cont(req, w):
            w.write(b"HTTP/1.1 100 Continue\r\n\r\n" + OK)
            await w.drain()

        server, port, _ = await _serve(cont)
        client = HttpClient(5.0)
        got = await client.post(Endpoint.parse(f"http://127.0.0.1:{port}/x"), b"{}")
        await client.close()
        server.close()
        return got

    assert run(go()) == (200, b"{}")


def test_connection_refused_is_a_connect_error():
    async def go():
        server, port, _ = await _serve(None)
        server.close()
        await server.wait_closed()
        client = HttpClient(2.0)
        with pytest.raises(ConnectError, match="cannot connect"):
            await client.post(Endpoint.parse(f"http://127.0.0.1:{port}/x"), b"{}")
        await client.close()

    run(go())


def test_server_closing_mid_response_is_disconnected():
    async def go():
        async def half(req, w):
            w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort")
            await w.drain()
            return "close"

        server, port, _ = await _serve(half)
        client = HttpClient(2.0)
        with pytest.raises(DisconnectedError):
            await client.post(Endpoint.parse(f"http://127.0.0.1:{port}/x"), b"{}")
        await client.close()
        server.close()

    run(go())


def test_garbage_is_a_protocol_error():
    async def go():
        async def garbage(req, w):
            w.write(b"SSH-2.0-OpenSSH\r\n\r\n")
            await w.drain()

        server, port, _ = await _serve(garbage)
        client = HttpClient(2.0)
        with pytest.raises(ProtocolError, match="invalid HTTP response"):
            await client.post(Endpoint.parse(f"http://127.0.0.1:{port}/x"), b"{}")
        await client.close()
        server.close()

    run(go())


def test_a_silent_server_times_out_and_the_connection_is_dropped():
    async def go():
        async def silent(req, w):
            await asyncio.sleep(3)

        server, port, _ = await _serve(silent)
        client = HttpClient(0.3)
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        with pytest.raises(RequestTimeout):
            await client.post(Endpoint.parse(f"http://127.0.0.1:{port}/x"), b"{}")
        elapsed = loop.time() - t0
        assert not client._idle.get(("http", "127.0.0.1", port))  # not reused
        await client.close()
        server.close()
        return elapsed

    assert 0.25 <= run(go()) < 2.0


def test_endpoint_parsing():
    ep = Endpoint.parse("http://[::1]:9000/v2/models/iris/infer")
    assert ep.key == ("http", "::1", 9000)
    assert b"Host: [::1]:9000\r\n" in ep.head
    assert Endpoint.parse("https://example.test/predict").port == 443
    with pytest.raises(ValueError, match="not an http"):
        Endpoint.parse("ftp://x/y")


def _threaded_server(answers_per_connection: int, connections: int) -> tuple[int, list[int]]:
    """A blocking server in its own thread (so a stall of the client's loop does not stall
    it): each connection gets that many answers, then the server closes it at once."""
    listener = socket.create_server(("127.0.0.1", 0))
    served: list[int] = []

    def serve() -> None:
        with listener:
            for _ in range(connections):
                conn, _ = listener.accept()
                with conn:
                    count = 0
                    for _ in range(answers_per_connection):
                        if not conn.recv(65536):
                            break
                        conn.sendall(OK)
                        count += 1
                    served.append(count)

    threading.Thread(target=serve, daemon=True).start()
    return listener.getsockname()[1], served


def test_a_kept_alive_connection_the_server_closed_during_a_stall_is_not_reused():
    # The server closes an idle connection while the client's loop is busy (a loaded node):
    # the close is in the socket but not yet seen by the loop. Sending on it would fail.
    async def go():
        port, served = _threaded_server(answers_per_connection=1, connections=2)
        client = HttpClient(2.0)
        ep = Endpoint.parse(f"http://127.0.0.1:{port}/x")
        assert await client.post(ep, b"{}") == (200, b"{}")
        time.sleep(0.3)  # the stall: the server's FIN arrives, the loop does not run
        got = await client.post(ep, b"{}")
        resent = client.resent
        await client.close()
        return got, resent, served

    got, resent, served = run(go())
    assert got == (200, b"{}")
    assert resent == 0  # seen as closed before sending, not sent on it
    assert served == [1, 1]


def _answers(per_connection: int, connections: int | None = None):
    """A responder that answers the first requests of each connection (of the first
    connections only, when given) and closes the connection unanswered on the next."""
    seen: dict[object, int] = {}

    async def respond(req, w):
        seen[w] = seen.get(w, 0) + 1
        if seen[w] > per_connection or (connections is not None and len(seen) > connections):
            return "close"
        w.write(OK)
        await w.drain()

    return respond


def test_a_request_the_server_drops_unanswered_on_a_kept_alive_connection_is_sent_once_more():
    # The server closes a kept-alive connection as the request arrives (its idle timer and
    # the request crossed): no byte of an answer came back, so the request is sent again on a
    # new connection, once, and counted as resent.
    async def go():
        server, port, reqs = await _serve(_answers(per_connection=1))
        client = HttpClient(2.0)
        ep = Endpoint.parse(f"http://127.0.0.1:{port}/x")
        got = [await client.post(ep, b"{}") for _ in range(3)]
        resent = client.resent
        await client.close()
        server.close()
        return got, resent, len(reqs), len(serve_state[port])

    got, resent, requests, connections = run(go())
    assert got == [(200, b"{}")] * 3
    # A: 1 answered, 2 dropped → B: 2 answered, 3 dropped → C: 3 answered.
    assert (resent, requests, connections) == (2, 5, 3)


def test_a_first_request_dropped_unanswered_is_not_sent_again():
    # On a new connection nothing was stale: the drop is the server's, and is reported.
    async def go():
        async def drop(req, w):
            return "close"

        server, port, reqs = await _serve(drop)
        client = HttpClient(2.0)
        with pytest.raises(DisconnectedError):
            await client.post(Endpoint.parse(f"http://127.0.0.1:{port}/x"), b"{}")
        resent = client.resent
        await client.close()
        server.close()
        return resent, len(reqs)

    assert run(go()) == (0, 1)


def test_a_resent_request_that_is_dropped_again_fails():
    async def go():
        server, port, reqs = await _serve(_answers(per_connection=1, connections=1))
        client = HttpClient(2.0)
        ep = Endpoint.parse(f"http://127.0.0.1:{port}/x")
        assert await client.post(ep, b"{}") == (200, b"{}")
        with pytest.raises(DisconnectedError):
            await client.post(ep, b"{}")
        resent = client.resent
        await client.close()
        server.close()
        return resent, len(reqs)

    assert run(go()) == (1, 3)
