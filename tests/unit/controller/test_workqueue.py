"""Work queue semantics: dedup, no concurrent processing of one key, delays, backoff."""

from __future__ import annotations

import threading

import pytest
from hypothesis import given
from hypothesis import strategies as st

from provisioner.runtime.workqueue import BackoffLimiter, ShutDownError, WorkQueue


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_add_deduplicates() -> None:
    """A key added twice before processing is handed out once."""
    q: WorkQueue[str] = WorkQueue()
    q.add("a")
    q.add("a")
    q.add("b")
    assert [q.get(0), q.get(0), q.get(0)] == ["a", "b", None]


def test_key_readded_while_processing_is_processed_after_done() -> None:
    """Adding a key that is being processed queues it once more, but only after done()."""
    q: WorkQueue[str] = WorkQueue()
    q.add("a")
    assert q.get(0) == "a"
    q.add("a")
    assert q.get(0) is None  # not handed out concurrently
    q.done("a")
    assert q.get(0) == "a"


def test_add_after_uses_earliest_deadline() -> None:
    """A later add_after does not postpone an earlier scheduled one."""
    clock = FakeClock()
    q: WorkQueue[str] = WorkQueue(clock=clock)
    q.add_after("a", 5.0)
    q.add_after("a", 10.0)
    clock.now = 5.0
    assert q.get(0) == "a"


def test_add_after_not_ready_before_deadline() -> None:
    """A delayed key is not handed out before its time."""
    clock = FakeClock()
    q: WorkQueue[str] = WorkQueue(clock=clock)
    q.add_after("a", 1.0)
    assert q.get(0) is None
    assert q.waiting() == 1
    clock.now = 1.0
    assert q.get(0) == "a"


def test_backoff_doubles_to_cap_and_forget_resets() -> None:
    """Per-item backoff: 1, 2, 4 … capped; forget() starts over."""
    limiter: BackoffLimiter[str] = BackoffLimiter(base=1.0, cap=5.0, qps=1000, burst=1000, clock=FakeClock())
    assert [1.0, 2.0, 4.0, 5.0, 5.0] == [limiter.when("k") for _ in range(5)]
    limiter.forget("k")
    assert limiter.when("k") == 1.0


def test_global_bucket_limits_many_keys() -> None:
    """Beyond the burst, the global token bucket delays retries of different keys."""
    limiter: BackoffLimiter[int] = BackoffLimiter(base=0.001, cap=1.0, qps=10, burst=2, clock=FakeClock())
    delays = [limiter.when(i) for i in range(4)]
    assert delays[:2] == [0.001, 0.001]
    assert delays[2] == pytest.approx(0.1)
    assert delays[3] == pytest.approx(0.2)


def test_shutdown_wakes_blocked_getter() -> None:
    """get() blocked on an empty queue raises ShutDownError when the queue shuts down."""
    q: WorkQueue[str] = WorkQueue()
    raised = threading.Event()

    def worker() -> None:
        try:
            q.get()
        except ShutDownError:
            raised.set()

    t = threading.Thread(target=worker)
    t.start()
    q.shutdown()
    t.join(2)
    assert raised.is_set()


@given(st.lists(st.tuples(st.sampled_from(["add", "get", "done"]), st.integers(0, 4)), max_size=60))
def test_never_hands_out_a_key_twice_concurrently(ops: list[tuple[str, int]]) -> None:
    """Invariant: a key is never processing twice, and every added key is eventually handed out."""
    q: WorkQueue[int] = WorkQueue()
    processing: set[int] = set()
    pending: set[int] = set()
    for op, key in ops:
        if op == "add":
            q.add(key)
            pending.add(key)
        elif op == "get":
            got = q.get(0)
            if got is not None:
                assert got not in processing
                processing.add(got)
                pending.discard(got)
        elif key in processing:
            q.done(key)
            processing.discard(key)
    for key in list(processing):
        q.done(key)
    drained = set()
    while (got := q.get(0)) is not None:
        drained.add(got)
        q.done(got)
    assert pending <= drained


def test_keys_back_from_a_delay_are_served_before_fresh_keys() -> None:
    """A polled key whose delay expired goes ahead of fresh keys (no tail of half-done claims)."""
    clock = FakeClock()
    q: WorkQueue[str] = WorkQueue(clock=clock)
    for key in ("fresh-1", "fresh-2", "fresh-3"):
        q.add(key)
    q.add_after("polled", 1.0)
    clock.now = 1.0
    assert ["polled", "fresh-1", "fresh-2", "fresh-3"] == [q.get(0) for _ in range(4)]


def test_key_readded_while_processing_goes_first() -> None:
    """A key changed while it was being processed is re-served before fresh keys."""
    q: WorkQueue[str] = WorkQueue()
    q.add("a")
    assert "a" == q.get(0)
    q.add("b")
    q.add("a")
    q.done("a")
    assert ["a", "b"] == [q.get(0), q.get(0)]
