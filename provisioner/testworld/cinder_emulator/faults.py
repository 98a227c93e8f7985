"""Fault injection for the Cinder emulator: what a test wants to go wrong, and when.

Why separate: tests talk to this object (``emulator.faults``) from the test thread while server threads
consume it; keeping it small and behind one lock makes that safe and easy to read. Operation names are the
adapter's operation names (``create_volume``, ``get_volume``, ``list_volumes``, ``delete_volume``,
``extend_volume``, ``reserve``, ``unreserve``, ``initialize_connection``, ``terminate_connection``,
``create_attachment``, ``complete_attachment``, ``delete_attachment``, ``get_attachment``,
``create_snapshot``, ``get_snapshot``, ``list_snapshots``, ``delete_snapshot``, ``create_backup``,
``get_backup``, ``list_backups``, ``delete_backup``, ``restore_backup``, ``list_services``, ``versions``,
``auth``),
or ``*`` for any operation. :meth:`Faults.fail_for` is a storm: every matching call fails until a deadline
(an outage), where :meth:`Faults.fail_next` fails a counted number of calls.
"""

from __future__ import annotations

import fnmatch
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

CreateOutcome = Literal["ok", "error", "stuck"]


@dataclass(frozen=True, slots=True, kw_only=True)
class InjectedFailure:
    """One failed response to send instead of doing the operation."""

    status: int
    retry_after: float | None = None
    message: str = "injected failure"


@dataclass(slots=True)
class _Pending:
    failure: InjectedFailure
    remaining: int


@dataclass(slots=True)
class _CreateRule:
    outcome: CreateOutcome
    remaining: int | None  # None = every matching create
    pattern: str | None


class Faults:
    """Thread-safe fault plan. All methods may be called while the emulator serves requests."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._lock = threading.Lock()
        self._clock = clock
        self._storms: dict[str, tuple[float, InjectedFailure]] = {}  # operation → (until, failure)
        self._failures: dict[str, list[_Pending]] = {}
        self._create_rules: list[_CreateRule] = []
        self._backup_rules: list[_CreateRule] = []  # how backups end (pattern on the backup name)
        self._restore_rules: list[_CreateRule] = []  # how restores end (pattern on the backup name)
        self._latency: dict[str, float] = {}

    def fail_next(
        self,
        operation: str,
        *,
        count: int = 1,
        status: int = 500,
        retry_after: float | None = None,
        message: str | None = None,
    ) -> None:
        """The next ``count`` calls of ``operation`` answer ``status`` (429/413 may carry Retry-After)."""
        failure = InjectedFailure(
            status=status, retry_after=retry_after, message=message or f"injected {status} for {operation}"
        )
        with self._lock:
            self._failures.setdefault(operation, []).append(_Pending(failure, count))

    def fail_for(
        self,
        operation: str,
        *,
        seconds: float,
        status: int = 503,
        retry_after: float | None = None,
        message: str | None = None,
    ) -> None:
        """Every call of ``operation`` (or ``*``) answers ``status`` for the next ``seconds`` (an outage)."""
        failure = InjectedFailure(
            status=status, retry_after=retry_after, message=message or f"injected {status} for {operation}"
        )
        with self._lock:
            self._storms[operation] = (self._clock() + seconds, failure)

    def storming(self) -> bool:
        """True while a :meth:`fail_for` outage is in force."""
        with self._lock:
            now = self._clock()
            return any(until > now for until, _ in self._storms.values())

    def error_on_create(self, *, count: int | None = 1, name_pattern: str | None = None) -> None:
        """Matching creates go to ``error`` instead of ``available`` (count None = all matching)."""
        with self._lock:
            self._create_rules.append(_CreateRule("error", count, name_pattern))

    def stuck_creating(self, *, count: int | None = 1, name_pattern: str | None = None) -> None:
        """Matching creates stay ``creating`` forever."""
        with self._lock:
            self._create_rules.append(_CreateRule("stuck", count, name_pattern))

    def error_on_backup(self, *, count: int | None = 1, name_pattern: str | None = None) -> None:
        """Matching backups go to ``error`` (with a ``fail_reason``) instead of ``available``."""
        with self._lock:
            self._backup_rules.append(_CreateRule("error", count, name_pattern))

    def error_on_restore(self, *, count: int | None = 1, name_pattern: str | None = None) -> None:
        """Restores of matching backups leave the volume ``error_restoring`` (the backup goes back to
        ``available``, as in real Cinder)."""
        with self._lock:
            self._restore_rules.append(_CreateRule("error", count, name_pattern))

    def set_latency(self, operation: str, seconds: float) -> None:
        """Every call of ``operation`` (or ``*``) waits ``seconds`` before it is served."""
        with self._lock:
            self._latency[operation] = seconds

    def clear(self) -> None:
        """Forget every injected fault."""
        with self._lock:
            self._storms.clear()
            self._failures.clear()
            self._create_rules.clear()
            self._backup_rules.clear()
            self._restore_rules.clear()
            self._latency.clear()

    # --- consumed by the server --------------------------------------------------------------------

    def take_failure(self, operation: str) -> InjectedFailure | None:
        """The failure to answer this call with: an outage in force, else a pending one (consumes it)."""
        with self._lock:
            now = self._clock()
            for key in (operation, "*"):
                storm = self._storms.get(key)
                if storm is not None and storm[0] > now:
                    return storm[1]
            for key in (operation, "*"):
                queue = self._failures.get(key)
                if queue:
                    head = queue[0]
                    head.remaining -= 1
                    if head.remaining <= 0:
                        queue.pop(0)
                    return head.failure
        return None

    def latency(self, operation: str) -> float:
        """Seconds to wait before serving ``operation``."""
        with self._lock:
            return self._latency.get(operation, self._latency.get("*", 0.0))

    def create_outcome(self, name: str) -> CreateOutcome:
        """How a create of a volume called ``name`` ends (consumes a counted rule)."""
        return self._outcome(self._create_rules, name)

    def backup_outcome(self, name: str) -> CreateOutcome:
        """How a backup called ``name`` ends (consumes a counted rule)."""
        return self._outcome(self._backup_rules, name)

    def restore_outcome(self, backup_name: str) -> CreateOutcome:
        """How a restore of the backup called ``backup_name`` ends (consumes a counted rule)."""
        return self._outcome(self._restore_rules, backup_name)

    def _outcome(self, rules: list[_CreateRule], name: str) -> CreateOutcome:
        with self._lock:
            for rule in rules:
                if rule.pattern is not None and not fnmatch.fnmatchcase(name, rule.pattern):
                    continue
                if rule.remaining is not None:
                    if rule.remaining <= 0:
                        continue
                    rule.remaining -= 1
                return rule.outcome
        return "ok"
