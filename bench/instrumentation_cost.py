"""What the Prometheus instrumentation adds to one `/predict`, measured in one process.

Two apps on the same loaded model, metrics on and off, answer the seed's request through
``ServerApp.complete`` (what the server's fast path calls once a request is received) in
alternating repeats; the fastest repeat of each is kept, so that other load on a shared core
falls on both alike and drops out. The difference is the instrumentation's CPU per request;
bench_model_server.py divides it by the whole server's CPU per request measured under wrk.

Usage: python bench/instrumentation_cost.py ARTIFACT_DIR  (prints one JSON object)
"""

from __future__ import annotations

import asyncio
import gc
import json
import sys
import time
from pathlib import Path

from modelops_server.app import create_app
from modelops_server.asgi import ServerApp
from modelops_server.model import load_model
from modelops_server.routes import Route
from modelops_server.settings import ServerSettings

BODY = b'{"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}'
HEADERS = {"host": "127.0.0.1", "content-type": "application/json", "content-length": "82"}
CALLS = 20_000
REPEATS = 7


def per_call_us(app: ServerApp, route: Route) -> float:
    started = time.process_time()
    for _ in range(CALLS):
        response = app.complete(route, {}, HEADERS, BODY, time.perf_counter())
    assert response.status == 200, response.body
    return (time.process_time() - started) / CALLS * 1e6


def main(artifact: Path) -> None:
    model = load_model(artifact, None)
    model.warm_up()
    apps = {}
    for enabled in (True, False):
        app = create_app(ServerSettings(artifact_dir=artifact, metrics_enabled=enabled), model)
        asyncio.run(app.plane.start())
        apps[enabled] = app
    found = apps[True].router.match("/predict")
    assert found is not None
    route = found[0]["POST"]
    gc.collect()
    gc.freeze()  # as the server does before serving
    samples: dict[bool, list[float]] = {True: [], False: []}
    for _ in range(REPEATS):
        for enabled, app in apps.items():
            samples[enabled].append(per_call_us(app, route))
    on, off = min(samples[True]), min(samples[False])
    print(json.dumps({"on_us": on, "off_us": off, "metrics_us": on - off}))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
