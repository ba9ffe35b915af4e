"""The start-up heap is frozen before serving, so a full collection never walks it."""

from __future__ import annotations

import gc
import json
from pathlib import Path

import httpx
import pytest

from modelops_server.server import freeze_heap


def test_freeze_heap_takes_live_objects_out_of_collections() -> None:
    alive = [[index] for index in range(1000)]  # tracked containers the collector would walk
    gc.unfreeze()
    try:
        frozen = freeze_heap()
        assert frozen >= len(alive)
        assert gc.get_freeze_count() == frozen
        walked = {id(obj) for obj in gc.get_objects()}
        assert not any(id(obj) in walked for obj in alive)
        made_after = [0]
        assert id(made_after) in {id(obj) for obj in gc.get_objects()}  # new objects still are
    finally:
        gc.unfreeze()


@pytest.mark.integration
def test_server_freezes_its_start_up_heap_before_serving(
    server, knn_artifact: Path, seed_request: dict[str, float], tmp_path: Path
) -> None:
    proc = server(knn_artifact)
    assert httpx.post(f"{proc.base_url}/predict", json=seed_request, timeout=5).status_code == 200
    records = [
        json.loads(line)
        for line in (tmp_path / "server-0.log").read_text().splitlines()
        if line.startswith("{")
    ]
    frozen = [r for r in records if r["msg"] == "start-up heap frozen"]
    assert len(frozen) == 1, records
    # scikit-learn, numpy, pydantic and the app: tens of thousands of objects, whatever the
    # exact versions.
    assert frozen[0]["objects"] > 20_000, frozen
    ready = next(i for i, r in enumerate(records) if r["msg"].startswith("Uvicorn running"))
    assert records.index(frozen[0]) < ready  # frozen before the port opened
