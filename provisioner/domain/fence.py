"""The send guard: fencing re-checked after a Cinder call waited for its in-flight slot.

``FencedCinder`` (flows) checks the lease before each mutation, but the adapter may then wait for one of
its ``cinder_max_in_flight`` slots — under a burst, for seconds. A replica that lost the lease meanwhile
must not send. So the fenced port installs its check here for the duration of the call, and the adapter
calls :func:`check_before_send` once it holds the slot, right before the request goes out. A
``ContextVar`` keeps it per thread and free of any reference between the layers.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from provisioner.domain.errors import NotLeader

_guard: ContextVar[tuple[str, Callable[[], bool]] | None] = ContextVar("cinder_send_guard", default=None)


@contextmanager
def guarded(operation: str, is_leader: Callable[[], bool]) -> Iterator[None]:
    """Check ``is_leader`` now, and again before anything is sent inside this block."""
    if not is_leader():
        raise NotLeader(operation)
    token = _guard.set((operation, is_leader))
    try:
        yield
    finally:
        _guard.reset(token)


def check_before_send() -> None:
    """Raise NotLeader if a fenced call is under way and its replica no longer leads."""
    current = _guard.get()
    if current is not None and not current[1]():
        raise NotLeader(current[0])
