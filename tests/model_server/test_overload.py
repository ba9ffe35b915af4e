"""Calm under abuse and overload: slow and idle connections, floods past MAX_CONCURRENCY.

Real server processes on loopback, raw sockets from asyncio (an HTTP library would hide what
the server does with half-sent requests). Bounds are generous for a loaded 2-core machine:
the point is "answers within seconds, not never", and "503 with Retry-After, not a pile-up".
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import httpx
import pytest

from modelops_server.app import create_app

pytestmark = pytest.mark.integration
PREDICT = b'{"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}'
REQUEST = (
    b"POST /predict HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
    b"Content-Length: %d\r\n\r\n%s" % (len(PREDICT), PREDICT)
)
ANSWER_BOUND_S = 2.0  # a prediction while the server is being abused answers within this


def host_port(base_url: str) -> tuple[str, int]:
    host, port = base_url.removeprefix("http://").split(":")
    return host, int(port)


async def read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            name, value = line.split(":", 1)
            headers[name.strip().lower()] = value.strip()
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return status, headers, body


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_slow_and_idle_connections_do_not_block_predictions(server, knn_artifact):
    proc = server(
        knn_artifact,
        {"MODELOPS_SERVER_TIMEOUT_REQUEST": "2", "MODELOPS_SERVER_TIMEOUT_KEEP_ALIVE": "2"},
    )
    host, port = host_port(proc.base_url)

    async def scenario() -> dict[str, object]:
        idle = [await asyncio.open_connection(host, port) for _ in range(300)]
        slow_headers, slow_bodies = [], []
        for _ in range(50):
            reader, writer = await asyncio.open_connection(host, port)
            writer.write(b"POST /predict HTTP/1.1\r\nHost: t\r\n")
            slow_headers.append((reader, writer))
        for _ in range(30):
            reader, writer = await asyncio.open_connection(host, port)
            writer.write(REQUEST[: REQUEST.index(b"\r\n\r\n") + 4] + PREDICT[:5])
            slow_bodies.append((reader, writer))

        opened = time.monotonic()

        async def trickle() -> None:  # one more byte now and then, never the whole request
            # Within TIMEOUT_REQUEST (2 s): each byte must not restart the clock. Not after
            # 1.5 s: on a loaded machine a late byte meets the socket the server closed.
            for _ in range(5):
                await asyncio.sleep(0.3)
                if time.monotonic() - opened > 1.5:
                    return
                for connections, byte in ((slow_headers, b"X"), (slow_bodies, b" ")):
                    for _, writer in connections:
                        writer.write(byte)

        trickling = asyncio.create_task(trickle())
        latencies = []
        async with httpx.AsyncClient(base_url=proc.base_url, timeout=10) as http:
            for _ in range(40):
                started = time.monotonic()
                response = await http.post("/predict", content=PREDICT)
                latencies.append(time.monotonic() - started)
                assert response.status_code == 200
                assert response.json()["species"] == "setosa"
                await asyncio.sleep(0.02)
        await trickling

        async def outcome(reader: asyncio.StreamReader) -> bytes:
            return await asyncio.wait_for(reader.read(), timeout=10)  # until the server closes

        idle_out = await asyncio.gather(*(outcome(r) for r, _ in idle))
        header_out = await asyncio.gather(*(outcome(r) for r, _ in slow_headers))
        body_out = await asyncio.gather(*(outcome(r) for r, _ in slow_bodies))
        for _, writer in idle + slow_headers + slow_bodies:
            writer.close()
        return {"latencies": latencies, "idle": idle_out, "headers": header_out, "bodies": body_out}

    result = asyncio.run(scenario())
    assert max(result["latencies"]) < ANSWER_BOUND_S, result["latencies"]
    # Idle connections are closed without a word; half-sent requests get a 408 and a close.
    assert all(out == b"" for out in result["idle"])
    for out in (*result["headers"], *result["bodies"]):
        assert out.startswith(b"HTTP/1.1 408 "), out[:200]
        assert json.loads(out.split(b"\r\n\r\n", 1)[1])["kind"] == "request_timeout"
    assert proc.process.poll() is None


def test_flood_past_the_limit_gets_fast_503s(server, knn_artifact):
    proc = server(knn_artifact, {"MODELOPS_SERVER_MAX_CONCURRENCY": "8"})
    host, port = host_port(proc.base_url)
    rss_before = rss_kib(proc.process.pid)

    async def scenario() -> tuple[list[tuple[int, dict[str, str], bytes]], list[float]]:
        connections = [await asyncio.open_connection(host, port) for _ in range(200)]
        answers: list[tuple[int, dict[str, str], bytes]] = []
        probes: list[float] = []
        stop = time.monotonic() + 4

        async def probe() -> None:  # liveness must not fail because the server is busy
            async with httpx.AsyncClient(base_url=proc.base_url, timeout=10) as http:
                while time.monotonic() < stop:
                    started = time.monotonic()
                    assert (await http.get("/healthz")).status_code == 200
                    probes.append(time.monotonic() - started)
                    await asyncio.sleep(0.1)

        probing = asyncio.create_task(probe())
        while time.monotonic() < stop:
            for _, writer in connections:  # all at once: a burst of 200 requests
                writer.write(REQUEST)
            answers += await asyncio.gather(*(read_response(r) for r, _ in connections))
        await probing
        for _, writer in connections:
            writer.close()
        return answers, probes

    answers, probes = asyncio.run(scenario())
    statuses = {status for status, _, _ in answers}
    assert statuses <= {200, 503}, statuses  # no 5xx but the overload answer
    refused = [(h, b) for status, h, b in answers if status == 503]
    served = [b for status, _, b in answers if status == 200]
    assert refused and served, (len(refused), len(served))
    for headers, body in refused:
        assert headers["retry-after"] == "1"
        assert json.loads(body)["kind"] == "overloaded"
    assert all(json.loads(b)["species"] == "setosa" for b in served)
    assert probes and max(probes) < ANSWER_BOUND_S, probes
    assert proc.process.poll() is None
    # Bounded memory: a flood leaves no queue behind (generous: 64 MiB on top).
    assert rss_kib(proc.process.pid) - rss_before < 64 * 1024
    metrics = httpx.get(f"{proc.base_url}/metrics", timeout=5).text
    assert 'api_errors_total{endpoint="/predict",kind="overloaded"}' in metrics


def test_overload_answer_and_exempt_probes(knn_artifact, knn_model, settings_for, seed_request):
    from fastapi.testclient import TestClient

    app = create_app(settings_for(knn_artifact, max_concurrency=4, retry_after=3), knn_model)
    with TestClient(app) as client:
        app.pending = lambda: 5  # as if five requests were in flight
        refused = client.post("/predict", json=seed_request)
        assert refused.status_code == 503
        assert refused.headers["retry-after"] == "3"
        assert refused.json()["kind"] == "overloaded"
        assert "limit of 4" in refused.json()["error"]
        for probe in ("/healthz", "/readyz", "/v2/health/live", "/v2/health/ready", "/metrics"):
            assert client.get(probe).status_code == 200, probe
        app.pending = lambda: 4
        assert client.post("/predict", json=seed_request).status_code == 200
