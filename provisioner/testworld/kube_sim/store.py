"""The simulator's object store: objects, one cluster-wide resourceVersion, bounded history, watchers.

Everything that makes optimistic concurrency real lives here: every write takes the store lock, checks
preconditions against the current object, bumps the resourceVersion, records a :class:`Change` in the
bounded history (what watches resume from — and what ends in ``410`` once trimmed), and fans the change out
to watch queues and controller listeners. Stored objects are never mutated in place: each write stores a
new dict, so readers can serialize them outside the lock.
"""

from __future__ import annotations

import base64
import builtins
import json
import random
import threading
import uuid
from collections import deque
from collections.abc import Callable
from itertools import islice
from typing import Any

from provisioner.testworld.kube_sim import status as errors
from provisioner.testworld.kube_sim.objects import (
    apply_patch,
    check_kind,
    clone,
    comparable,
    now_rfc3339,
    prepare_update,
    record_manager,
)
from provisioner.testworld.kube_sim.resources import BY_KEY, RESOURCES, ResourceType
from provisioner.testworld.kube_sim.validation import apply_defaults, validate_name, validate_object
from provisioner.testworld.kube_sim.watchers import (
    ADDED,
    BOOKMARK,
    DELETED,
    MODIFIED,
    Change,
    Watcher,
    bookmark_object,
)

Obj = dict[str, Any]
Key = tuple[str, str]  # (namespace or "", name)

_NAME_CHARS = "bcdfghjklmnpqrstvwxz2456789"


class Store:
    """Thread-safe object store with resourceVersions, history and watch fan-out."""

    def __init__(self, *, history_limit: int = 10_000) -> None:
        self.lock = threading.RLock()
        self._rv = 0
        self._objects: dict[str, dict[Key, Obj]] = {r.key: {} for r in RESOURCES}
        self._uids: dict[str, tuple[str, Key]] = {}
        self._history: deque[Change] = deque()
        self._history_limit = max(1, history_limit)
        self._compacted_rv = 0
        self._watchers: dict[str, set[Watcher]] = {r.key: set() for r in RESOURCES}
        self._listeners: list[Callable[[Change], None]] = []
        #: Create-time mutators (admission plugins), e.g. protection finalizers.
        self.admission: list[Callable[[ResourceType, Obj], None]] = []
        #: Update-time validating admission plugins: (type, old, new, subresource), raise ApiError to refuse.
        self.update_admission: list[Callable[[ResourceType, Obj, Obj, str], None]] = []
        #: Whether DELETE with Foreground/Orphan adds the GC finalizers (only when a GC runs).
        self.gc_finalizers = False

    # --- reads -------------------------------------------------------------------------------------------

    @property
    def resource_version(self) -> int:
        """The current cluster-wide resourceVersion."""
        return self._rv

    def find(self, rt: ResourceType, namespace: str, name: str) -> Obj | None:
        """The stored object (do not mutate it), or None."""
        return self._objects[rt.key].get((namespace if rt.namespaced else "", name))

    def get(self, rt: ResourceType, namespace: str, name: str) -> Obj:
        """The stored object, or 404."""
        obj = self.find(rt, namespace, name)
        if obj is None:
            raise errors.not_found(rt, name)
        return obj

    def by_uid(self, uid: str) -> tuple[ResourceType, Obj] | None:
        """The live object with this uid and its type, or None."""
        with self.lock:
            entry = self._uids.get(uid)
            if entry is None:
                return None
            obj = self._objects[entry[0]].get(entry[1])
            return (BY_KEY[entry[0]], obj) if obj is not None else None

    def objects(self, rt: ResourceType, namespace: str | None = None) -> list[Obj]:
        """Every stored object of ``rt`` (optionally in one namespace), unsorted."""
        with self.lock:
            values = list(self._objects[rt.key].values())
        if namespace is None:
            return values
        return [o for o in values if o["metadata"].get("namespace") == namespace]

    def list(
        self,
        rt: ResourceType,
        namespace: str | None,
        predicate: Callable[[Obj], bool] | None,
        *,
        limit: int = 0,
        continue_token: str = "",
    ) -> tuple[list[Obj], int, str, int | None]:
        """(items, list RV, continue token, remainingItemCount) in key order; expired token → 410."""
        with self.lock:
            list_rv = self._rv
            start: Key | None = None
            if continue_token:
                list_rv, start = self._decode_continue(continue_token)
            table = self._objects[rt.key]
            keys = sorted(table) if namespace is None else sorted(k for k in table if k[0] == namespace)
            if start is not None:
                keys = [k for k in keys if k > start]
            items: list[Obj] = []
            last: Key | None = None
            for index, key in enumerate(keys):
                obj = table[key]
                if predicate is not None and not predicate(obj):
                    continue
                if limit and len(items) == limit:
                    remaining = len(keys) - index if predicate is None else None
                    assert last is not None
                    return items, list_rv, self._encode_continue(list_rv, last), remaining
                items.append(obj)
                last = key
            return items, list_rv, "", None

    def _encode_continue(self, rv: int, key: Key) -> str:
        raw = json.dumps({"rv": rv, "start": list(key)}).encode()
        return base64.urlsafe_b64encode(raw).decode()

    def _decode_continue(self, token: str) -> tuple[int, Key]:
        try:
            data = json.loads(base64.urlsafe_b64decode(token.encode()))
            rv, start = int(data["rv"]), (str(data["start"][0]), str(data["start"][1]))
        except (ValueError, KeyError, IndexError, TypeError) as e:
            raise errors.bad_request(f"invalid continue token: {e}") from e
        if rv < self._compacted_rv:
            raise errors.gone(
                "The provided continue parameter is too old to display a consistent list result. "
                "You can start a new list without the continue parameter."
            )
        return rv, start

    # --- watches -----------------------------------------------------------------------------------------

    def watch(
        self,
        rt: ResourceType,
        namespace: str | None,
        predicate: Callable[[Obj], bool] | None,
        resource_version: str | None,
        *,
        allow_bookmarks: bool = False,
        send_initial_events: bool | None = None,
        initial_events_end: bool = False,
    ) -> Watcher:
        """Register a watch and queue what it starts with.

        Legacy (``send_initial_events`` None): RV unset/"0" replays current objects as ADDED, another RV
        replays the changes after it (expired → 410). ``send_initial_events=True`` (resourceVersionMatch
        NotOlderThan): the current state — never older than any RV handed out, so an old RV is no 410 —
        as ADDED in key order, then (``initial_events_end``) the BOOKMARK annotated
        ``k8s.io/initial-events-end`` carrying the RV that state reflects. ``False``: no state; RV
        unset/"0" starts at the most recent change, another RV replays as in the legacy case.
        """
        w = Watcher(
            resource=rt.key, namespace=namespace, predicate=predicate, allow_bookmarks=allow_bookmarks
        )
        latest = resource_version in (None, "", "0")
        with self.lock:
            if send_initial_events:
                if not latest:
                    self._parse_rv(resource_version or "")
                table = self._objects[rt.key]
                for key in sorted(table):
                    w.initial(table[key])
                if initial_events_end:
                    w.queue.put((BOOKMARK, bookmark_object(rt.kind, rt.api_version, self._rv, end=True)))
            elif latest and send_initial_events is None:
                for obj in self._objects[rt.key].values():
                    w.initial(obj)
            elif not latest:
                self._replay(w, rt, self._parse_rv(resource_version or ""))
            self._watchers[rt.key].add(w)
        return w

    def _replay(self, w: Watcher, rt: ResourceType, since: int) -> None:
        if since < self._compacted_rv:
            raise errors.too_old(since, self._compacted_rv + 1)
        if self._history:
            skip = max(0, since + 1 - self._history[0].rv)
            for change in islice(self._history, skip, None):
                if change.resource == rt.key:
                    w.offer(change)

    def unwatch(self, w: Watcher) -> None:
        """Forget a finished watch."""
        with self.lock:
            self._watchers[w.resource].discard(w)
        w.closed.set()

    def watchers(self) -> builtins.list[Watcher]:
        """All open watches."""
        with self.lock:
            return [w for ws in self._watchers.values() for w in ws]

    def bookmark_rv(self, w: Watcher) -> int | None:
        """The RV a BOOKMARK may carry now (None while events are still queued for ``w``)."""
        with self.lock:
            return self._rv if w.queue.empty() else None

    def compact(self) -> int:
        """Drop all history: watches and continue tokens from any RV seen so far now get 410.

        The RV advances by one (RVs are opaque, gaps are legal) so a client that relists afterwards gets
        an RV it can watch from, while every RV handed out before is expired. Returns the new RV.
        """
        with self.lock:
            self._history.clear()
            self._rv += 1
            self._compacted_rv = self._rv
            return self._rv

    def add_listener(self, listener: Callable[[Change], None]) -> None:
        """Call ``listener(change)`` under the store lock after every commit (it must not block)."""
        self._listeners.append(listener)

    @staticmethod
    def _parse_rv(value: str) -> int:
        try:
            return int(value)
        except ValueError as e:
            raise errors.bad_request(f'invalid resource version "{value}"') from e

    # --- writes ------------------------------------------------------------------------------------------

    def _commit(self, rt: ResourceType, key: Key, kind: str, old: Obj | None, new: Obj) -> Obj:
        self._rv += 1
        new["metadata"]["resourceVersion"] = str(self._rv)
        uid = new["metadata"]["uid"]
        if kind == DELETED:
            self._objects[rt.key].pop(key, None)
            self._uids.pop(uid, None)
        else:
            self._objects[rt.key][key] = new
            self._uids[uid] = (rt.key, key)
        change = Change(rv=self._rv, resource=rt.key, type=kind, old=old, new=new)
        self._history.append(change)
        if len(self._history) > self._history_limit:
            self._compacted_rv = self._history.popleft().rv
        for w in self._watchers[rt.key]:
            w.offer(change)
        for listener in self._listeners:
            listener(change)
        return new

    def create(self, rt: ResourceType, namespace: str, body: Obj, *, manager: str = "") -> Obj:
        """POST: 201 semantics (the caller owns ``body``, which becomes the stored object)."""
        if not isinstance(body, dict):
            raise errors.bad_request("request body must be a JSON object")
        meta = body.setdefault("metadata", {})
        if not isinstance(meta, dict):
            raise errors.bad_request("metadata must be an object")
        check_kind(rt, body)
        with self.lock:
            if rt.namespaced:
                if meta.get("namespace") and meta["namespace"] != namespace:
                    raise errors.bad_request(
                        "the namespace of the provided object does not match the namespace sent "
                        "on the request"
                    )
                meta["namespace"] = namespace
                if ("", namespace) not in self._objects["core/namespaces"]:
                    raise errors.namespace_not_found(namespace)
            else:
                meta.pop("namespace", None)
            if not meta.get("name") and meta.get("generateName"):
                meta["name"] = meta["generateName"] + "".join(random.choices(_NAME_CHARS, k=5))  # noqa: S311
            name = meta.get("name", "")
            validate_name(rt, name)
            key = (namespace if rt.namespaced else "", name)
            if key in self._objects[rt.key]:
                raise errors.already_exists(rt, name)
            for field in (
                "resourceVersion",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "managedFields",
            ):
                meta.pop(field, None)
            meta["uid"] = str(uuid.uuid4())
            meta["creationTimestamp"] = now_rfc3339()
            meta["generation"] = 1
            if rt.status_subresource and rt.key != "core/nodes":
                body.pop("status", None)
            apply_defaults(rt, body)
            validate_object(rt, body)
            for hook in self.admission:
                hook(rt, body)
            record_manager(body, manager, "Update")
            return self._commit(rt, key, ADDED, None, body)

    def update(
        self,
        rt: ResourceType,
        namespace: str,
        name: str,
        body: Obj,
        *,
        subresource: str = "",
        manager: str = "",
    ) -> Obj:
        """PUT: a stale ``metadata.resourceVersion`` is a 409 Conflict; none means unconditional."""
        if not isinstance(body, dict) or not isinstance(body.get("metadata", {}), dict):
            raise errors.bad_request("request body must be a JSON object with object metadata")
        check_kind(rt, body)
        with self.lock:
            old = self.get(rt, namespace, name)
            rv = body.get("metadata", {}).get("resourceVersion")
            if rv and rv != old["metadata"]["resourceVersion"]:
                raise errors.conflict(rt, name)
            return self._update(rt, old, body, subresource=subresource, manager=manager)

    def patch(
        self,
        rt: ResourceType,
        namespace: str,
        name: str,
        content_type: str,
        body: Any,
        *,
        subresource: str = "",
        manager: str = "",
    ) -> Obj:
        """PATCH: merge, strategic merge (built-in kinds only, else 415) or JSON patch."""
        with self.lock:
            old = self.get(rt, namespace, name)
            patched = apply_patch(rt, old, content_type, body)
            rv = patched.get("metadata", {}).get("resourceVersion")
            if rv and rv != old["metadata"]["resourceVersion"]:
                raise errors.conflict(rt, name)
            return self._update(rt, old, patched, subresource=subresource, manager=manager)

    def mutate(
        self,
        rt: ResourceType,
        namespace: str,
        name: str,
        fn: Callable[[Obj], Obj | None],
        *,
        subresource: str = "",
    ) -> Obj | None:
        """Controller write: ``fn`` edits a copy of the current object (None = no change). None if absent."""
        with self.lock:
            old = self.find(rt, namespace, name)
            if old is None:
                return None
            new = fn(clone(old))
            if new is None:
                return old
            return self._update(rt, old, new, subresource=subresource, manager="kube-controller-manager")

    def _update(self, rt: ResourceType, old: Obj, new: Obj, *, subresource: str, manager: str) -> Obj:
        result = prepare_update(rt, old, new, subresource=subresource)
        for hook in self.update_admission:
            hook(rt, old, result, subresource)
        if comparable(result) == comparable(old):
            return old  # a no-op write does not bump the resourceVersion, like the real server
        record_manager(result, manager, "Update", subresource)
        key = (old["metadata"].get("namespace", ""), old["metadata"]["name"])
        if result["metadata"].get("deletionTimestamp") and not result["metadata"].get("finalizers"):
            return self._commit(rt, key, DELETED, old, result)
        return self._commit(rt, key, MODIFIED, old, result)

    def delete(
        self, rt: ResourceType, namespace: str, name: str, options: Obj | None = None
    ) -> tuple[Obj, bool]:
        """DELETE: (last state, deleted now). Finalizers keep the object with a deletionTimestamp."""
        options = options or {}
        with self.lock:
            old = self.get(rt, namespace, name)
            meta = old["metadata"]
            pre = options.get("preconditions") or {}
            if pre.get("uid") and pre["uid"] != meta["uid"]:
                raise errors.conflict(
                    rt,
                    name,
                    f"Precondition failed: UID in precondition: {pre['uid']}, "
                    f"UID in object meta: {meta['uid']}",
                )
            if pre.get("resourceVersion") and pre["resourceVersion"] != meta["resourceVersion"]:
                raise errors.conflict(
                    rt,
                    name,
                    "Precondition failed: ResourceVersion in precondition: "
                    f"{pre['resourceVersion']}, ResourceVersion in object meta: "
                    f"{meta['resourceVersion']}",
                )
            policy = options.get("propagationPolicy")
            if policy is None and options.get("orphanDependents") is True:
                policy = "Orphan"
            if policy not in (None, "Background", "Foreground", "Orphan"):
                raise errors.invalid(rt, name, [("propagationPolicy", f'Unsupported value: "{policy}"')])
            finalizers = list(meta.get("finalizers") or [])
            if self.gc_finalizers and not meta.get("deletionTimestamp"):
                extra = {"Foreground": "foregroundDeletion", "Orphan": "orphan"}.get(policy or "")
                if extra and extra not in finalizers:
                    finalizers.append(extra)
            if meta.get("deletionTimestamp"):
                return old, False
            new = clone(old)
            key = (meta.get("namespace", ""), name)
            if finalizers:
                new["metadata"].update(
                    deletionTimestamp=now_rfc3339(), deletionGracePeriodSeconds=0, finalizers=finalizers
                )
                return self._commit(rt, key, MODIFIED, old, new), False
            return self._commit(rt, key, DELETED, old, new), True
