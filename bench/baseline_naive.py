"""Baseline A: the naive server — FastAPI + pydantic body + scikit-learn per request.

What the course project ran: one ``predict_proba`` call per request on the unpickled
pipeline, FastAPI's standard request/response handling. Served by uvicorn with the same
loop/parser as ours. The pickled pipeline comes from BENCH_MODEL.
"""

import os
import time
from pathlib import Path

import joblib
import numpy as np
from fastapi import FastAPI
from pydantic import BaseModel

pipeline = joblib.load(Path(os.environ["BENCH_MODEL"]))
classes = [str(c) for c in pipeline.classes_]
app = FastAPI()


class Flower(BaseModel):
    sepal_length: float
    sepal_width: float
    petal_length: float
    petal_width: float


@app.post("/predict")
def predict(flower: Flower) -> dict:
    started = time.perf_counter()
    x = np.array(
        [[flower.sepal_length, flower.sepal_width, flower.petal_length, flower.petal_width]]
    )
    proba = pipeline.predict_proba(x)[0]
    best = int(np.argmax(proba))
    return {
        "species": classes[best],
        "probability": float(proba[best]),
        "processing_time": time.perf_counter() - started,
    }


@app.get("/readyz")
def readyz() -> dict:
    return {"status": "ready"}
