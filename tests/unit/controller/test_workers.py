"""The worker pool both controllers share: the barrier, the per-key release, stuck and dead detection."""

from __future__ import annotations

import threading
import time
from typing import Any

from provisioner.runtime.workers import WorkerPool
from provisioner.runtime.workqueue import WorkQueue
from provisioner.telemetry.metrics import make_metrics
from tests.fakes.ports import FakeClock


def _pool(process: Any, *, clock: FakeClock | None = None, **kw: Any) -> WorkerPool[str]:
    clock = clock or FakeClock()
    return WorkerPool(
        name="snapshot-worker",
        queue=WorkQueue(clock=clock),
        process=process,
        is_leader=kw.pop("is_leader", lambda: True),
        metrics=make_metrics(),
        count=kw.pop("count", 1),
        clock=clock,
        stuck_after_seconds=300.0,
        **kw,
    )


def test_the_release_hook_runs_and_the_key_is_handed_back_even_when_the_step_raises() -> None:
    released: list[str] = []

    def boom(key: str) -> None:
        raise KeyError(key)

    pool = _pool(boom, release=released.append)
    pool.queue.add("a")
    assert pool.run_once("w", timeout=0)
    assert ["a"] == released
    assert 0 == pool.queue.in_flight()
    assert 1 == pool.queue.waiting()  # retried later by its backoff, not dropped


def test_a_standby_puts_the_key_back_without_running_it() -> None:
    ran: list[str] = []
    pool = _pool(ran.append, is_leader=lambda: False)
    pool.queue.add("a")
    pool.run_once("w", timeout=0)
    assert [] == ran
    assert 1 == pool.queue.waiting()


def test_a_worker_inside_one_step_too_long_is_reported_stuck() -> None:
    clock = FakeClock()
    entered, leave = threading.Event(), threading.Event()

    def slow(key: str) -> None:
        entered.set()
        leave.wait(10)

    pool = _pool(slow, clock=clock)
    pool.start()
    try:
        pool.queue.add("content-1")
        assert entered.wait(5)
        assert pool.liveness_problem() is None
        clock.advance(301.0)
        assert "snapshot-worker-0 stuck for 301 s in one step of content-1" == pool.liveness_problem()
    finally:
        leave.set()
        pool.stop(time.monotonic() + 5)
    assert pool.liveness_problem() is None  # stopping is not a problem


def test_a_failing_release_hook_does_not_end_the_thread() -> None:
    calls: list[str] = []

    def bad_release(key: str) -> None:
        calls.append(key)
        raise RuntimeError("bookkeeping broke")

    pool = _pool(lambda key: None, release=bad_release, pause=lambda _s: None)
    pool.start()
    try:
        for i in range(50):
            pool.queue.add(f"k{i}")
        deadline = time.monotonic() + 10
        while len(calls) < 50 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert 50 == len(calls)
        assert 1 == pool.alive()
        assert pool.liveness_problem() is None
    finally:
        pool.stop(time.monotonic() + 5)
