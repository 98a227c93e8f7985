"""Fault injection and the request log.

The controller must survive what real clusters do to clients: slow answers, 5xx, 429 with Retry-After,
watch streams that end or break, and history compacted under a watch (410). Tests arm these here and read
back what the controller actually sent from the request log.
"""

from __future__ import annotations

import re
import threading
import time
from collections import deque
from dataclasses import dataclass, field

from provisioner.testworld.kube_sim.status import ApiError, injected
from provisioner.testworld.kube_sim.store import Store
from provisioner.testworld.kube_sim.watchers import DROP, END, EXPIRE


@dataclass(frozen=True, slots=True, kw_only=True)
class RequestRecord:
    """One served request as the log keeps it."""

    method: str
    path: str
    query: str
    status: int
    watch: bool = False
    at: float = field(default_factory=time.monotonic, compare=False)  # when logged (for rates)


@dataclass(kw_only=True)
class _Rule:
    method: str | None
    path: re.Pattern[str] | None
    watch: bool | None
    remaining: int | None  # None: forever
    latency: float = 0.0
    status: int | None = None
    retry_after: int | None = None

    def matches(self, method: str, path: str, is_watch: bool) -> bool:
        return (
            (self.method is None or self.method == method)
            and (self.path is None or self.path.search(path) is not None)
            and (self.watch is None or self.watch == is_watch)
        )


class Faults:
    """Arm faults for matching requests; ``path`` is a regex searched in the URL path."""

    def __init__(self, store: Store, *, log_limit: int = 200_000) -> None:
        self._store = store
        self._lock = threading.Lock()
        self._rules: list[_Rule] = []
        self._log: deque[RequestRecord] = deque(maxlen=log_limit)

    # --- arming ------------------------------------------------------------------------------------------

    def add_latency(
        self,
        seconds: float,
        *,
        method: str | None = None,
        path: str | None = None,
        watch: bool | None = None,
        count: int | None = None,
    ) -> None:
        """Delay matching requests by ``seconds`` (``count`` of them, or all until :meth:`clear`)."""
        self._add(_Rule(method=method, path=_compile(path), watch=watch, remaining=count, latency=seconds))

    def fail_next(
        self,
        count: int = 1,
        *,
        status: int = 500,
        retry_after: int | None = None,
        method: str | None = None,
        path: str | None = None,
        watch: bool | None = None,
    ) -> None:
        """Answer the next ``count`` matching requests with ``status`` (429 gets Retry-After, default 1)."""
        if status == 429 and retry_after is None:
            retry_after = 1
        self._add(
            _Rule(
                method=method,
                path=_compile(path),
                watch=watch,
                remaining=count,
                status=status,
                retry_after=retry_after,
            )
        )

    def clear(self) -> None:
        """Disarm every fault rule."""
        with self._lock:
            self._rules.clear()

    def _add(self, rule: _Rule) -> None:
        with self._lock:
            self._rules.append(rule)

    # --- watch faults ------------------------------------------------------------------------------------

    def drop_watches(self, *, abrupt: bool = False) -> int:
        """End every open watch now: cleanly (chunked body finished) or ``abrupt`` (connection cut)."""
        watchers = self._store.watchers()
        for w in watchers:
            w.control(DROP if abrupt else END)
        return len(watchers)

    def expire_watches(self) -> int:
        """Compact history and send every open watch ``ERROR 410`` (then the stream ends)."""
        self._store.compact()
        watchers = self._store.watchers()
        for w in watchers:
            w.control(EXPIRE)
        return len(watchers)

    def compact_history(self) -> int:
        """Forget history so watches / continue tokens from older RVs get 410; returns the current RV."""
        return self._store.compact()

    # --- used by the HTTP layer --------------------------------------------------------------------------

    def before_request(self, method: str, path: str, is_watch: bool) -> tuple[float, ApiError | None]:
        """(latency to add, error to answer with) for this request; consumes counted rules."""
        latency = 0.0
        error: ApiError | None = None
        with self._lock:
            for rule in list(self._rules):
                if not rule.matches(method, path, is_watch):
                    continue
                if rule.status is not None and error is not None:
                    continue
                if rule.remaining is not None:
                    rule.remaining -= 1
                    if rule.remaining <= 0:
                        self._rules.remove(rule)
                latency += rule.latency
                if rule.status is not None:
                    error = injected(rule.status, rule.retry_after)
        return latency, error

    def record(self, entry: RequestRecord) -> None:
        """Append to the request log."""
        self._log.append(entry)

    @property
    def requests(self) -> list[RequestRecord]:
        """A copy of the request log, oldest first."""
        return list(self._log)

    def clear_requests(self) -> None:
        """Empty the request log."""
        self._log.clear()


def _compile(path: str | None) -> re.Pattern[str] | None:
    return re.compile(path) if path is not None else None
