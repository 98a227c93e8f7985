"""The snapshot controller: VolumeSnapshotContents of our driver → the snapshot flow, one key per content.

Like ``runtime.controller`` (informers feed a work queue; workers run one reconcile step per key, never
sleep on Cinder; a step that must wait returns "requeue after"), but for ``volumesnapshotcontents`` (plus
a ``volumesnapshotclasses`` cache for the class parameters). It shares the controller's Context: the same
fenced Cinder ports, Kubernetes writer, Events, metrics, hints, crash points and leadership.

Started by the replica: informers always (warm standbys); workers only on the leader, once both caches
synced — waited for on a thread of its own, so a cluster without the snapshot CRDs (the list answers 404
forever) never holds the volume controller back. Retry discipline: a key waiting out a delay is not
re-queued by watch events that did not change the content's shape (uid, deletionTimestamp, spec, the
annotations that are not ours): our own status and finalizer writes come back as such echoes.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Callable

import structlog

from provisioner.domain import names
from provisioner.domain.outcome import Outcome, SimulatedCrash
from provisioner.flows.context import Context, Obj
from provisioner.flows.snapshot_execute import reconcile_content
from provisioner.flows.snapshots import SnapshotContext
from provisioner.ports import ListWatcher
from provisioner.runtime.informer import Informer
from provisioner.runtime.workers import WorkerPool
from provisioner.runtime.workqueue import WorkQueue

log = structlog.get_logger(__name__)

ContentFlow = Callable[[SnapshotContext, str], Outcome]


def content_shape(obj: Obj | None) -> str:
    """A hash of what others (users, the common snapshot-controller) decide about a content."""
    if obj is None:
        return ""
    meta = obj.get("metadata") or {}
    annotations = {k: v for k, v in (meta.get("annotations") or {}).items() if not k.startswith(names.PREFIX)}
    text = json.dumps(
        [meta.get("uid"), meta.get("deletionTimestamp"), annotations, obj.get("spec")], sort_keys=True
    )
    return hashlib.sha256(text.encode()).hexdigest()


def is_our_content(obj: Obj | None) -> bool:
    """A VolumeSnapshotContent whose ``spec.driver`` is ours."""
    return bool(obj) and ((obj or {}).get("spec") or {}).get("driver") == names.CSI_DRIVER_NAME


class SnapshotController:
    """Owns the content and class informers, a queue and its workers."""

    def __init__(
        self,
        *,
        source: ListWatcher,
        ctx: Context,
        workers: int = 2,
        resync_seconds: float = 600.0,
        watch_timeout_seconds: int = 300,
        queue: WorkQueue[str] | None = None,
        clock: Callable[[], float] = time.monotonic,
        flow: ContentFlow = reconcile_content,
        stuck_after_seconds: float = 300.0,
    ) -> None:
        self.contents = Informer(
            "volumesnapshotcontents",
            source,
            resync_seconds=resync_seconds,
            watch_timeout_seconds=watch_timeout_seconds,
        )
        self.classes = Informer(
            "volumesnapshotclasses",
            source,
            resync_seconds=resync_seconds,
            watch_timeout_seconds=watch_timeout_seconds,
        )
        self.ctx = ctx
        self.sctx = SnapshotContext(ctx=ctx, contents=self.contents, snapshot_classes=self.classes)
        self._clock = clock
        self.queue: WorkQueue[str] = queue if queue is not None else WorkQueue(clock=clock)
        self._flow = flow
        self._lock = threading.Lock()
        # key → (shape the waiting step saw, clock time it is due)
        self._backoff: dict[str, tuple[str, float]] = {}
        self.pool: WorkerPool[str] = WorkerPool(
            name="snapshot-worker",
            queue=self.queue,
            process=self.process,
            is_leader=ctx.is_leader,
            metrics=ctx.metrics,
            count=workers,
            clock=clock,
            stuck_after_seconds=stuck_after_seconds,
        )
        self._stopping = self.pool.stopping
        #: Set when a worker hit an armed crash point (the replica dies).
        self.crashed = self.pool.crashed
        self.contents.add_handler(self._on_content)
        self.classes.add_handler(self._on_class)

    # ---- handlers ------------------------------------------------------------------------------------

    def _on_content(self, event: str, old: Obj | None, new: Obj | None) -> None:
        obj = new or old
        if not is_our_content(obj):
            return
        name = str((obj or {})["metadata"]["name"])
        if new is None:
            with self._lock:
                self._backoff.pop(name, None)
            return
        with self._lock:
            waiting = self._backoff.get(name)
            if waiting is not None and waiting[0] == content_shape(new) and self._clock() < waiting[1]:
                return  # our own write's echo, a status change or a resync while a delay runs
        self.queue.add(name)

    def _on_class(self, event: str, old: Obj | None, new: Obj | None) -> None:
        if event == "RESYNC" or new is None:
            return
        name = new["metadata"]["name"]
        for content in self.contents.values():
            spec = content.get("spec") or {}
            if is_our_content(content) and spec.get("volumeSnapshotClassName") == name:
                self.queue.add(str(content["metadata"]["name"]))

    # ---- workers -------------------------------------------------------------------------------------

    def process(self, name: str) -> Outcome:
        """One reconcile step for the content ``name``, and what follows it (tests call this)."""
        shape = content_shape(self.contents.get(name))
        with self._lock:
            self._backoff.pop(name, None)
        started = time.perf_counter()
        try:
            outcome = self._flow(self.sctx, name)
        except SimulatedCrash:
            raise
        except Exception as e:  # a bug or an unexpected library error: never kill the worker
            log.exception("snapshot_reconcile_crashed", content=name)
            outcome = Outcome(kind="error", reason=type(e).__name__, message=str(e))
        self.ctx.metrics.reconcile_seconds.labels(kind="snapshot").observe(time.perf_counter() - started)
        delay = 0.0
        if outcome.kind == "requeue":
            self.queue.forget(name)
            delay = outcome.delay
        elif outcome.kind == "error":
            self.ctx.metrics.queue_retries_total.labels(reason=outcome.reason or "unknown").inc()
            delay = max(self.queue.limiter.when(name), outcome.delay)
        else:
            self.queue.forget(name)
            delay = outcome.delay if outcome.kind == "final" else 0.0
        if delay > 0:
            with self._lock:
                self._backoff[name] = (shape, self._clock() + delay)
            self.queue.add_after(name, delay)
        return outcome

    @property
    def on_crash(self) -> Callable[[], None]:
        """Called (on a new thread) when a worker hits an armed crash point; the replica dies."""
        return self.pool.on_crash

    @on_crash.setter
    def on_crash(self, fn: Callable[[], None]) -> None:
        self.pool.on_crash = fn

    def run_once(self, worker: str = "snapshot-worker", timeout: float | None = None) -> bool:
        """Take one key, run its step, release it (``WorkerPool.run_once``). False once shut down."""
        return self.pool.run_once(worker, timeout)

    # ---- lifecycle -----------------------------------------------------------------------------------

    @property
    def synced(self) -> bool:
        return self.contents.synced and self.classes.synced

    def start_informers(self) -> None:
        """List+watch contents and classes (standbys too)."""
        self.classes.start()
        self.contents.start()

    def start_workers_when_synced(self) -> threading.Thread:
        """On the leader: start the workers once both caches synced (a thread waits for that)."""

        def wait_then_start() -> None:
            logged = False
            while not self._stopping.is_set():
                if self.contents.wait_synced(0.5) and self.classes.wait_synced(0.5):
                    self._start_workers()
                    return
                if not logged:
                    logged = True
                    log.info(
                        "snapshot_caches_not_synced_yet",
                        hint="are the snapshot.storage.k8s.io CRDs installed?",
                    )

        t = threading.Thread(target=wait_then_start, name="snapshot-start", daemon=True)
        t.start()
        return t

    def _start_workers(self) -> None:
        self.pool.start()

    def liveness_problem(self) -> str | None:
        """None while healthy, else a one-line reason (a dead worker thread, a worker stuck in a step)."""
        return self.pool.liveness_problem()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop taking keys, let in-flight steps finish; tell the informers to end (``join`` waits)."""
        self.pool.stop(time.monotonic() + timeout)  # real time: thread joins
        for inf in (self.contents, self.classes):
            inf._stop.set()

    def join(self, timeout: float = 2.0) -> None:
        """Wait for the informer loops (after the adapter aborted their watches)."""
        for inf in (self.contents, self.classes):
            inf.stop(timeout)

    def idle(self) -> bool:
        return self.queue.idle()


__all__ = ["SnapshotController", "content_shape", "is_our_content"]
