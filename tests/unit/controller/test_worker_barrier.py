"""A controller that cannot die silently: failures anywhere in a worker's loop are caught and counted."""

from __future__ import annotations

import threading

import pytest
from structlog.testing import capture_logs

from provisioner.domain.outcome import DONE, Outcome, error
from provisioner.runtime.controller import Key
from provisioner.runtime.workqueue import BackoffLimiter, WorkQueue
from tests.unit.controller.rig import make_rig

FAILURES = 2_000


def no_wait_queue() -> WorkQueue[Key]:
    """Backoff capped at 0 s and no token bucket: a failing key comes straight back, as fast as it can."""
    return WorkQueue(limiter=BackoffLimiter(cap=0.0, qps=1e9, burst=10**9))


def test_backoff_after_10000_failures_is_the_cap() -> None:
    """BackoffLimiter.when after 10,000 failures of one key returns the cap (no OverflowError)."""
    limiter: BackoffLimiter[str] = BackoffLimiter(base=0.005, cap=300.0, qps=1e9, burst=10**9)
    delays = [limiter.when("k") for _ in range(10_001)]
    assert 300.0 == delays[-1]
    assert 0.005 == delays[0]
    assert limiter.failures("k") <= 10_001


def test_2000_failures_of_one_key_leave_every_worker_alive_and_others_processed() -> None:
    """2,000 consecutive failures (raises and error outcomes) of one key: all workers live, others done."""
    rig = make_rig(workers=4, queue=no_wait_queue())
    past_overflow, finished, others_done = threading.Event(), threading.Event(), threading.Event()
    others = [f"default/ok-{i}" for i in range(50)]

    def bad(key: str) -> Outcome:
        n = rig.claims.count(key)
        if n == 1_100:
            past_overflow.set()  # the old limiter raised OverflowError at the 1,025th failure
        if n > FAILURES:
            finished.set()
            return DONE
        if n % 2:
            raise RuntimeError("boom")  # a flow bug: caught in process(), an "error" outcome
        return error("CinderUnavailable", "503")

    def ok(key: str) -> Outcome:
        if all(rig.claims.count(k) for k in others):
            others_done.set()
        return DONE

    rig.claims.answers["default/bad"] = bad
    rig.claims.default = ok
    rig.start()
    with capture_logs() as logs:  # also keeps 1,000 rendered tracebacks off the terminal
        try:
            assert rig.controller.wait_synced(5.0)
            rig.controller.start_workers()
            rig.controller.queue.add(("claim", "default/bad"))
            assert past_overflow.wait(30.0)
            for key in others:
                rig.controller.queue.add(("claim", key))
            assert others_done.wait(30.0)
            assert finished.wait(30.0)
            alive = [t.is_alive() for t in rig.controller._threads]
            problem = rig.controller.liveness_problem()
            gauge = rig.sample("cinder_provisioner_workers_alive")
        finally:
            rig.stop()
    assert [True] * 4 == alive
    assert problem is None
    assert 4.0 == gauge
    assert FAILURES // 2 == sum(1 for e in logs if e["event"] == "reconcile_crashed")
    retries = rig.sample("cinder_provisioner_queue_retries_total", reason="RuntimeError") + rig.sample(
        "cinder_provisioner_queue_retries_total", reason="CinderUnavailable"
    )
    assert float(FAILURES) == retries
    assert 0.0 == rig.sample("cinder_provisioner_worker_errors_total", stage="loop")


def test_a_failing_leader_check_is_counted_and_the_key_retried() -> None:
    """is_leader() raising inside the loop: counted (stage=process), the key is retried, the loop goes on."""
    calls = [0]

    def is_leader() -> bool:
        calls[0] += 1
        if calls[0] == 1:
            raise RuntimeError("elector bug")
        return True

    rig = make_rig(queue=no_wait_queue(), is_leader=is_leader)
    rig.claims.default = lambda key: (rig.controller.queue.shutdown(), DONE)[1]
    rig.controller.queue.add(("claim", "default/data"))
    rig.controller._worker()  # runs in this thread until the flow shuts the queue down
    assert ["default/data"] == rig.claims.calls
    assert 1.0 == rig.sample("cinder_provisioner_worker_errors_total", stage="process")
    assert 1.0 == rig.sample("cinder_provisioner_queue_retries_total", reason="worker_error")


def test_a_failing_queue_get_is_counted_and_the_loop_goes_on() -> None:
    """queue.get() raising: counted (stage=loop), a short pause, then the next key is processed."""

    class FlakyQueue(WorkQueue[Key]):
        failed = False

        def get(self, timeout: float | None = None) -> Key | None:
            if not self.failed:
                self.failed = True
                raise RuntimeError("queue bug")
            return super().get(timeout)

    rig = make_rig(queue=FlakyQueue())
    rig.claims.default = lambda key: (rig.controller.queue.shutdown(), DONE)[1]
    rig.controller.queue.add(("claim", "default/data"))
    rig.controller._worker()
    assert ["default/data"] == rig.claims.calls
    assert 1.0 == rig.sample("cinder_provisioner_worker_errors_total", stage="loop")
    assert [0.1] == rig.pauses


def test_failing_gauges_and_done_are_counted_and_the_loop_goes_on(monkeypatch: pytest.MonkeyPatch) -> None:
    """queue.done() and the gauges raising: both counted, the key released, the next key processed."""

    class FlakyDone(WorkQueue[Key]):
        failed = False

        def done(self, key: Key) -> None:
            super().done(key)
            if not self.failed:
                self.failed = True
                raise RuntimeError("done bug")

    rig = make_rig(queue=FlakyDone())

    def broken(value: float) -> None:
        raise ValueError("gauge bug")

    monkeypatch.setattr(rig.metrics.queue_depth, "set", broken)
    rig.claims.answers["default/last"] = lambda key: (rig.controller.queue.shutdown(), DONE)[1]
    rig.controller.queue.add(("claim", "default/first"))
    rig.controller.queue.add(("claim", "default/last"))
    rig.controller._worker()
    assert ["default/first", "default/last"] == rig.claims.calls
    assert 1.0 == rig.sample("cinder_provisioner_worker_errors_total", stage="loop")
    assert 2.0 == rig.sample("cinder_provisioner_worker_errors_total", stage="gauges")
