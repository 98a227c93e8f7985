"""The garbage collector: ownerReferences, propagation policies, dangling owners.

The provisioner relies on it to remove the Secrets it creates for a PV (a namespaced dependent of a
cluster-scoped owner). It keeps an index owner-uid → dependents, maintained from the change feed, so each
deletion costs only its own dependents — never a scan of the store.
"""

from __future__ import annotations

import logging
from typing import Any

from provisioner.testworld.kube_sim.resources import BY_KEY, RESOURCES, ResourceType
from provisioner.testworld.kube_sim.status import ApiError
from provisioner.testworld.kube_sim.store import Store
from provisioner.testworld.kube_sim.watchers import DELETED, Change

Obj = dict[str, Any]
DepKey = tuple[str, str, str]  # (resource key, namespace, name)

FOREGROUND = "foregroundDeletion"
ORPHAN = "orphan"
_log = logging.getLogger(__name__)


def _owner_uids(obj: Obj | None) -> set[str]:
    if obj is None:
        return set()
    return {ref.get("uid", "") for ref in obj["metadata"].get("ownerReferences") or []}


class GarbageCollector:
    """Deletes dependents whose owners are all gone; honours Foreground and Orphan deletion."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._dependents: dict[str, set[DepKey]] = {}

    def handle(self, change: Change) -> None:
        """React to one committed change (called on the controller thread)."""
        rt = BY_KEY[change.resource]
        new = change.new
        meta = new["metadata"]
        dep: DepKey = (rt.key, meta.get("namespace", ""), meta["name"])
        before = _owner_uids(change.old)
        after = set() if change.type == DELETED else _owner_uids(new)
        for uid in before - after:
            deps = self._dependents.get(uid)
            if deps is not None:
                deps.discard(dep)
                if not deps:
                    del self._dependents[uid]
        for uid in after - before:
            self._dependents.setdefault(uid, set()).add(dep)
        if change.type == DELETED:
            if rt.key == "core/namespaces":
                self._empty_namespace(meta["name"])
            for owner_uid in _owner_uids(new):
                self._check_foreground_owner(owner_uid)
            for child in list(self._dependents.get(meta["uid"], ())):
                self._sync_dependent(child)
            return
        if after:
            self._sync_dependent(dep)
        finalizers = meta.get("finalizers") or []
        if meta.get("deletionTimestamp"):
            if ORPHAN in finalizers:
                self._orphan(rt, new)
            if FOREGROUND in finalizers:
                self._foreground(rt, new)

    def _empty_namespace(self, namespace: str) -> None:
        """The namespace controller's job, simplified: a deleted namespace's objects are deleted too."""
        for rt in RESOURCES:
            if rt.namespaced:
                for obj in self._store.objects(rt, namespace):
                    self._delete(rt, namespace, obj["metadata"]["name"], "Background")

    def _owner_alive(self, dependent_ns: str, ref: Obj) -> bool:
        found = self._store.by_uid(ref.get("uid", ""))
        if found is None:
            return False
        owner_rt, owner = found
        # A namespaced owner only counts in the dependent's own namespace.
        return not owner_rt.namespaced or owner["metadata"].get("namespace") == dependent_ns

    def _sync_dependent(self, dep: DepKey) -> None:
        rt = BY_KEY[dep[0]]
        obj = self._store.find(rt, dep[1], dep[2])
        if obj is None or obj["metadata"].get("deletionTimestamp"):
            return
        refs = obj["metadata"].get("ownerReferences") or []
        if not refs:
            return
        alive = [r for r in refs if self._owner_alive(dep[1], r)]
        if not alive:
            self._delete(rt, dep[1], dep[2], "Background")
        elif len(alive) != len(refs):
            keep = {r.get("uid") for r in alive}
            self._store.mutate(rt, dep[1], dep[2], lambda o: _filter_refs(o, keep))

    def _orphan(self, rt: ResourceType, owner: Obj) -> None:
        uid = owner["metadata"]["uid"]
        for dep_key, ns, name in list(self._dependents.get(uid, ())):
            self._store.mutate(BY_KEY[dep_key], ns, name, lambda o: _drop_ref(o, uid))
        self._remove_finalizer(rt, owner, ORPHAN)

    def _foreground(self, rt: ResourceType, owner: Obj) -> None:
        uid = owner["metadata"]["uid"]
        for dep_key, ns, name in list(self._dependents.get(uid, ())):
            obj = self._store.find(BY_KEY[dep_key], ns, name)
            if obj is not None and not obj["metadata"].get("deletionTimestamp"):
                self._delete(BY_KEY[dep_key], ns, name, "Foreground")
        self._check_foreground_owner(uid)

    def _check_foreground_owner(self, owner_uid: str) -> None:
        found = self._store.by_uid(owner_uid)
        if found is None:
            return
        rt, owner = found
        meta = owner["metadata"]
        if not meta.get("deletionTimestamp") or FOREGROUND not in (meta.get("finalizers") or []):
            return
        for dep_key, ns, name in self._dependents.get(owner_uid, ()):
            obj = self._store.find(BY_KEY[dep_key], ns, name)
            if obj is None:
                continue
            for ref in obj["metadata"].get("ownerReferences") or []:
                if ref.get("uid") == owner_uid and ref.get("blockOwnerDeletion"):
                    return  # still blocked by a dependent
        self._remove_finalizer(rt, owner, FOREGROUND)

    def _remove_finalizer(self, rt: ResourceType, obj: Obj, finalizer: str) -> None:
        meta = obj["metadata"]

        def edit(o: Obj) -> Obj | None:
            fins = o["metadata"].get("finalizers") or []
            if finalizer not in fins:
                return None
            o["metadata"]["finalizers"] = [f for f in fins if f != finalizer]
            return o

        self._store.mutate(rt, meta.get("namespace", ""), meta["name"], edit)

    def _delete(self, rt: ResourceType, namespace: str, name: str, policy: str) -> None:
        try:
            self._store.delete(rt, namespace, name, {"propagationPolicy": policy})
        except ApiError as e:
            if e.code != 404:
                _log.warning("gc delete of %s %s/%s failed: %s", rt.plural, namespace, name, e)


def _filter_refs(obj: Obj, keep: set[str | None]) -> Obj:
    obj["metadata"]["ownerReferences"] = [
        r for r in obj["metadata"]["ownerReferences"] if r.get("uid") in keep
    ]
    return obj


def _drop_ref(obj: Obj, uid: str) -> Obj | None:
    refs = obj["metadata"].get("ownerReferences") or []
    kept = [r for r in refs if r.get("uid") != uid]
    if len(kept) == len(refs):
        return None
    if kept:
        obj["metadata"]["ownerReferences"] = kept
    else:
        obj["metadata"].pop("ownerReferences", None)
    return obj
