"""A small raw-ASGI stand-in for the model server, run as a subprocess by the tests.

python fake_server.py --port P [--behaviour predict|error500|slow|drop-kept] [--delay S]
    [--count-file F]

`predict` answers the three endpoints like the model server, with a fixed rule that is right
on most Iris rows (so online accuracy is a known, checkable number); `error500` answers every
request with 500; `slow` sleeps DELAY seconds before answering; `drop-kept` (raw HTTP, not
uvicorn) answers the first request of each connection like `predict` and closes the connection
unanswered when a second arrives, as a server whose idle timer crossed the request does.
Every request's arrival time can be appended to a file, so tests can check the rate the server
really saw.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path

import uvicorn

from modelops_testenv import http_standin


def classify(row: list[float]) -> str:
    _sl, _sw, pl, pw = row
    if pl < 2.5:
        return "setosa"
    return "versicolor" if pw < 1.75 else "virginica"


def make_app(behaviour: str, delay: float, count_file: str | None):
    log = Path(count_file).open("a", buffering=1) if count_file else None  # noqa: SIM115

    async def app(scope, receive, send):
        if scope["type"] == "lifespan":
            while True:
                msg = await receive()
                if msg["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                else:
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        body = b""
        while True:
            msg = await receive()
            body += msg.get("body", b"")
            if not msg.get("more_body"):
                break
        if log is not None:
            log.write(f"{time.time():.6f} {scope['path']}\n")
        status, doc = answer(behaviour, scope["path"], body)
        if behaviour == "slow":
            await asyncio.sleep(delay)
        payload = json.dumps(doc).encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": payload})

    return app


def answer(behaviour: str, path: str, body: bytes):
    if behaviour == "error500":
        return 500, {"error": "internal", "message": "this test server always fails"}
    if path == "/healthz":
        return 200, {"status": "ok"}
    try:
        doc = json.loads(body)
    except ValueError:
        return 400, {"error": "bad_json"}
    if path == "/predict":
        row = [doc[k] for k in ("sepal_length", "sepal_width", "petal_length", "petal_width")]
        return 200, {
            "species": classify(row),
            "probability": 1.0,
            "processing_time": 0.0,
            "model_version": "fake",
        }
    if path == "/predict/batch":
        preds = []
        for inst in doc["instances"]:
            row = [inst[k] for k in ("sepal_length", "sepal_width", "petal_length", "petal_width")]
            preds.append({"species": classify(row), "probability": 1.0})
        return 200, {"predictions": preds, "model_version": "fake"}
    if path.startswith("/v2/models/") and path.endswith("/infer"):
        inp = doc["inputs"][0]
        n = inp["shape"][0]
        data = inp["data"]
        labels = [classify(data[i * 4 : i * 4 + 4]) for i in range(n)]
        return 200, {
            "model_name": path.split("/")[3],
            "outputs": [
                {
                    "name": "probabilities",
                    "shape": [n, 3],
                    "datatype": "FP64",
                    "data": [1.0] * (3 * n),
                },
                {"name": "label", "shape": [n], "datatype": "BYTES", "data": labels},
            ],
        }
    return 404, {"error": "not_found", "path": path}


async def drop_kept(port: int) -> None:
    seen: dict[asyncio.StreamWriter, int] = {}

    async def respond(request: bytes, writer: asyncio.StreamWriter) -> str | None:
        seen[writer] = seen.get(writer, 0) + 1
        if seen[writer] > 1:
            return "close"  # the second request: closed without a byte of an answer
        head, _, body = request.partition(b"\r\n\r\n")
        status, doc = answer("predict", head.split(b" ")[1].decode(), body)
        payload = json.dumps(doc).encode()
        writer.write(
            f"HTTP/1.1 {status} OK\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(payload)}\r\n\r\n".encode()
            + payload
        )
        await writer.drain()
        return None

    served = await http_standin.serve(respond, port=port)
    async with served.server:
        await served.server.serve_forever()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument(
        "--behaviour", default="predict", choices=["predict", "error500", "slow", "drop-kept"]
    )
    p.add_argument("--delay", type=float, default=0.0)
    p.add_argument("--count-file")
    args = p.parse_args()
    if args.behaviour == "drop-kept":
        asyncio.run(drop_kept(args.port))
        return
    uvicorn.run(
        make_app(args.behaviour, args.delay, args.count_file),
        host="127.0.0.1",
        port=args.port,
        log_level="warning",
        access_log=False,
        loop="uvloop",
        http="httptools",
        lifespan="on",
    )


if __name__ == "__main__":
    main()
