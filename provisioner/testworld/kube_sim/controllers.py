"""Cluster behaviours: admission plugins (synchronous, at create) and controllers (asynchronous).

Like kube-controller-manager, the controllers run beside the API, not inside requests: the store's
listener only enqueues each change, and one background thread applies the PV controller, protection,
garbage collection and snapshot logic. Requests therefore never pay for controller work, and tests can
wait for the controllers to go idle instead of sleeping.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Iterable
from typing import Any

from provisioner.testworld.kube_sim.gc import GarbageCollector
from provisioner.testworld.kube_sim.pvctl import (
    ANN_DEFAULT_CLASS,
    PV,
    PV_PROTECTION,
    PVC,
    PVC_PROTECTION,
    SC,
    PVController,
)
from provisioner.testworld.kube_sim.resources import ResourceType
from provisioner.testworld.kube_sim.snapshots import SnapshotController
from provisioner.testworld.kube_sim.store import Store
from provisioner.testworld.kube_sim.watchers import Change

Obj = dict[str, Any]
_log = logging.getLogger(__name__)

#: Queue markers: "resync now" (from resync()) and "nothing arrived before the resync was due".
_RESYNC = Change(rv=0, resource="", type="RESYNC", old=None, new={})
_TICK = Change(rv=0, resource="", type="TICK", old=None, new={})

#: Switchable behaviours (``KubeSimulator(controllers=...)``).
CONTROLLER_NAMES = frozenset({"pv-binder", "protection", "gc", "snapshot"})


def resolve_enabled(controllers: bool | Iterable[str]) -> frozenset[str]:
    """``True`` → all, ``False`` → none, an iterable → exactly those names (unknown names are an error)."""
    if controllers is True:
        return CONTROLLER_NAMES
    if controllers is False:
        return frozenset()
    names = frozenset(controllers)
    unknown = names - CONTROLLER_NAMES
    if unknown:
        raise ValueError(
            f"unknown simulator controllers: {sorted(unknown)}; known: {sorted(CONTROLLER_NAMES)}"
        )
    return names


def admit_defaults(store: Store) -> Any:
    """API-server create behaviour that is not optional: initial phases and the default StorageClass."""

    def hook(rt: ResourceType, obj: Obj) -> None:
        if rt.key == PVC.key:
            obj["status"] = {"phase": "Pending"}
            spec = obj.setdefault("spec", {})
            if "storageClassName" not in spec and "volume.beta.kubernetes.io/storage-class" not in (
                obj["metadata"].get("annotations") or {}
            ):
                defaults = [
                    c
                    for c in store.objects(SC)
                    if (c["metadata"].get("annotations") or {}).get(ANN_DEFAULT_CLASS) == "true"
                ]
                if defaults:  # the newest default class wins, as in DefaultStorageClass admission
                    newest = max(
                        defaults, key=lambda c: (c["metadata"]["creationTimestamp"], c["metadata"]["name"])
                    )
                    spec["storageClassName"] = newest["metadata"]["name"]
        elif rt.key == PV.key:
            obj["status"] = {"phase": "Pending"}

    return hook


def _admit_protection(rt: ResourceType, obj: Obj) -> None:
    finalizer = {PVC.key: PVC_PROTECTION, PV.key: PV_PROTECTION}.get(rt.key)
    if finalizer:
        fins = obj["metadata"].setdefault("finalizers", [])
        if finalizer not in fins:
            fins.append(finalizer)


class ClusterControllers:
    """Runs the enabled controllers on one background thread fed by the store's change listener."""

    def __init__(
        self,
        store: Store,
        *,
        enabled: frozenset[str],
        resync_interval: float | None = None,
    ) -> None:
        self.enabled = enabled
        self._resync_interval = resync_interval if resync_interval and resync_interval > 0 else None
        self._pv: PVController | None = None
        self.errors: list[str] = []
        self._store = store
        self._queue: queue.SimpleQueue[Change | None] = queue.SimpleQueue()
        self._pending = 0
        self._idle = threading.Condition()
        self._thread: threading.Thread | None = None
        self._handlers: list[Any] = []
        if "pv-binder" in enabled or "protection" in enabled:
            self._pv = PVController(store, binder="pv-binder" in enabled, protection="protection" in enabled)
            self._handlers.append(self._pv.handle)
        if "gc" in enabled:
            self._handlers.append(GarbageCollector(store).handle)
            store.gc_finalizers = True
        if "snapshot" in enabled:
            self._handlers.append(SnapshotController(store).handle)
        if "protection" in enabled:
            store.admission.append(_admit_protection)
        if self._handlers:
            store.add_listener(self._enqueue)

    def _enqueue(self, change: Change) -> None:
        with self._idle:
            self._pending += 1
        self._queue.put(change)

    def start(self) -> None:
        """Start the controller thread (no-op when nothing is enabled)."""
        if self._handlers and self._thread is None:
            self._thread = threading.Thread(target=self._run, name="kube-sim-controllers", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Stop and join the controller thread."""
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()
            self._thread = None

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """Block until every queued change has been handled (True) or ``timeout`` passes (False)."""
        with self._idle:
            return self._idle.wait_for(lambda: self._pending == 0, timeout)

    def _run(self) -> None:
        interval = self._resync_interval if self._pv is not None else None
        next_resync = time.monotonic() + interval if interval else None
        while True:
            timeout = None if next_resync is None else max(0.0, next_resync - time.monotonic())
            try:
                change = self._queue.get(timeout=timeout)
            except queue.Empty:
                change = _TICK
            if change is None:
                return
            if next_resync is not None and time.monotonic() >= next_resync:
                self._resync()
                next_resync = time.monotonic() + (interval or 0.0)
            if change is _TICK:
                continue
            if change is _RESYNC:  # asked for by resync(), already counted as pending
                self._resync(counted=True)
                continue
            try:
                for handler in self._handlers:
                    handler(change)
            except Exception as e:  # a controller bug must not kill the thread; tests read .errors
                _log.exception("simulator controller failed on %s %s", change.type, change.resource)
                self.errors.append(f"{change.type} {change.resource}: {e!r}")
            finally:
                self._done()

    def resync(self) -> None:
        """Run the PV controller's resync now, on the controller thread (wait_idle() waits for it)."""
        if self._pv is not None:
            self._enqueue(_RESYNC)

    def _resync(self, *, counted: bool = False) -> None:
        """Periodic resync (``--pvclaimbinder-sync-period``); counted as pending so wait_idle covers it."""
        if self._pv is None:
            return
        if not counted:
            with self._idle:
                self._pending += 1
        try:
            self._pv.resync()
        except Exception as e:
            _log.exception("simulator PV controller resync failed")
            self.errors.append(f"resync: {e!r}")
        finally:
            self._done()

    def _done(self) -> None:
        with self._idle:
            self._pending -= 1
            if self._pending == 0:
                self._idle.notify_all()
