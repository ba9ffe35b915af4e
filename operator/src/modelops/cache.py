"""What the operator's watches have shown of the children it owns: an informer-style cache.

kopf already streams every owned child (Jobs, Deployments, Services, artifact ConfigMaps,
trainer pods; server-side label selectors); keeping what it streams lets a pass triggered by an
event read its children from memory instead of four LISTs per pass (which the API server
answers by filtering every object of the kind in the namespace: a cost that grows with the
number of resources). Fed by the watch events and by the objects the operator's own writes
return; read by passes in worker threads (hence the lock).

What a watch can miss: kopf re-lists after a watch error without reporting the objects deleted
meanwhile. Once every resync interval the operator therefore lists each kind of child across
the watched namespaces (a few paged requests in all, not four per resource) and puts what it
listed in place of the cache (:meth:`Children.replace_all`); the resources whose children
differed get a pass. A missed event lasts at most one interval, the bound the resync gives.
"""

from __future__ import annotations

import collections
import copy
import threading
import time
from collections.abc import Iterable, Mapping
from typing import Any

from .names import LABEL_NAME, PLURAL

# Children as a pass sees them, in this order (kube.ChildLists).
KINDS = ("jobs", "configmaps", "deployments", "services")
PODS = "pods"
# A deleted object's uid is remembered this long, so that a list read before its deletion
# does not put it back.
TOMBSTONE_SECONDS = 600.0
Key = tuple[str, str]  # (namespace, the owning ModelDeployment's name)


def resource_version(obj: Mapping[str, Any]) -> int:
    """The object's resourceVersion as a number (etcd's revision; 0 when not one)."""
    raw = str((obj.get("metadata") or {}).get("resourceVersion") or "")
    return int(raw) if raw.isdigit() else 0


def trimmed(plural: str, obj: Mapping[str, Any]) -> dict[str, Any]:
    """What a pass reads of a child, kept small for a thousand of each: no managedFields
    (often half an object), of an artifact ConfigMap its metadata only (the planner reads
    annotations, never the model bytes), of a pod no spec (its status says why it may not
    start), of a Job no pod template (its status and conditions say how it went; a result is
    read from its pods, by the API)."""
    meta = {k: v for k, v in (obj.get("metadata") or {}).items() if k != "managedFields"}
    if plural == "configmaps":
        return {"apiVersion": obj.get("apiVersion"), "kind": obj.get("kind"), "metadata": meta}
    out = {k: v for k, v in obj.items() if k != "metadata" and not (plural == PODS and k == "spec")}
    if plural == "jobs" and isinstance(out.get("spec"), Mapping):
        out["spec"] = {k: v for k, v in out["spec"].items() if k != "template"}
    out["metadata"] = meta
    return out


class Children:
    """Owned children by kind and owner (their ``modelops.dev/name`` label), then uid."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # plural → (namespace, owner) → uid → (object, monotonic time it was stored)
        self._objects: dict[str, dict[Key, dict[str, tuple[dict[str, Any], float]]]] = {
            plural: {} for plural in (*KINDS, PODS)
        }
        self._deleted: dict[str, float] = {}
        self._deleted_order: collections.deque[tuple[float, str]] = collections.deque()

    @staticmethod
    def _key(obj: Mapping[str, Any]) -> tuple[Key, str] | None:
        meta = obj.get("metadata") or {}
        owner = (meta.get("labels") or {}).get(LABEL_NAME)
        if not owner or not meta.get("namespace") or not meta.get("uid"):
            return None
        return (str(meta["namespace"]), str(owner)), str(meta["uid"])

    def put(self, plural: str, obj: Mapping[str, Any]) -> None:
        """An object as a watch event or a write showed it (an older version is ignored)."""
        if plural not in self._objects:
            return
        found = self._key(obj)
        if found is None:
            return
        key, uid = found
        with self._lock:
            if uid in self._deleted:
                return  # a uid is never reused: this is a late copy of a deleted object
            owned = self._objects[plural].setdefault(key, {})
            cached = owned.get(uid)
            if cached is not None and resource_version(cached[0]) > resource_version(obj):
                return
            owned[uid] = (trimmed(plural, obj), time.monotonic())

    def drop(self, plural: str, obj: Mapping[str, Any]) -> None:
        """An object the watch reports deleted."""
        found = self._key(obj)
        if plural not in self._objects or found is None:
            return
        key, uid = found
        now = time.monotonic()
        with self._lock:
            owned = self._objects[plural].get(key, {})
            owned.pop(uid, None)
            if not owned:
                self._objects[plural].pop(key, None)
            self._deleted[uid] = now
            self._deleted_order.append((now, uid))
            while self._deleted_order and now - self._deleted_order[0][0] > TOMBSTONE_SECONDS:
                _, old = self._deleted_order.popleft()
                if now - self._deleted.get(old, now) > TOMBSTONE_SECONDS:
                    self._deleted.pop(old, None)

    def replace(
        self, plural: str, key: Key, listed: Iterable[Mapping[str, Any]], since: float
    ) -> bool:
        """What a list read at `since` (monotonic) holds of one owner's children takes the
        place of what is cached, except where a watch event after `since` knows better.
        Whether that changed what the cache held."""
        with self._lock:
            return self._replace(plural, key, listed, since)

    def replace_all(
        self, plural: str, listed: Iterable[Mapping[str, Any]], since: float
    ) -> set[Key]:
        """:meth:`replace` for every owner, from one list of the whole kind; the owners whose
        cached children it changed."""
        by_owner: dict[Key, list[Mapping[str, Any]]] = {}
        for obj in listed:
            found = self._key(obj)
            if found is not None:
                by_owner.setdefault(found[0], []).append(obj)
        with self._lock:
            owners = set(by_owner) | set(self._objects[plural])
            return {
                key for key in owners if self._replace(plural, key, by_owner.get(key, ()), since)
            }

    def _replace(
        self, plural: str, key: Key, listed: Iterable[Mapping[str, Any]], since: float
    ) -> bool:
        old = self._objects[plural].get(key, {})
        fresh: dict[str, tuple[dict[str, Any], float]] = {
            uid: (obj, at) for uid, (obj, at) in old.items() if at >= since
        }
        for obj in listed:
            found = self._key(obj)
            if found is None or found[0] != key:
                continue
            uid = found[1]
            if self._deleted.get(uid, -1.0) >= since:
                continue  # deleted after the list was read
            cached = fresh.get(uid) or old.get(uid)
            if cached is not None and resource_version(cached[0]) >= resource_version(obj):
                fresh[uid] = cached  # the same version (or a newer one from a watch)
            else:
                fresh[uid] = (trimmed(plural, obj), time.monotonic())
        if fresh:
            self._objects[plural][key] = fresh
        else:
            self._objects[plural].pop(key, None)
        versions = {uid: resource_version(obj) for uid, (obj, _) in old.items()}
        return versions != {uid: resource_version(obj) for uid, (obj, _) in fresh.items()}

    def owned(self, plural: str, key: Key) -> list[dict[str, Any]]:
        with self._lock:
            return [obj for obj, _ in self._objects[plural].get(key, {}).values()]

    def lists(self, key: Key) -> list[list[dict[str, Any]]]:
        """One owner's children in :data:`KINDS` order (as four LISTs would return them)."""
        return [self.owned(plural, key) for plural in KINDS]

    def size(self) -> int:
        with self._lock:
            return sum(len(owned) for kind in self._objects.values() for owned in kind.values())


class Resources:
    """The newest version of each ModelDeployment that its watch, a re-list or the operator's
    own status write showed: a pass starts from it instead of a GET. A pass gets its own copy
    (the planner may change what it is given)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # (namespace, name) → (object without managedFields, monotonic time it was stored)
        self._latest: dict[Key, tuple[dict[str, Any], float]] = {}

    @staticmethod
    def _key(obj: Mapping[str, Any]) -> Key | None:
        meta = obj.get("metadata") or {}
        if not meta.get("namespace") or not meta.get("name"):
            return None
        return str(meta["namespace"]), str(meta["name"])

    def put(self, obj: Mapping[str, Any], listed: bool = False) -> None:
        """Keep `obj` unless the cache holds a newer version. The same version from a watch
        replaces the cached copy (kopf keeps that very event's body: the two share their
        spec and status); from a `listed` page it does not."""
        key = self._key(obj)
        if key is None:
            return
        with self._lock:
            cached = self._latest.get(key)
            old, new = (resource_version(cached[0]) if cached else 0), resource_version(obj)
            if cached is not None and old and new and (old > new or (listed and old == new)):
                return
            self._latest[key] = (trimmed(PLURAL, obj), time.monotonic())

    def drop(self, namespace: str, name: str) -> None:
        with self._lock:
            self._latest.pop((namespace, name), None)

    def replace_all(self, listed: Iterable[Mapping[str, Any]], since: float) -> None:
        """What a list read at `since` holds takes the place of the cache: a resource whose
        deletion a watch missed is forgotten (its next pass reads it, and finds it gone)."""
        found = {key: obj for obj in listed if (key := self._key(obj)) is not None}
        with self._lock:
            for key, (_, at) in list(self._latest.items()):
                if key not in found and at < since:
                    del self._latest[key]
        for obj in found.values():
            self.put(obj, listed=True)

    def keys(self) -> list[Key]:
        with self._lock:
            return sorted(self._latest)

    def get(self, namespace: str, name: str) -> dict[str, Any] | None:
        with self._lock:
            cached = self._latest.get((namespace, name))
        return copy.deepcopy(cached[0]) if cached is not None else None
