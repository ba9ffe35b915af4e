"""The app factory: one data plane behind the HTTP API (and, in cli.py, the gRPC service).

Layout, as in MLServer and KServe: routes.py (the flat route table and the OpenAPI document),
rest.py (HTTP handlers), grpc_service.py (gRPC servicer), both in front of dataplane.py
(validate → predict → record metrics), served by the lean ASGI app of asgi.py.
"""

from __future__ import annotations

from .asgi import ServerApp
from .dataplane import DataPlane
from .metrics import Metrics
from .model import LoadedModel
from .settings import ServerSettings


def create_app(settings: ServerSettings, model: LoadedModel | None = None) -> ServerApp:
    """Build the ASGI app; without `model`, its lifespan loads one from the artifact dir."""
    plane = DataPlane(settings, model, Metrics(enabled=settings.metrics_enabled))
    return ServerApp(plane)
