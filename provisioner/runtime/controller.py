"""The controller: informers feed a work queue; a pool of workers runs one reconcile step per key.

Keys are ``("claim", "ns/name")`` for the provision flow and ``("volume", "pv-name")`` for the delete flow.
Workers never sleep on Cinder: a step that must wait returns "requeue after", and the worker takes the
next key. Final errors are remembered with the claim's and class's resourceVersions, so they are retried
only when either changes (or, for quota, slowly).
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Callable
from datetime import datetime

import structlog

from provisioner.domain import names
from provisioner.domain.outcome import Outcome, SimulatedCrash
from provisioner.flows.context import Context, Obj
from provisioner.flows.deletion import is_our_pv, reconcile_volume
from provisioner.flows.provision import class_name_of, is_ours, reconcile_claim
from provisioner.runtime.informer import Informer, ListWatcher, trim
from provisioner.runtime.workqueue import ShutDownError, WorkQueue

log = structlog.get_logger(__name__)

Key = tuple[str, str]


def trim_pvc(obj: Obj) -> Obj:
    """What the controller reads of a PVC (≈1 KiB instead of several)."""
    out = trim(obj)
    status = out.get("status") or {}
    out["status"] = {"phase": status.get("phase")}
    return out


def trim_pv(obj: Obj) -> Obj:
    """What the controller reads of a PV: metadata, claimRef, class, policy, capacity and phase."""
    out = trim(obj)
    spec = obj.get("spec") or {}
    out["spec"] = {
        k: spec[k]
        for k in ("claimRef", "storageClassName", "persistentVolumeReclaimPolicy", "capacity")
        if k in spec
    }
    for source, ref_key in (("rbd", "secretRef"), ("iscsi", "secretRef"), ("csi", "nodeStageSecretRef")):
        if source in spec:  # keep only what the delete flow needs: the Secret reference
            out["spec"][source] = {
                k: v for k, v in spec[source].items() if k in (ref_key, "volumeHandle", "driver")
            }
    out["status"] = {"phase": (obj.get("status") or {}).get("phase")}
    return out


class Controller:
    """Owns the informers, the queue and the workers."""

    def __init__(
        self,
        *,
        source: ListWatcher,
        make_context: Callable[[Informer, Informer, Informer], Context],
        workers: int = 8,
        resync_seconds: float = 600.0,
        watch_timeout_seconds: int = 300,
    ) -> None:
        self.pvcs = Informer(
            "persistentvolumeclaims",
            source,
            trimmer=trim_pvc,
            resync_seconds=resync_seconds,
            watch_timeout_seconds=watch_timeout_seconds,
        )
        self.pvs = Informer(
            "persistentvolumes",
            source,
            trimmer=trim_pv,
            resync_seconds=resync_seconds,
            watch_timeout_seconds=watch_timeout_seconds,
        )
        self.classes = Informer(
            "storageclasses",
            source,
            resync_seconds=resync_seconds,
            watch_timeout_seconds=watch_timeout_seconds,
        )
        self.ctx = make_context(self.pvcs, self.pvs, self.classes)
        self.queue: WorkQueue[Key] = WorkQueue()
        self._workers = workers
        self._threads: list[threading.Thread] = []
        # claim key → (_versions() at the final failure, monotonic time of its slow retry or inf)
        self._final: dict[str, tuple[tuple[str, str], float]] = {}
        self._final_lock = threading.Lock()
        self._stopping = threading.Event()
        self._bound_seen: set[str] = set()
        #: Called (on a new thread) when a worker hits an armed crash point; the replica dies.
        self.on_crash: Callable[[], None] = lambda: None
        self.crashed = threading.Event()
        self.pvcs.add_handler(self._on_pvc)
        self.pvs.add_handler(self._on_pv)
        self.classes.add_handler(self._on_class)

    # ---- handlers ------------------------------------------------------------------------------------

    def _on_pvc(self, event: str, old: Obj | None, new: Obj | None) -> None:
        obj = new or old
        if obj is None:
            return
        key = f"{obj['metadata']['namespace']}/{obj['metadata']['name']}"
        if new is None:
            uid = obj["metadata"].get("uid", "")
            self._bound_seen.discard(uid)
            self.ctx.hints.drop(uid)
            with self._final_lock:
                self._final.pop(key, None)
            return
        self._observe_bound(new)
        self.queue.add(("claim", key))

    def _observe_bound(self, pvc: Obj) -> None:
        uid = pvc["metadata"].get("uid", "")
        if (pvc.get("status") or {}).get("phase") != "Bound" or uid in self._bound_seen:
            return
        ann = pvc["metadata"].get("annotations") or {}
        if ann.get(names.ANN_STORAGE_PROVISIONER) != self.ctx.settings.provisioner_name:
            return
        self._bound_seen.add(uid)
        created = pvc["metadata"].get("creationTimestamp")
        if not created:
            return
        try:
            started = datetime.fromisoformat(created.replace("Z", "+00:00")).timestamp()
        except ValueError:
            return
        self.ctx.metrics.pvc_bound_seconds.labels(storage_class=class_name_of(pvc)).observe(
            max(0.0, time.time() - started)
        )

    def _on_pv(self, event: str, old: Obj | None, new: Obj | None) -> None:
        obj = new or old
        if obj is None or not is_our_pv(obj, self.ctx.settings.provisioner_name):
            return
        if new is not None:
            self.queue.add(("volume", obj["metadata"]["name"]))
        claim = (obj.get("spec") or {}).get("claimRef") or {}
        if claim.get("namespace") and claim.get("name"):
            self.queue.add(("claim", f"{claim['namespace']}/{claim['name']}"))

    def _on_class(self, event: str, old: Obj | None, new: Obj | None) -> None:
        if event in ("RESYNC",) or new is None:
            return
        name = new["metadata"]["name"]
        with self._final_lock:
            keys = list(self._final)
        for key in keys:
            pvc = self.pvcs.get(key)
            if pvc is not None and class_name_of(pvc) == name:
                self.queue.add(("claim", key))

    # ---- workers -------------------------------------------------------------------------------------

    def _versions(self, key: str) -> tuple[str, str]:
        """What a final failure is remembered against: the claim as the user shaped it, and the class.

        Our own writes (intent finalizer, step annotation) and status changes must not count as "the claim
        changed", or a final failure would be retried once more whenever our patch's event arrives late.
        A deletion does count (the claim must then be abandoned).
        """
        pvc = self.pvcs.get(key) or {}
        sc = self.classes.get(class_name_of(pvc)) if pvc else None
        meta = pvc.get("metadata") or {}
        annotations = {
            k: v for k, v in (meta.get("annotations") or {}).items() if k != names.ANN_PROVISIONING_STEP
        }
        shape = json.dumps(
            [meta.get("uid"), meta.get("deletionTimestamp"), annotations, pvc.get("spec")], sort_keys=True
        )
        return (
            hashlib.sha256(shape.encode()).hexdigest(),
            str(((sc or {}).get("metadata") or {}).get("resourceVersion", "")),
        )

    def process(self, key: Key) -> Outcome | None:
        """Run one reconcile step for ``key`` and schedule what follows. Returns the outcome (tests)."""
        kind, name = key
        if kind == "claim":
            with self._final_lock:
                remembered = self._final.get(name)
            if (
                remembered is not None
                and remembered[0] == self._versions(name)
                and time.monotonic() < remembered[1]
            ):
                return None  # final failure, nothing changed since, slow retry not due: do not retry
        started = time.perf_counter()
        try:
            outcome = reconcile_claim(self.ctx, name) if kind == "claim" else reconcile_volume(self.ctx, name)
        except SimulatedCrash:
            raise
        except Exception as e:  # a bug or an unexpected library error: never kill the worker
            log.exception("reconcile_crashed", key=f"{kind}:{name}")
            outcome = Outcome(kind="error", reason=type(e).__name__, message=str(e))
        self.ctx.metrics.reconcile_seconds.labels(kind=kind).observe(time.perf_counter() - started)
        self._schedule(key, outcome)
        return outcome

    def _schedule(self, key: Key, outcome: Outcome) -> None:
        kind, name = key
        if kind == "claim" and outcome.kind != "final":
            with self._final_lock:
                self._final.pop(name, None)
        if outcome.kind == "done":
            self.queue.forget(key)
        elif outcome.kind == "requeue":
            self.queue.forget(key)
            self.queue.add_after(key, outcome.delay)
        elif outcome.kind == "error":
            self.ctx.metrics.queue_retries_total.inc()
            delay = self.queue.limiter.when(key)
            self.queue.add_after(key, max(delay, outcome.delay))
        else:  # final
            self.queue.forget(key)
            if kind == "claim":
                retry_at = time.monotonic() + outcome.delay - 0.01 if outcome.delay > 0 else float("inf")
                with self._final_lock:
                    self._final[name] = (self._versions(name), retry_at)
            if outcome.delay > 0:
                self.queue.add_after(key, outcome.delay)

    def _worker(self) -> None:
        while not self._stopping.is_set():
            try:
                key = self.queue.get()
            except ShutDownError:
                return
            if key is None:
                continue
            try:
                if self.ctx.is_leader():
                    self.process(key)
                else:
                    self.queue.add_after(key, 1.0)
            except SimulatedCrash:
                log.warning("simulated_crash", key=f"{key[0]}:{key[1]}")
                self.crashed.set()
                threading.Thread(target=self.on_crash, name="crash", daemon=True).start()
                return
            finally:
                self.queue.done(key)
                self._update_gauges()

    def _update_gauges(self) -> None:
        m = self.ctx.metrics
        m.queue_depth.set(self.queue.depth())
        m.queue_waiting.set(self.queue.waiting())
        m.in_flight.set(self.queue.in_flight())

    # ---- lifecycle -----------------------------------------------------------------------------------

    def start_informers(self) -> None:
        """Start list+watch for PVCs, PVs and classes (standbys do this too: warm caches)."""
        for inf in (self.classes, self.pvs, self.pvcs):
            inf.start()

    def wait_synced(self, timeout: float = 60.0) -> bool:
        """True once every informer has listed."""
        deadline = time.monotonic() + timeout
        return all(
            inf.wait_synced(max(0.0, deadline - time.monotonic()))
            for inf in (self.classes, self.pvs, self.pvcs)
        )

    @property
    def synced(self) -> bool:
        """Ready = caches synced."""
        return self.classes.synced and self.pvs.synced and self.pvcs.synced

    def start_workers(self) -> None:
        """Start the worker pool (only on the leader)."""
        for i in range(self._workers):
            t = threading.Thread(target=self._worker, name=f"worker-{i}", daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self, *, abort_watches: Callable[[], None] | None = None, timeout: float = 10.0) -> None:
        """Drain: stop taking keys, let in-flight steps finish, stop informers."""
        self._stopping.set()
        self.queue.shutdown()
        deadline = time.monotonic() + timeout
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))
        for inf in (self.classes, self.pvs, self.pvcs):
            inf._stop.set()
        if abort_watches is not None:
            abort_watches()
        for inf in (self.classes, self.pvs, self.pvcs):
            inf.stop(max(0.1, deadline - time.monotonic()))

    def idle(self) -> bool:
        """Nothing queued, waiting or running."""
        return self.queue.idle()


__all__ = ["Controller", "is_ours", "trim_pv", "trim_pvc"]
