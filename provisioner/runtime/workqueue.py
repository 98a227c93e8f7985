"""A rate-limited work queue with client-go semantics, so workers never block waiting for Cinder.

- A key is queued at most once; a key being processed that is added again is processed once more after
  ``done`` (never concurrently with itself).
- ``add_after`` schedules a key (earliest deadline wins); this is how reconcile "waits": it returns
  "requeue after N s" and the worker moves on to the next key.
- Keys coming back from a delay (polls, retries) are handed out before fresh keys: a claim whose volume
  just became available finishes before another claim starts, so a burst does not end with a long tail
  of half-done claims waiting behind hundreds of new ones.
- ``add_rate_limited`` applies per-item exponential backoff (``base`` doubling to ``cap``) combined with a
  global token bucket (the larger delay wins), like client-go's default controller rate limiter. The
  exponent and the stored failure count are capped: a key that fails forever stays at ``cap`` (computing
  ``base * 2**n`` for n ≥ 1024 used to raise OverflowError in the worker and kill it).
Time comes from an injectable monotonic clock.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable
from typing import Final, Generic, TypeVar

K = TypeVar("K", bound=Hashable)

#: Doublings beyond this are not computed: 2.0**62 is a small float and past any sane cap / base ratio.
MAX_EXPONENT: Final = 62
#: Failures stored per key are capped too, so a key failing for years does not grow an unbounded int.
MAX_FAILURES: Final = 1_000_000


class ShutDownError(Exception):
    """The queue was shut down; workers should exit."""


class BackoffLimiter(Generic[K]):
    """Per-item exponential backoff plus a global token bucket (qps, burst)."""

    def __init__(
        self,
        *,
        base: float = 1.0,
        cap: float = 300.0,
        qps: float = 10.0,
        burst: int = 100,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._base, self._cap = base, cap
        self._failures: dict[K, int] = {}
        self._qps, self._burst = qps, float(burst)
        self._tokens = float(burst)
        self._clock = clock
        self._last = clock()
        self._lock = threading.Lock()

    def when(self, key: K) -> float:
        """Delay before ``key`` may be retried; counts one more failure for it."""
        with self._lock:
            n = self._failures.get(key, 0)
            self._failures[key] = min(n + 1, MAX_FAILURES)
            per_item = min(self._cap, self._base * 2.0 ** min(n, MAX_EXPONENT))
            now = self._clock()
            self._tokens = min(self._burst, self._tokens + (now - self._last) * self._qps)
            self._last = now
            self._tokens -= 1.0
            bucket = -self._tokens / self._qps if self._tokens < 0 else 0.0
            return float(max(per_item, bucket))

    def failures(self, key: K) -> int:
        """How many times ``key`` failed since it was last forgotten."""
        with self._lock:
            return self._failures.get(key, 0)

    def forget(self, key: K) -> None:
        """Reset ``key``'s backoff (after success)."""
        with self._lock:
            self._failures.pop(key, None)


class WorkQueue(Generic[K]):
    """Deduplicating FIFO with delayed adds and rate limiting. Thread-safe."""

    def __init__(
        self,
        *,
        limiter: BackoffLimiter[K] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._cond = threading.Condition()
        self._queue: deque[K] = deque()
        self._urgent: deque[K] = deque()  # keys back from a delay: served first
        self._dirty: set[K] = set()
        self._processing: set[K] = set()
        self._waiting: list[tuple[float, int, K]] = []  # heap of (ready_at, seq, key)
        self._ready_at: dict[K, float] = {}
        self._seq = itertools.count()
        self._clock = clock
        self._shutdown = False
        self.limiter: BackoffLimiter[K] = limiter or BackoffLimiter(clock=clock)

    # ---- producers -----------------------------------------------------------------------------------

    def add(self, key: K) -> None:
        """Queue ``key`` now (no-op if already queued)."""
        with self._cond:
            self._add_locked(key)

    def _add_locked(self, key: K, *, urgent: bool = False) -> None:
        if self._shutdown or key in self._dirty:
            return
        self._dirty.add(key)
        if key not in self._processing:
            (self._urgent if urgent else self._queue).append(key)
            self._cond.notify()

    def add_after(self, key: K, delay: float) -> None:
        """Queue ``key`` after ``delay`` seconds (the earliest pending deadline wins)."""
        if delay <= 0:
            self.add(key)
            return
        with self._cond:
            if self._shutdown:
                return
            ready = self._clock() + delay
            current = self._ready_at.get(key)
            if current is not None and current <= ready:
                return
            self._ready_at[key] = ready
            heapq.heappush(self._waiting, (ready, next(self._seq), key))
            self._cond.notify()

    def add_rate_limited(self, key: K) -> float:
        """Queue ``key`` after its backoff delay; returns the delay used."""
        delay = self.limiter.when(key)
        self.add_after(key, delay)
        return delay

    def forget(self, key: K) -> None:
        """Clear ``key``'s backoff history."""
        self.limiter.forget(key)

    # ---- consumers -----------------------------------------------------------------------------------

    def get(self, timeout: float | None = None) -> K | None:
        """Next key to process (marks it processing); None on timeout; raises ShutDownError."""
        deadline = None if timeout is None else self._clock() + timeout
        with self._cond:
            while True:
                if self._shutdown:
                    raise ShutDownError
                self._promote_due_locked()
                if self._urgent or self._queue:
                    key = self._urgent.popleft() if self._urgent else self._queue.popleft()
                    self._processing.add(key)
                    self._dirty.discard(key)
                    return key
                wait = None
                if self._waiting:
                    wait = max(0.0, self._waiting[0][0] - self._clock())
                if deadline is not None:
                    left = deadline - self._clock()
                    if left <= 0:
                        return None
                    wait = left if wait is None else min(wait, left)
                self._cond.wait(wait)

    def _promote_due_locked(self) -> None:
        now = self._clock()
        while self._waiting and self._waiting[0][0] <= now:
            ready, _, key = heapq.heappop(self._waiting)
            if self._ready_at.get(key) != ready:
                continue  # superseded by an earlier deadline
            del self._ready_at[key]
            self._add_locked(key, urgent=True)

    def done(self, key: K) -> None:
        """Processing of ``key`` finished; if it was re-added meanwhile, queue it again."""
        with self._cond:
            self._processing.discard(key)
            if key in self._dirty:
                self._urgent.append(key)  # it was already in progress: finish it first
                self._cond.notify()

    # ---- lifecycle / introspection -------------------------------------------------------------------

    def shutdown(self) -> None:
        """Wake every waiter; further gets raise ShutDownError."""
        with self._cond:
            self._shutdown = True
            self._cond.notify_all()

    def depth(self) -> int:
        """Keys ready to process now."""
        with self._cond:
            return len(self._queue) + len(self._urgent)

    def waiting(self) -> int:
        """Keys scheduled for later."""
        with self._cond:
            return len(self._ready_at)

    def in_flight(self) -> int:
        """Keys being processed."""
        with self._cond:
            return len(self._processing)

    def idle(self) -> bool:
        """Nothing queued, scheduled or processing."""
        with self._cond:
            return not self._queue and not self._urgent and not self._processing and not self._ready_at
