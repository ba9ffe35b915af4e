"""The protocol fast path (server.py) answers exactly as the ASGI path (asgi.py) does.

The same raw requests go to a real server process, whose protocol answers API routes itself,
and through the ASGI app in-process; status, media type, extra headers and body must match
(``processing_time`` aside). Plus HTTP details only a socket shows: keep-alive, pipelining,
``Connection: close``, HTTP/1.0.
"""

from __future__ import annotations

import gzip
import json
import socket
import time

import orjson
import pytest
from fastapi.testclient import TestClient

from modelops_server.app import create_app

pytestmark = pytest.mark.integration
SEED = b'{"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}'
INFER = (
    b'{"inputs":[{"name":"input-0","shape":[2,4],"datatype":"FP64",'
    b'"data":[5.1,3.5,1.4,0.2,6.7,3.0,5.2,2.3]}],"id":"a"}'
)
HEADER = (
    b'{"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32",'
    b'"parameters":{"binary_data_size":16}}]}'
)
BINARY = HEADER + bytes.fromhex("3333a3400000604033333340cdcc4c3e")
JSON = {"content-type": "application/json"}
CASES = [
    ("POST", "/predict", SEED, JSON),
    ("POST", "/predict", SEED, {}),
    ("POST", "/predict", b'{"sepal_length": 1}', JSON),
    ("POST", "/predict", b"{", JSON),
    ("POST", "/predict", b"", JSON),
    ("POST", "/predict", SEED, {"content-type": "text/plain"}),
    ("POST", "/predict", SEED + b" " * 5000, JSON),
    ("POST", "/predict", gzip.compress(SEED), {**JSON, "content-encoding": "gzip"}),
    ("POST", "/predict", SEED, {**JSON, "content-encoding": "br"}),
    ("POST", "/predict/batch", b'{"instances": [' + SEED + b"," + SEED + b"]}", JSON),
    ("POST", "/v2/models/iris/infer", INFER, JSON),
    ("POST", "/v2/models/iris/versions/knn/infer", INFER, JSON),
    ("POST", "/v2/models/roses/infer", INFER, JSON),
    (
        "POST",
        "/v2/models/iris/infer",
        BINARY,
        {
            "inference-header-content-length": str(len(HEADER)),
            "content-type": "application/octet-stream",
        },
    ),
    ("GET", "/predict", b"", {}),
    ("GET", "/healthz", b"", {}),
    ("GET", "/readyz", b"", {}),
    ("GET", "/v2/models/iris", b"", {}),
    ("GET", "/v2/models/iris/ready", b"", {}),
    ("GET", "/v2/health/ready", b"", {}),
    ("GET", "/v2", b"", {}),
]


def raw_request(
    method: str, path: str, body: bytes, headers: dict[str, str], extra: str = ""
) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: t", f"Content-Length: {len(body)}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n" + extra + "\r\n").encode() + body


def read_answer(sock_file) -> tuple[int, dict[str, str], bytes]:
    status = int(sock_file.readline().split()[1])
    headers = {}
    while (line := sock_file.readline()) not in (b"\r\n", b""):
        name, value = line.decode().split(":", 1)
        headers[name.strip().lower()] = value.strip()
    return status, headers, sock_file.read(int(headers["content-length"]))


def normalised(body: bytes, content_type: str) -> object:
    if not content_type.startswith("application/json"):
        return body
    doc = orjson.loads(body)
    if isinstance(doc, dict):
        doc.pop("processing_time", None)
        # Ids are per process (a random prefix and a counter): two processes never share one.
        doc.pop("prediction_id", None)
        (doc.get("parameters") or {}).pop("prediction_id", None)
    return doc


def test_fast_path_answers_as_the_asgi_path(server, knn_artifact, knn_model, settings_for):
    proc = server(knn_artifact, {"MODELOPS_SERVER_MAX_BODY_BYTES": "4096"})
    host, port = proc.base_url.removeprefix("http://").split(":")
    app = create_app(settings_for(knn_artifact, max_body_bytes=4096), knn_model)
    with (
        TestClient(app, raise_server_exceptions=False) as client,
        socket.create_connection((host, int(port)), timeout=10) as sock,
    ):
        sock_file = sock.makefile("rb")
        for method, path, body, headers in CASES:
            sock.sendall(raw_request(method, path, body, headers))
            status, got_headers, got_body = read_answer(sock_file)
            expected = client.request(method, path, content=body, headers=headers)
            case = (method, path, body[:40])
            assert status == expected.status_code, case
            assert got_headers["content-type"] == expected.headers["content-type"], case
            for name in ("allow", "retry-after", "inference-header-content-length"):
                assert got_headers.get(name) == expected.headers.get(name), (case, name)
            content_type = got_headers["content-type"]
            assert normalised(got_body, content_type) == normalised(
                expected.content, content_type
            ), case


def test_keep_alive_pipelining_and_close(server, knn_artifact):
    proc = server(knn_artifact)
    host, port = proc.base_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock_file = sock.makefile("rb")
        # Three requests in one write: three answers, in order, on the same connection.
        sock.sendall(
            raw_request("POST", "/predict", SEED, JSON)
            + raw_request("GET", "/healthz", b"", {})
            + raw_request("GET", "/docs", b"", {})  # not an API route: the ASGI path
            + raw_request("GET", "/readyz", b"", {})
        )
        answers = [read_answer(sock_file) for _ in range(4)]
        assert [a[0] for a in answers] == [200, 200, 200, 200]
        assert json.loads(answers[0][2])["species"] == "setosa"
        assert answers[2][1]["content-type"].startswith("text/html")
        assert json.loads(answers[3][2])["status"] == "ready"
        sock.sendall(raw_request("GET", "/healthz", b"", {}, "Connection: close\r\n"))
        status, headers, _ = read_answer(sock_file)
        assert status == 200 and headers["connection"] == "close"
        assert sock_file.read() == b""  # and the server closed it
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(b"GET /healthz HTTP/1.0\r\n\r\n")
        sock_file = sock.makefile("rb")
        assert read_answer(sock_file)[0] == 200
        assert sock_file.read() == b""  # HTTP/1.0 without keep-alive: closed


def test_an_old_connection_is_answered_once_more_then_closed(server, knn_artifact):
    """MAX_CONNECTION_AGE: the first answer after it carries Connection: close (fast path and
    ASGI path alike), so that a client behind a Service reconnects and may reach another
    replica; younger connections are kept alive."""
    proc = server(knn_artifact, {"MODELOPS_SERVER_MAX_CONNECTION_AGE": "1"})
    host, port = proc.base_url.removeprefix("http://").split(":")
    for path in ("/predict", "/docs"):  # fast path, ASGI path
        body, headers = (SEED, JSON) if path == "/predict" else (b"", {})
        method = "POST" if body else "GET"
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            opened = time.monotonic()
            sock_file = sock.makefile("rb")
            sock.sendall(raw_request(method, path, body, headers))
            status, got, _ = read_answer(sock_file)
            assert status == 200 and got.get("connection") != "close", path
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:  # kept alive, with requests, past the age
                time.sleep(0.3)
                sock.sendall(raw_request(method, path, body, headers))
                status, got, _ = read_answer(sock_file)
                assert status == 200, path
                if got.get("connection") == "close":
                    break
            assert got.get("connection") == "close", f"{path}: never closed"
            assert time.monotonic() - opened >= 1.0, f"{path}: closed before its age"
            assert sock_file.read() == b""  # and the server closed it
