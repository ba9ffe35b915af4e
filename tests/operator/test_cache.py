"""The watch cache (modelops.cache): what passes read of the children instead of listing them,
and the re-list that corrects it. Unit tests; the operator's integration tests run it for real."""

from __future__ import annotations

import time
from typing import Any

from modelops.cache import Children, Resources, trimmed
from modelops.kube import Kube
from modelops.settings import Settings

KEY = ("ns", "iris")


def obj(uid: str, rv: int, owner: str = "iris", **extra: Any) -> dict[str, Any]:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": f"{owner}-{uid}",
            "namespace": "ns",
            "uid": uid,
            "resourceVersion": str(rv),
            "labels": {"modelops.dev/name": owner},
            "managedFields": [{"manager": "modelops"}],
        },
        **extra,
    }


def versions(cache: Children, plural: str = "jobs") -> dict[str, str]:
    return {
        o["metadata"]["uid"]: o["metadata"]["resourceVersion"] for o in cache.owned(plural, KEY)
    }


def test_a_watch_event_never_takes_a_child_back_in_time_and_a_deletion_is_final() -> None:
    cache = Children()
    cache.put("jobs", obj("a", 5))
    cache.put("jobs", obj("a", 3))  # a late event of an older version
    assert versions(cache) == {"a": "5"}
    cache.drop("jobs", obj("a", 6))
    cache.put("jobs", obj("a", 7))  # a copy from before the deletion (a uid is not reused)
    assert versions(cache) == {}
    cache.put("jobs", obj("b", 1, owner="other"))  # another resource's child
    cache.put("jobs", {"metadata": {"uid": "c", "namespace": "ns"}})  # no owner label
    assert cache.lists(KEY) == [[], [], [], []]


def test_what_a_pass_reads_is_kept_small() -> None:
    job = trimmed("jobs", obj("a", 1, spec={"backoffLimit": 3, "template": {"spec": {}}}))
    assert "managedFields" not in job["metadata"]
    assert job["spec"] == {"backoffLimit": 3}  # a result is read from the pods, not the Job
    cm = trimmed("configmaps", {**obj("m", 1), "binaryData": {"model": "..."}})
    assert set(cm) == {"apiVersion", "kind", "metadata"}  # never the model bytes
    pod = trimmed("pods", obj("p", 1, spec={"containers": []}, status={"phase": "Pending"}))
    assert "spec" not in pod and pod["status"] == {"phase": "Pending"}


def test_a_relist_corrects_what_the_watches_missed_and_names_whom_it_changed() -> None:
    cache = Children()
    cache.put("jobs", obj("gone", 1))  # its deletion was missed (a watch was down)
    cache.put("jobs", obj("same", 2))
    since = time.monotonic()
    listed = [obj("same", 2), obj("missed", 3), obj("x", 4, owner="other")]
    changed = cache.replace_all("jobs", listed, since)
    assert versions(cache) == {"same": "2", "missed": "3"}
    assert changed == {KEY, ("ns", "other")}
    # The same list again changes nothing: the resources need no pass.
    assert cache.replace_all("jobs", listed, time.monotonic()) == set()


def test_a_relist_does_not_undo_what_the_watches_showed_while_it_was_read() -> None:
    cache = Children()
    cache.put("jobs", obj("deleted", 1))
    since = time.monotonic()
    # While the list was read: one child deleted, one created, one updated.
    cache.drop("jobs", obj("deleted", 2))
    cache.put("jobs", obj("created", 3))
    cache.put("jobs", obj("updated", 5))
    cache.replace_all("jobs", [obj("deleted", 1), obj("updated", 4)], since)
    assert versions(cache) == {"created": "3", "updated": "5"}


def test_a_pass_reads_children_from_the_cache_and_sees_its_own_writes() -> None:
    kube = Kube(None, Settings.from_env())  # type: ignore[arg-type]
    written = obj("a", 9)
    kube._wrote(written)  # what a create returned, before its watch event arrives
    assert versions(kube.children) == {"a": "9"}
    assert kube.echo(written)  # the event itself then needs no pass
    assert [j["metadata"]["uid"] for j in kube.children.lists(KEY)[0]] == ["a"]
    # The running trainer's pods come from the pod watch, those of this Job only.
    for uid, job_uid in (("p", "a"), ("q", "an-older-job")):
        pod = obj(uid, 1)
        pod["metadata"]["labels"]["batch.kubernetes.io/controller-uid"] = job_uid
        kube.children.put("pods", pod)
    pods = kube._running_trainer_pods("ns", "iris", written)
    assert [p["metadata"]["uid"] for p in pods] == ["p"]


def md(name: str, rv: int, phase: str = "") -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": "ns", "resourceVersion": str(rv)},
        "status": {"phase": phase},
    }


def test_a_pass_starts_from_the_newest_resource_and_a_missed_deletion_is_forgotten() -> None:
    resources = Resources()
    resources.put(md("iris", 5, "Training"))  # e.g. what the operator's status write returned
    resources.put(md("iris", 4, "Pending"))  # the watch's older event, arriving later
    mine = resources.get("ns", "iris")
    assert mine is not None and mine["status"]["phase"] == "Training"
    mine["status"]["phase"] = "changed by a planner"
    assert resources.get("ns", "iris") == md("iris", 5, "Training")  # a copy each time
    resources.put(md("gone", 1))  # deleted while a watch was down
    since = time.monotonic()
    resources.put(md("new", 2))  # seen while the list was read
    resources.replace_all([md("iris", 5, "Training")], since)
    assert resources.get("ns", "gone") is None  # its next pass reads it (404: nothing to do)
    assert resources.get("ns", "new") is not None
