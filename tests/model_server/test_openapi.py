"""The OpenAPI document is the one published before the lean ASGI path (snapshot of the base
commit): serving requests without FastAPI must not change what clients are told. It has grown
only additively since (POST /feedback, the prediction_id fields)."""

from __future__ import annotations

import json
from pathlib import Path

SNAPSHOT = Path(__file__).parent / "snapshots" / "openapi.json"


def test_openapi_document_is_unchanged(client):
    served = client.get("/openapi.json")
    assert served.status_code == 200
    assert served.headers["content-type"] == "application/json"
    assert served.json() == json.loads(SNAPSHOT.read_text())


def test_docs_pages_are_served(client):
    docs = client.get("/docs")
    assert docs.status_code == 200
    assert docs.headers["content-type"].startswith("text/html")
    assert "/openapi.json" in docs.text
    assert client.get("/docs/oauth2-redirect").status_code == 200
