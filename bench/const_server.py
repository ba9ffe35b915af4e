"""Constant-response raw ASGI server: the target for load-generator benchmarks.

python bench/const_server.py --port P   (uvicorn, uvloop + httptools, one worker)

It answers every request with the same small /predict-shaped JSON, so the server costs as
little as an ASGI server can and the generator's own cost shows.
"""

from __future__ import annotations

import argparse

import uvicorn

BODY = b'{"species":"setosa","probability":1.0,"processing_time":0.0,"model_version":"v1"}'
START = {
    "type": "http.response.start",
    "status": 200,
    "headers": [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(BODY)).encode()),
    ],
}
END = {"type": "http.response.body", "body": BODY}


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    while True:  # drain the request body
        msg = await receive()
        if not msg.get("more_body"):
            break
    await send(START)
    await send(END)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    args = p.parse_args()
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=args.port,
        log_level="warning",
        access_log=False,
        loop="uvloop",
        http="httptools",
        lifespan="off",
    )


if __name__ == "__main__":
    main()
