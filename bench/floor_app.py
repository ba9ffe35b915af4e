"""The floor: the same framework (FastAPI on uvicorn) answering a constant response.

``app``: a standard FastAPI route returning a dict (FastAPI's usual request/response path).
``raw_app``: the route class the model server uses (modelops_server.app.RawRoute: handler
gets the raw request, returns ready bytes) answering constant bytes — the framework's cost
with our routing, i.e. the ceiling for our server's design.
"""

from fastapi import FastAPI, Request

from modelops_server.app import JSONBytes, RawRoute

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


raw_app = FastAPI()
raw_app.router.route_class = RawRoute


@raw_app.post("/predict")
async def raw_predict(request: Request) -> JSONBytes:
    await request.body()
    return JSONBytes(CONSTANT_BYTES)


@raw_app.get("/readyz")
async def raw_readyz() -> JSONBytes:
    return JSONBytes(b'{"status":"ready"}')
