"""What keeps a burst of new resources cheap: the work queue coalesces events (one pass covers
every event it has not read past yet; echoes and a running Job's progress need none) and a new
version's artifact name is read in the first round trip.
These are unit tests (fakes for the API); the operator's integration tests run them for real."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
from collections import Counter
from collections.abc import Mapping
from types import SimpleNamespace
from typing import Any

import pytest

from modelops.cache import Resources
from modelops.kube import Kube
from modelops.operator import Queue, matters, resync
from modelops.settings import Settings

# Generous: only a hung pass fails a test, never a slow machine.
WAIT = 60.0


class FakeKube:
    """Counts passes; a pass of a key in `hold` blocks until released."""

    def __init__(self) -> None:
        self.passes: Counter[str] = Counter()
        self.hold: dict[str, threading.Event] = {}
        self.started: dict[str, threading.Event] = {}

    def block(self, name: str) -> None:
        self.hold[name] = threading.Event()
        self.started[name] = threading.Event()

    def reconcile(self, namespace: str, name: str, fresh: bool = True) -> SimpleNamespace:
        self.passes[name] += 1
        if name in self.started:
            self.started[name].set()
        if name in self.hold:
            assert self.hold[name].wait(WAIT), "test never released the pass"
        return SimpleNamespace(writes=0, status={}, requeue_after=None)  # nothing to change


async def started(kube: FakeKube, name: str) -> None:
    loop = asyncio.get_running_loop()
    assert await loop.run_in_executor(None, kube.started[name].wait, WAIT)


async def settle(queue: Queue) -> None:
    tasks = list(queue._running.values())
    await asyncio.wait_for(asyncio.gather(*tasks), WAIT)
    assert not queue._running


def one_thread_queue(kube: FakeKube) -> tuple[Queue, concurrent.futures.ThreadPoolExecutor]:
    pool = concurrent.futures.ThreadPoolExecutor(1)
    queue = Queue(kube, urgent_pool=pool)  # type: ignore[arg-type]
    return queue, pool


def test_events_while_a_pass_waits_for_a_thread_need_no_pass_of_their_own() -> None:
    async def scenario() -> Counter[str]:
        kube = FakeKube()
        queue, pool = one_thread_queue(kube)
        kube.block("busy")
        queue.schedule("ns", "busy", urgent=True)
        await started(kube, "busy")
        queue.schedule("ns", "new", urgent=True, generation=1)  # waits for the one thread
        for _ in range(5):  # status and child echoes, a resync: all before it reads
            queue.schedule("ns", "new")
            queue.schedule("ns", "new", delay=0.5)
        queue.schedule("ns", "new", urgent=True, generation=2)  # a spec change, still unread
        kube.hold["busy"].set()
        await settle(queue)
        pool.shutdown()
        return kube.passes

    assert asyncio.run(scenario()) == {"busy": 1, "new": 1}


def test_events_after_a_pass_read_get_exactly_one_more_pass() -> None:
    async def scenario() -> int:
        kube = FakeKube()
        queue, pool = one_thread_queue(kube)
        kube.block("md")
        queue.schedule("ns", "md", urgent=True, generation=1)
        await started(kube, "md")
        for _ in range(4):
            queue.schedule("ns", "md", delay=0.5)  # children changed after the pass read
        kube.hold.pop("md").set()
        await settle(queue)
        pool.shutdown()
        return kube.passes["md"]

    assert asyncio.run(scenario()) == 2


def test_same_generation_during_its_pass_is_covered_a_new_one_is_not() -> None:
    async def scenario() -> tuple[int, int]:
        kube = FakeKube()
        queue, pool = one_thread_queue(kube)
        kube.block("md")
        queue.schedule("ns", "md", urgent=True, generation=1)
        await started(kube, "md")
        queue.schedule("ns", "md", urgent=True, generation=1)  # metadata only: no spec change
        kube.hold["md"].set()
        await settle(queue)
        same = kube.passes["md"]

        kube.block("md")
        queue.schedule("ns", "md", urgent=True, generation=1)  # nothing in hand: a pass
        await started(kube, "md")
        queue.schedule("ns", "md", urgent=True, generation=2)  # the spec changed meanwhile
        kube.hold["md"].set()
        await settle(queue)
        pool.shutdown()
        return same, kube.passes["md"] - same

    assert asyncio.run(scenario()) == (1, 2)


def test_a_failed_pass_is_retried(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from modelops import operator
    from modelops.kube import ApiError

    monkeypatch.setattr(operator, "MAX_BACKOFF_SECONDS", 0.0)

    class Flaky(FakeKube):
        def reconcile(self, namespace: str, name: str, fresh: bool = True) -> SimpleNamespace:
            done = super().reconcile(namespace, name)
            if self.passes[name] == 1:
                raise ApiError(500, "etcd is down")
            return done

    async def scenario() -> int:
        kube = Flaky()
        queue, pool = one_thread_queue(kube)
        queue.schedule("ns", "md", urgent=True)
        await settle(queue)
        pool.shutdown()
        return kube.passes["md"]

    assert asyncio.run(scenario()) == 2


def _kube() -> Kube:
    return Kube(None, Settings.from_env())  # type: ignore[arg-type]


def _meta(uid: str, version: str) -> Mapping[str, Any]:
    return {"metadata": {"uid": uid, "resourceVersion": version}}


def test_a_child_event_of_the_operators_own_write_is_an_echo() -> None:
    kube = _kube()
    kube._wrote(_meta("job-uid", "41"))
    assert not kube.echo(_meta("job-uid", "42"))  # the job controller changed it since
    assert not kube.echo(_meta("other-uid", "41"))
    assert kube.echo(_meta("job-uid", "41"))
    assert not kube.echo(_meta("job-uid", "41"))  # once: a repeat of the event is not an echo
    assert not kube.echo({"metadata": {}})


def test_a_watch_event_names_the_artifacts_the_next_pass_reads() -> None:
    kube = _kube()
    kube.expect("ns", "md", {"spec": {"modelVersion": "v2"}, "status": {"servingVersion": "v1"}})
    assert kube._expected[("ns", "md")] == {"v1", "v2"}
    kube.expect("ns", "new", {"spec": {"modelVersion": "v1"}})
    assert kube._expected[("ns", "new")] == {"v1"}


def _job(*conditions: str) -> Mapping[str, Any]:
    return {"status": {"conditions": [{"type": c, "status": "True"} for c in conditions]}}


def test_only_a_trainer_jobs_end_or_removal_matters_to_a_plan() -> None:
    running = {"status": {"active": 1, "ready": 0, "startTime": "2026-12-01T10:00:00Z"}}
    assert not matters("jobs", "MODIFIED", running)  # the job controller's progress
    assert not matters("jobs", "MODIFIED", _job("SuccessCriteriaMet"))  # not finished yet
    assert matters("jobs", "MODIFIED", _job("SuccessCriteriaMet", "Complete"))
    assert matters("jobs", "MODIFIED", _job("FailureTarget", "Failed"))
    assert matters("jobs", "DELETED", running)
    assert matters("jobs", "ADDED", running)
    assert matters("jobs", None, running)  # listed when the watch (re)starts
    assert matters("deployments", "MODIFIED", {"status": {"readyReplicas": 1}})
    assert matters("services", "MODIFIED", {})


class RecordingKube(Kube):
    """Kube whose reads come from dicts; records every path it reads."""

    def __init__(self, objects: dict[str, dict[str, Any]]) -> None:
        super().__init__(None, Settings.from_env())  # type: ignore[arg-type]
        self.objects = objects
        self.reads: list[str] = []

    def get(self, path: str) -> dict[str, Any] | None:
        self.reads.append(path)
        return self.objects.get(path)

    def list(self, path: str, selector: str, consistent: bool = False, accept: str = "") -> list:
        self.reads.append(path)
        return []

    def monitoring_crds(self) -> bool:
        return False


CR_PATH = "/apis/modelops.dev/v1alpha1/namespaces/ns/modeldeployments/iris"
ARTIFACT_PATH = "/api/v1/namespaces/ns/configmaps/iris-model-v1"


def _cr() -> dict[str, Any]:
    return {
        "apiVersion": "modelops.dev/v1alpha1",
        "metadata": {"name": "iris", "namespace": "ns", "uid": "u1"},
        "spec": {"modelVersion": "v1"},
    }


@pytest.mark.parametrize("announced", [True, False], ids=["from-the-event", "unannounced"])
def test_a_new_versions_artifact_name_is_read_once_and_a_foreign_one_is_seen(
    announced: bool,
) -> None:
    foreign = {"metadata": {"name": "iris-model-v1", "namespace": "ns"}}
    kube = RecordingKube({CR_PATH: _cr(), ARTIFACT_PATH: foreign})
    if announced:
        kube.expect("ns", "iris", _cr())
    found = kube.read("ns", "iris")
    assert found is not None
    _, observed = found
    assert observed.artifacts == {"v1": foreign}  # shown to the planner, which refuses it
    assert kube.reads.count(ARTIFACT_PATH) == 1
    assert kube.reads.count(CR_PATH) == 1
    assert ("ns", "iris") not in kube._expected  # used once


def _trainer_job(rv: int, *conditions: str) -> dict[str, Any]:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": "iris-train-v1", "namespace": "ns", "uid": "job-1",
            "resourceVersion": str(rv),
            "labels": {"modelops.dev/name": "iris", "modelops.dev/version": "v1"},
            "ownerReferences": [{"uid": "u1"}],
        },
        "status": {"conditions": [{"type": c, "status": "True"} for c in conditions]},
    }  # fmt: skip


def test_while_its_trainer_runs_a_versions_free_artifact_name_is_not_read_again() -> None:
    kube = RecordingKube({CR_PATH: _cr()})
    kube.resources.put(_cr())

    def artifact_reads() -> int:
        assert kube.read("ns", "iris") is not None
        return kube.reads.count(ARTIFACT_PATH)

    assert artifact_reads() == 1  # no Job yet: the name is read before one is created
    kube.children.put("jobs", _trainer_job(1))
    assert artifact_reads() == 2  # read once under the running Job: nothing holds it
    assert artifact_reads() == 2  # the pod's progress, a resync: no read
    kube._fresh.add(("ns", "iris"))
    assert artifact_reads() == 3  # a retry reads everything again
    kube.children.put("jobs", _trainer_job(2, "SuccessCriteriaMet", "Complete"))
    assert artifact_reads() == 4  # the Job ended: read before the result is stored
    kube.forget("ns", "iris")
    assert not kube._absent and kube.resources.get("ns", "iris") is None


def test_the_resync_passes_only_resources_that_had_no_pass_for_an_interval() -> None:
    async def scenario() -> Counter[str]:
        kube = FakeKube()
        resources = Resources()
        for name in ("quiet", "busy"):
            resources.put({"metadata": {"namespace": "ns", "name": name}})
        kube.resources = resources  # type: ignore[attr-defined]
        queue, pool = one_thread_queue(kube)
        # "busy" began a pass just now, as far as the resync can tell (never idle long enough).
        queue._began[("ns", "busy")] = time.monotonic() + 3600
        task = asyncio.create_task(resync(queue, Settings(resync_seconds=0.2)))
        deadline = time.monotonic() + WAIT
        while not kube.passes["quiet"] and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)  # more rounds: still nothing for "busy"
        task.cancel()
        await settle(queue)
        pool.shutdown()
        return kube.passes

    passes = asyncio.run(scenario())
    assert passes["quiet"] >= 1 and passes["busy"] == 0, passes
