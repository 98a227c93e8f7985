"""A pool of worker threads over one work queue: the barrier loop, busy tracking and liveness.

Both controllers (claims and PVs; snapshot contents) run their keys the same way, so the part that must
never die lives here once: a worker takes a key, runs the controller's ``process`` on the leader (a
standby puts the key back for a second), and always hands the key back to the queue. One barrier covers
the whole loop body — the step, the controller's bookkeeping, the requeue, the gauges — so no exception
ends a thread: it is logged, counted in ``worker_errors_total{stage}``, the key is retried later (by its
backoff, or after a minute if even the rate limiter fails), and the loop goes on. ``liveness_problem``
tells ``/healthz`` about a dead thread or a worker inside one step for longer than ``stuck_after``.
An armed crash point (``SimulatedCrash``) is the one exception that ends the worker: the replica dies.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

import structlog

from provisioner.domain.outcome import SimulatedCrash
from provisioner.runtime.workqueue import ShutDownError, WorkQueue
from provisioner.telemetry.metrics import Metrics

log = structlog.get_logger(__name__)

K = TypeVar("K", bound=Hashable)

#: When even the rate limiter fails, a key is retried after this long rather than dropped.
FALLBACK_RETRY_SECONDS = 60.0


class WorkerPool(Generic[K]):
    """``count`` threads named ``<name>-<i>`` running ``process(key)`` for the keys of ``queue``."""

    def __init__(
        self,
        *,
        name: str,
        queue: WorkQueue[K],
        process: Callable[[K], object],
        is_leader: Callable[[], bool],
        metrics: Metrics,
        count: int,
        clock: Callable[[], float] = time.monotonic,
        stuck_after_seconds: float = 300.0,
        release: Callable[[K], None] | None = None,
        after: Callable[[], None] | None = None,
        describe: Callable[[K], str] = str,
        pause: Callable[[float], None] | None = None,
    ) -> None:
        """``release(key)`` runs after every step (the controller's per-key bookkeeping), ``after()``
        after it (gauges); ``describe`` names a key in log lines; ``pause`` waits after a loop error."""
        self.name = name
        self.queue = queue
        self._process = process
        self._is_leader = is_leader
        self._metrics = metrics
        self._count = count
        self._clock = clock
        self._stuck_after = stuck_after_seconds
        self._release = release
        self._after = after
        self._describe = describe
        self.stopping = threading.Event()
        self._pause = pause or self.stopping.wait
        self.threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._busy: dict[str, tuple[float, K]] = {}  # worker → (clock time its step started, key)
        #: Called (on a new thread) when a worker hits an armed crash point; the replica dies.
        self.on_crash: Callable[[], None] = lambda: None
        self.crashed = threading.Event()

    # ---- the loop ------------------------------------------------------------------------------------

    def loop(self) -> None:
        """Take keys until stopped. Nothing but a shutdown (or a simulated crash) ends this loop."""
        me = threading.current_thread().name
        while not self.stopping.is_set():
            try:
                if not self.run_once(me):
                    return
            except SimulatedCrash:
                log.warning("simulated_crash", worker=me)
                self.crashed.set()
                threading.Thread(target=self.on_crash, name="crash", daemon=True).start()
                return
            except Exception:  # the barrier: log, count, go on (pause a moment: no hot loop)
                log.exception("worker_loop_error", worker=me, pool=self.name)
                self.count_error("loop")
                self._pause(0.1)

    def run_once(self, worker: str = "worker", timeout: float | None = None) -> bool:
        """One iteration of a worker: take a key, run its step, release it. False once shut down."""
        try:
            key = self.queue.get(timeout)
        except ShutDownError:
            return False
        if key is None:
            return True
        with self._lock:
            self._busy[worker] = (self._clock(), key)
        try:
            if self._is_leader():
                self._process(key)
            else:
                self.queue.add_after(key, 1.0)
        except SimulatedCrash:
            raise
        except Exception:
            log.exception("worker_step_error", key=self._describe(key), pool=self.name)
            self.count_error("process")
            self._retry_later(key)
        finally:
            with self._lock:
                self._busy.pop(worker, None)
            try:
                if self._release is not None:
                    self._release(key)
            finally:
                try:
                    self.queue.done(key)  # always, or the key would never be handed out again
                finally:
                    if self._after is not None:
                        self._after()
        return True

    def _retry_later(self, key: K) -> None:
        """After a failure outside the flow: back off, or (limiter broken too) retry in a minute."""
        try:
            self._metrics.queue_retries_total.labels(reason="worker_error").inc()
            self.queue.add_rate_limited(key)
            return
        except Exception:
            log.exception("worker_requeue_error", key=self._describe(key), pool=self.name)
            self.count_error("requeue")
        try:
            self.queue.add_after(key, FALLBACK_RETRY_SECONDS)
        except Exception:  # the queue itself is broken: /healthz will not save us, the log must tell
            log.exception("worker_key_dropped", key=self._describe(key), pool=self.name)

    def count_error(self, stage: str) -> None:
        """Count a worker error at ``stage`` (never raises)."""
        try:
            self._metrics.worker_errors_total.labels(stage=stage).inc()
        except Exception:  # a metrics failure must not take the barrier down with it
            log.exception("worker_metric_error", stage=stage)

    # ---- health and lifecycle ------------------------------------------------------------------------

    def alive(self) -> int:
        """How many worker threads run."""
        return sum(1 for t in list(self.threads) if t.is_alive())

    def liveness_problem(self) -> str | None:
        """None while healthy (or stopping, or never started), else a one-line reason for ``/healthz``."""
        if self.stopping.is_set():
            return None
        threads = list(self.threads)
        dead = [t.name for t in threads if not t.is_alive()]
        if dead:
            return f"{len(dead)} of {len(threads)} {self.name} threads died ({', '.join(dead[:3])})"
        now = self._clock()
        with self._lock:
            busy = sorted(self._busy.items(), key=lambda item: item[1][0])
        for worker, (since, key) in busy:
            if now - since > self._stuck_after:
                return f"{worker} stuck for {now - since:.0f} s in one step of {self._describe(key)}"
        return None

    def start(self) -> None:
        """Start the threads."""
        for i in range(self._count):
            t = threading.Thread(target=self.loop, name=f"{self.name}-{i}", daemon=True)
            t.start()
            self.threads.append(t)

    def stop(self, deadline: float) -> None:
        """Stop taking keys; wait for the threads until ``deadline`` (``time.monotonic``: real joins)."""
        self.stopping.set()
        self.queue.shutdown()
        for t in self.threads:
            t.join(max(0.0, deadline - time.monotonic()))


__all__ = ["FALLBACK_RETRY_SECONDS", "WorkerPool"]
