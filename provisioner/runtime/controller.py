"""The controller: informers feed a work queue; a pool of workers runs one reconcile step per key.

Keys are ``("claim", "ns/name")`` for the provision flow and ``("volume", "pv-name")`` for the delete flow.
Workers never sleep on Cinder: a step that must wait returns "requeue after", and the worker takes the
next key. Final errors are remembered with the claim's and class's resourceVersions, so they are retried
only when either changes (or, for quota, slowly).

Retry discipline: a key waiting out an error backoff or a requeue delay is not re-queued by watch events
unless the object *as the user shaped it* changed (see ``shape``): every step writes annotations to the
claim, and the event of that write used to retry a failing claim at once (827 times in 30 s). A deletion
(``deletionTimestamp``), a spec change or the claim's PV appearing still go through at once.

A controller that cannot die silently: the worker loop has one barrier around its whole body (an
exception is logged, counted in ``worker_errors_total`` and the loop goes on), and ``liveness_problem``
tells ``/healthz`` when a worker thread or a watch loop is dead, or a worker is stuck inside one step.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable
from datetime import datetime

import orjson
import structlog

from provisioner.domain import names
from provisioner.domain.outcome import Outcome, SimulatedCrash
from provisioner.flows.context import Context, Obj
from provisioner.flows.deletion import is_our_pv, reconcile_volume
from provisioner.flows.expand import Decided, reconcile_claim_and_size
from provisioner.flows.provision import class_name_of, is_ours
from provisioner.ports import ListWatcher
from provisioner.runtime.informer import Informer, trim
from provisioner.runtime.workers import WorkerPool
from provisioner.runtime.workqueue import WorkQueue

log = structlog.get_logger(__name__)

Key = tuple[str, str]
#: (hash of the object as the user shaped it, StorageClass resourceVersion)
Versions = tuple[str, str]
Flow = Callable[[Context, str], Outcome]

#: ``netvol.io/`` annotations users write; every other ``netvol.io/`` annotation is the controller's own
#: (provisioning step, create attempt, cloud, … and any added later) and is not part of the shape.
USER_ANNOTATIONS = frozenset({names.ANN_RESTORE_FROM_SNAPSHOT, names.ANN_ADOPT_VOLUME})


def shape(obj: Obj | None, *, with_phase: bool = False) -> str:
    """A hash of what the user (or Kubernetes, not we) decides about ``obj``.

    uid, deletionTimestamp, spec, the annotations except our own (and for PVs the phase: Released matters
    to the delete flow). Our writes (intent finalizer, step / attempt / cloud annotations) and the claim's
    status do not change it, so their watch events are recognised as our own echo.
    """
    if obj is None:
        return ""
    meta = obj.get("metadata") or {}
    annotations = {
        k: v
        for k, v in (meta.get("annotations") or {}).items()
        if not k.startswith(names.PREFIX) or k in USER_ANNOTATIONS
    }
    phase = (obj.get("status") or {}).get("phase") if with_phase else None
    # in memory only (never persisted), so the fast serializer; keys sorted at every level
    text = orjson.dumps(
        [meta.get("uid"), meta.get("deletionTimestamp"), annotations, obj.get("spec"), phase],
        option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS,
    )
    return hashlib.sha256(text).hexdigest()


def trim_pvc(obj: Obj) -> Obj:
    """What the controller reads of a PVC (≈1 KiB instead of several)."""
    out = trim(obj)
    status = out.get("status") or {}
    # phase, and what the expand flow reads (the resizer's fields; conditions are a handful of entries)
    out["status"] = {
        k: status[k]
        for k in ("phase", "capacity", "conditions", "allocatedResources", "allocatedResourceStatuses")
        if k in status
    }
    out["status"].setdefault("phase", None)
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
        queue: WorkQueue[Key] | None = None,
        clock: Callable[[], float] = time.monotonic,
        stuck_after_seconds: float = 300.0,
        claim_flow: Flow = reconcile_claim_and_size,
        volume_flow: Flow = reconcile_volume,
        pause: Callable[[float], None] | None = None,
    ) -> None:
        """``clock`` drives delays, backoff and stuck detection (the default queue shares it); a worker
        inside one step for longer than ``stuck_after_seconds`` makes the controller unhealthy."""
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
        self._clock = clock
        self.queue: WorkQueue[Key] = queue if queue is not None else WorkQueue(clock=clock)
        self._flows: dict[str, Flow] = {"claim": claim_flow, "volume": volume_flow}
        self._lock = threading.Lock()
        # claim key → (versions at the final failure, clock time of its slow retry or inf)
        self._final: dict[str, tuple[Versions, float]] = {}
        # key → (versions the failed / requeued step saw, clock time it is due): events do not retry it
        self._backoff: dict[Key, tuple[Versions, float]] = {}
        # key → versions at the start of the step running now; keys whose own-echo event came meanwhile
        self._inflight: dict[Key, Versions] = {}
        self._deferred: set[Key] = set()
        self._bound_seen: set[str] = set()
        self.pool: WorkerPool[Key] = WorkerPool(
            name="worker",
            queue=self.queue,
            process=self.process,
            is_leader=self.ctx.is_leader,
            metrics=self.ctx.metrics,
            count=workers,
            clock=clock,
            stuck_after_seconds=stuck_after_seconds,
            release=self._release,
            after=self._update_gauges,
            describe=_describe,
            pause=pause,
        )
        self._stopping = self.pool.stopping
        #: Set when a worker hit an armed crash point (the replica dies).
        self.crashed = self.pool.crashed
        self.ctx.metrics.workers_alive.set_function(self.pool.alive)
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
            with self._lock:
                self._final.pop(key, None)
                self._backoff.pop(("claim", key), None)
            return
        self._observe_bound(new)
        self._add_unless_echo(("claim", key), new)

    def _add_unless_echo(self, key: Key, obj: Obj) -> None:
        """Queue ``key`` for a watch event, unless it is waiting a delay and the event changed nothing of
        the object's shape (our own write's echo, a status change, a resync)."""
        versions = self._versions(key, obj)
        with self._lock:
            started = self._inflight.get(key)
            if started is not None:
                if started == versions:
                    self._deferred.add(key)  # the running step's outcome decides what follows
                    return
            else:
                waiting = self._backoff.get(key)
                if waiting is not None and waiting[0] == versions and self._clock() < waiting[1]:
                    return
        self.queue.add(key)

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
            max(0.0, self.ctx.wall() - started)
        )

    def _on_pv(self, event: str, old: Obj | None, new: Obj | None) -> None:
        obj = new or old
        if obj is None or not is_our_pv(obj, self.ctx.settings.provisioner_name):
            return
        if new is not None:
            self._add_unless_echo(("volume", obj["metadata"]["name"]), new)
        else:
            with self._lock:
                self._backoff.pop(("volume", obj["metadata"]["name"]), None)
        claim = (obj.get("spec") or {}).get("claimRef") or {}
        if claim.get("namespace") and claim.get("name"):
            self.queue.add(("claim", f"{claim['namespace']}/{claim['name']}"))  # its PV: always at once

    def _on_class(self, event: str, old: Obj | None, new: Obj | None) -> None:
        if event in ("RESYNC",) or new is None:
            return
        name = new["metadata"]["name"]
        with self._lock:
            keys = set(self._final) | {k for kind, k in self._backoff if kind == "claim"}
        for key in sorted(keys):
            pvc = self.pvcs.get(key)
            if pvc is not None and class_name_of(pvc) == name:
                self.queue.add(("claim", key))

    # ---- workers -------------------------------------------------------------------------------------

    def _versions(self, key: Key | str, obj: Obj | None = None) -> Versions:
        """What a final failure or a delay is remembered against: the object's shape, and its class.

        Our own writes (intent finalizer, ``netvol.io/`` annotations) and status changes must not count as
        "the claim changed", or a failure would be retried once more whenever our patch's event arrives.
        A deletion does count (the claim must then be abandoned).
        """
        kind, name = key if isinstance(key, tuple) else ("claim", key)
        if kind != "claim":
            return shape(obj if obj is not None else self.pvs.get(name), with_phase=True), ""
        pvc = obj if obj is not None else self.pvcs.get(name)
        sc = self.classes.get(class_name_of(pvc)) if pvc else None
        return shape(pvc), str(((sc or {}).get("metadata") or {}).get("resourceVersion", ""))

    def process(self, key: Key) -> Outcome | None:
        """Run one reconcile step for ``key`` and schedule what follows. Returns the outcome (tests)."""
        kind, name = key
        versions = self._versions(key)
        with self._lock:
            remembered = self._final.get(name) if kind == "claim" else None
            if remembered is not None and remembered[0] == versions and self._clock() < remembered[1]:
                # final failure, nothing changed since, slow retry not due: do not retry now — but keep the
                # slow retry: this delivery may have been an earlier delay of the key (a poll, a wait)
                # that consumed the queue's one pending deadline, the one the final outcome could not set
                if remembered[1] != float("inf"):
                    self.queue.add_after(key, remembered[1] - self._clock() + 0.01)
                return None
            self._backoff.pop(key, None)
            self._inflight[key] = versions
        started = time.perf_counter()
        try:
            outcome = self._flows[kind](self.ctx, name)
        except SimulatedCrash:
            raise
        except Exception as e:  # a bug or an unexpected library error: never kill the worker
            log.exception("reconcile_crashed", key=f"{kind}:{name}")
            outcome = Outcome(kind="error", reason=type(e).__name__, message=str(e))
        self.ctx.metrics.reconcile_seconds.labels(kind=kind).observe(time.perf_counter() - started)
        if isinstance(outcome, Decided):  # remember it against the copy the flow acted on, not ours
            versions = self._versions(key, outcome.claim)
        self._schedule(key, outcome, versions)
        return outcome

    def _schedule(self, key: Key, outcome: Outcome, versions: Versions) -> None:
        kind, name = key
        delay = 0.0
        if outcome.kind == "requeue":
            self.queue.forget(key)
            delay = outcome.delay
        elif outcome.kind == "error":
            self.ctx.metrics.queue_retries_total.labels(reason=outcome.reason or "unknown").inc()
            delay = max(self.queue.limiter.when(key), outcome.delay)
        else:
            self.queue.forget(key)
        with self._lock:
            self._inflight.pop(key, None)
            echoed = key in self._deferred
            self._deferred.discard(key)
            if kind == "claim" and outcome.kind != "final":
                self._final.pop(name, None)
            if outcome.kind in ("requeue", "error") and delay > 0:
                self._backoff[key] = (versions, self._clock() + delay)
            else:
                self._backoff.pop(key, None)
            if outcome.kind == "final" and kind == "claim":
                retry_at = self._clock() + outcome.delay - 0.01 if outcome.delay > 0 else float("inf")
                self._final[name] = (versions, retry_at)
        if outcome.kind in ("requeue", "error"):
            self.queue.add_after(key, delay)
            return
        if outcome.kind == "final" and outcome.delay > 0:
            self.queue.add_after(key, outcome.delay)
        if echoed:
            self.queue.add(key)  # done / final: look once more at what changed during the step

    @property
    def on_crash(self) -> Callable[[], None]:
        """Called (on a new thread) when a worker hits an armed crash point; the replica dies."""
        return self.pool.on_crash

    @on_crash.setter
    def on_crash(self, fn: Callable[[], None]) -> None:
        self.pool.on_crash = fn

    @property
    def _threads(self) -> list[threading.Thread]:
        return self.pool.threads

    def _worker(self) -> None:
        self.pool.loop()

    def run_once(self, worker: str = "worker", timeout: float | None = None) -> bool:
        """One iteration of a worker (see ``WorkerPool.run_once``). False once shut down."""
        return self.pool.run_once(worker, timeout)

    def _release(self, key: Key) -> None:
        """After every step, whatever happened in it: the key is no longer in flight."""
        with self._lock:
            self._inflight.pop(key, None)
            self._deferred.discard(key)

    def _update_gauges(self) -> None:
        try:
            m = self.ctx.metrics
            m.queue_depth.set(self.queue.depth())
            m.queue_waiting.set(self.queue.waiting())
            m.in_flight.set(self.queue.in_flight())
        except Exception:
            log.exception("worker_gauge_error")
            self.pool.count_error("gauges")

    # ---- health --------------------------------------------------------------------------------------

    def liveness_problem(self) -> str | None:
        """None while healthy, else a one-line reason for ``/healthz`` (the kubelet then restarts us).

        Unhealthy: a watch loop that died, a worker thread that died, a worker inside one step for longer
        than ``stuck_after_seconds``. A controller that is stopping, and a standby without workers, are
        healthy.
        """
        if self._stopping.is_set():
            return None
        for inf in (self.classes, self.pvs, self.pvcs):
            thread = inf._thread  # read only: informers expose no liveness of their own
            if thread is not None and not inf._stop.is_set() and not thread.is_alive():
                return f"informer {inf.resource}: watch loop died"
        return self.pool.liveness_problem()

    # ---- lifecycle -----------------------------------------------------------------------------------

    def start_informers(self) -> None:
        """Start list+watch for PVCs, PVs and classes (standbys do this too: warm caches)."""
        for inf in (self.classes, self.pvs, self.pvcs):
            inf.start()

    def wait_synced(self, timeout: float = 60.0) -> bool:
        """True once every informer has listed."""
        # Real time, not the injected clock: the waits below are real, and a fake clock would not end them.
        deadline = time.monotonic() + timeout
        return all(
            inf.wait_synced(max(0.0, deadline - time.monotonic()))
            for inf in (self.classes, self.pvs, self.pvcs)
        )

    @property
    def informers(self) -> tuple[Informer, Informer, Informer]:
        """The class, PV and PVC informers."""
        return (self.classes, self.pvs, self.pvcs)

    @property
    def synced(self) -> bool:
        """Ready = caches synced."""
        return self.classes.synced and self.pvs.synced and self.pvcs.synced

    def start_workers(self) -> None:
        """Start the worker pool (only on the leader, only on synced caches)."""
        if not self.synced:
            raise RuntimeError("start_workers before the informer caches synced")
        self.pool.start()

    def stop(self, *, abort_watches: Callable[[], None] | None = None, timeout: float = 10.0) -> None:
        """Drain: stop taking keys, let in-flight steps finish, stop informers."""
        deadline = time.monotonic() + timeout  # real time: thread joins (see wait_synced)
        self.pool.stop(deadline)
        for inf in (self.classes, self.pvs, self.pvcs):
            inf._stop.set()
        if abort_watches is not None:
            abort_watches()
        for inf in (self.classes, self.pvs, self.pvcs):
            inf.stop(max(0.1, deadline - time.monotonic()))

    def idle(self) -> bool:
        """Nothing queued, waiting or running."""
        return self.queue.idle()


def _describe(key: Key) -> str:
    return f"{key[0]}:{key[1]}"


__all__ = ["Controller", "is_ours", "shape", "trim_pv", "trim_pvc"]
