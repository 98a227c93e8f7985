"""List+watch informers: a trimmed, always-current cache of one resource, and change notifications.

Why our own and not the client's: we keep *trimmed* dicts (no managedFields, no last-applied annotation, only
the fields the controller reads) because memory per cached object matters at 10,000 PVs; and the loop must
survive what real API servers do — dropped streams (re-watch from the last resourceVersion), ``410 Gone``
(relist), server timeouts, 5xx/429 (back off) — which the test world injects on purpose.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import structlog

from provisioner.domain.errors import KubeError, KubeGone
from provisioner.ports import ListWatcher

log = structlog.get_logger(__name__)

Obj = dict[str, Any]
Handler = Callable[[str, Obj | None, Obj | None], None]  # (event, old, new)


_DROP_ANNOTATIONS = ("kubectl.kubernetes.io/last-applied-configuration",)


def trim(obj: Obj, *, keep_spec: bool = True, keep_status: bool = True, drop_data: bool = True) -> Obj:
    """A copy without managedFields, last-applied configuration or (for Secrets) data."""
    meta = dict(obj.get("metadata") or {})
    meta.pop("managedFields", None)
    ann = meta.get("annotations")
    if ann and any(k in ann for k in _DROP_ANNOTATIONS):
        meta["annotations"] = {k: v for k, v in ann.items() if k not in _DROP_ANNOTATIONS}
    out: Obj = {"metadata": meta}
    for key, value in obj.items():
        if key in ("metadata", "managedFields"):
            continue
        if key == "spec" and not keep_spec:
            continue
        if key == "status" and not keep_status:
            continue
        if key in ("data", "stringData") and drop_data:
            continue
        out[key] = value
    return out


def object_key(obj: Mapping[str, Any]) -> str:
    """``namespace/name`` for namespaced objects, ``name`` otherwise."""
    meta = obj.get("metadata") or {}
    ns = meta.get("namespace")
    return f"{ns}/{meta.get('name')}" if ns else str(meta.get("name"))


class Informer:
    """Keeps ``cache`` equal to the server's view of one resource and calls handlers on changes."""

    def __init__(
        self,
        resource: str,
        source: ListWatcher,
        *,
        trimmer: Callable[[Obj], Obj] = trim,
        resync_seconds: float = 600.0,
        watch_timeout_seconds: int = 300,
        retry_seconds: float = 1.0,
        sleep: Callable[[float], None] | None = None,
    ) -> None:
        self.resource = resource
        self._source = source
        self._trim = trimmer
        self._resync = resync_seconds
        self._watch_timeout = watch_timeout_seconds
        self._retry = retry_seconds
        self._cache: dict[str, Obj] = {}
        self._lock = threading.RLock()
        self._handlers: list[Handler] = []
        self._synced = threading.Event()
        self._stop = threading.Event()
        self._sleep = sleep or self._stop.wait
        self._rv = ""
        self._thread: threading.Thread | None = None
        self.relists = 0
        self.rewatches = 0

    # ---- public API ----------------------------------------------------------------------------------

    def add_handler(self, handler: Handler) -> None:
        """Call ``handler(event, old, new)`` for ADDED/MODIFIED/DELETED/RESYNC (before start)."""
        self._handlers.append(handler)

    def get(self, key: str) -> Obj | None:
        """The cached object for ``namespace/name`` (or ``name``)."""
        with self._lock:
            return self._cache.get(key)

    def values(self) -> list[Obj]:
        """A snapshot of all cached objects."""
        with self._lock:
            return list(self._cache.values())

    def __len__(self) -> int:
        with self._lock:
            return len(self._cache)

    @property
    def synced(self) -> bool:
        """True once the first list has been applied."""
        return self._synced.is_set()

    def wait_synced(self, timeout: float) -> bool:
        """Block until synced or timeout."""
        return self._synced.wait(timeout)

    def start(self) -> None:
        """Run list+watch on a daemon thread."""
        self._thread = threading.Thread(target=self.run, name=f"informer-{self.resource}", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Ask the loop to end and wait for it (the adapter must abort the open stream)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    # ---- loop ----------------------------------------------------------------------------------------

    def run(self) -> None:
        """list → watch → (re-watch | relist) until stopped."""
        need_list = True
        last_resync = time.monotonic()
        while not self._stop.is_set():
            try:
                if need_list:
                    self._relist()
                    need_list = False
                for etype, obj in self._source.watch(
                    self.resource, resource_version=self._rv, timeout_seconds=self._watch_timeout
                ):
                    if self._stop.is_set():
                        return
                    self._apply(etype, obj)
                    if time.monotonic() - last_resync >= self._resync:
                        last_resync = time.monotonic()
                        self._emit_resync()
                self.rewatches += 1
                if time.monotonic() - last_resync >= self._resync:
                    last_resync = time.monotonic()
                    self._emit_resync()
            except KubeGone:
                log.info("watch_expired_relisting", resource=self.resource, resource_version=self._rv)
                need_list = True
            except KubeError as e:
                if self._stop.is_set():
                    return
                log.warning("watch_failed", resource=self.resource, error=str(e))
                self._sleep(self._retry)
            except Exception:  # a handler bug must not kill the informer
                log.exception("informer_loop_error", resource=self.resource)
                self._sleep(self._retry)
                need_list = True

    def _relist(self) -> None:
        items, rv = self._source.list(self.resource)
        self.relists += 1
        fresh = {object_key(o): self._trim(o) for o in items}
        with self._lock:
            old = self._cache
            self._cache = fresh
            self._rv = rv
        for key, obj in fresh.items():
            prev = old.get(key)
            if prev is None:
                self._notify("ADDED", None, obj)
            elif prev.get("metadata", {}).get("resourceVersion") != obj["metadata"].get("resourceVersion"):
                self._notify("MODIFIED", prev, obj)
        for key, prev in old.items():
            if key not in fresh:
                self._notify("DELETED", prev, None)
        self._synced.set()

    def _apply(self, etype: str, raw: Obj) -> None:
        rv = (raw.get("metadata") or {}).get("resourceVersion")
        if etype == "BOOKMARK":
            if rv:
                self._rv = rv
            return
        obj = self._trim(raw)
        key = object_key(obj)
        with self._lock:
            prev = self._cache.get(key)
            if etype == "DELETED":
                self._cache.pop(key, None)
            else:
                self._cache[key] = obj
            if rv:
                self._rv = rv
        if etype == "DELETED":
            self._notify("DELETED", prev, None)
        else:
            self._notify("MODIFIED" if prev is not None else "ADDED", prev, obj)

    def _emit_resync(self) -> None:
        for obj in self.values():
            self._notify("RESYNC", obj, obj)

    def _notify(self, event: str, old: Obj | None, new: Obj | None) -> None:
        for handler in self._handlers:
            try:
                handler(event, old, new)
            except Exception:
                log.exception("informer_handler_error", resource=self.resource, informer_event=event)
