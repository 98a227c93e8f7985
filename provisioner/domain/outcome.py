"""What one reconcile step decided: the worker turns it into queue operations.

Modelled on controller-runtime: done; requeue after N seconds (polling Cinder without blocking a worker);
error → rate-limited retry; final → no fast retry until the claim or class changes (or a slow retry).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Kind = Literal["done", "requeue", "error", "final"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Outcome:
    """Result of one reconcile call."""

    kind: Kind
    delay: float = 0.0  # requeue: after this long; error: at least this long (Retry-After); final: slow retry
    reason: str = ""  # short machine reason for metrics ("quota", "invalid_parameters", …)
    message: str = ""


DONE = Outcome(kind="done")


class SimulatedCrash(BaseException):
    """Raised at an armed crash point (chaos tests): the step stops dead, like a killed process.

    A BaseException so that no ``except Exception`` in the flows can swallow it.
    """


def requeue(delay: float, reason: str = "poll") -> Outcome:
    """Come back after ``delay`` seconds; not a failure."""
    return Outcome(kind="requeue", delay=delay, reason=reason)


def error(reason: str, message: str = "", *, at_least: float = 0.0) -> Outcome:
    """Transient failure: retry with per-item backoff (and at least ``at_least`` seconds)."""
    return Outcome(kind="error", reason=reason, message=message, delay=at_least)


def final(reason: str, message: str = "", *, retry_after: float = 0.0) -> Outcome:
    """Retrying now cannot help; optionally retry slowly after ``retry_after`` seconds."""
    return Outcome(kind="final", reason=reason, message=message, delay=retry_after)
