"""The floor: FastAPI on uvicorn answering a constant response, and the bare ASGI ceiling.

``app``: a standard FastAPI route returning a dict (FastAPI's usual request/response path): the
floor the model server's goals are stated against.
``raw_app``: a bare ASGI callable answering the same constant bytes (reads the body, sends two
messages): what uvicorn itself costs, i.e. the ceiling for the server's lean ASGI path.
"""

from fastapi import FastAPI

CONSTANT = {"species": "setosa", "probability": 1.0, "processing_time": 0.0, "model_version": "v1"}
CONSTANT_BYTES = (
    b'{"species":"setosa","probability":1.0,"processing_time":0.0,"model_version":"v1"}'
)

app = FastAPI()


@app.post("/predict")
async def predict() -> dict:
    return CONSTANT


@app.get("/readyz")
async def readyz() -> dict:
    return {"status": "ready"}


_HEADERS = [(b"content-type", b"application/json")]


async def raw_app(scope, receive, send) -> None:
    if scope["type"] != "http":
        return
    if scope["path"] == "/readyz":
        body = b'{"status":"ready"}'
    else:
        while (await receive()).get("more_body"):
            pass
        body = CONSTANT_BYTES
    headers = [*_HEADERS, (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})
