"""Change records and per-client watch queues.

Every committed write becomes one :class:`Change`; the store hands it to each open watch of that resource
under its lock (so a watch sees changes in resourceVersion order, with no gaps), and each watch has its own
queue drained by its HTTP thread — one slow client never delays the others or the writer.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

Obj = dict[str, Any]

ADDED = "ADDED"
MODIFIED = "MODIFIED"
DELETED = "DELETED"
BOOKMARK = "BOOKMARK"

#: The annotation that marks the bookmark ending a streaming list's initial events (KEP-3157).
INITIAL_EVENTS_END = "k8s.io/initial-events-end"

#: Control items a watch queue can carry besides events.
END = "__END__"  # finish the stream cleanly (server shutdown, timeout)
EXPIRE = "__EXPIRE__"  # send ERROR 410 then finish (history compacted under the client)
DROP = "__DROP__"  # cut the connection without finishing the chunked body


def bookmark_object(kind: str, api_version: str, rv: int, *, end: bool = False) -> Obj:
    """A BOOKMARK's object: only kind, apiVersion and the RV (plus the initial-events-end annotation)."""
    meta: Obj = {"resourceVersion": str(rv)}
    if end:
        meta["annotations"] = {INITIAL_EVENTS_END: "true"}
    return {"kind": kind, "apiVersion": api_version, "metadata": meta}


@dataclass(frozen=True, slots=True, kw_only=True)
class Change:
    """One committed write. For DELETED, ``new`` is the last state carrying the deletion's RV."""

    rv: int
    resource: str  # ResourceType.key
    type: str
    old: Obj | None
    new: Obj


@dataclass(eq=False, kw_only=True)
class Watcher:
    """One open watch: its filter and its queue of (type, object) items."""

    resource: str
    namespace: str | None
    predicate: Callable[[Obj], bool] | None
    allow_bookmarks: bool = False
    queue: queue.SimpleQueue[tuple[str, Obj | None]] = field(default_factory=queue.SimpleQueue)
    closed: threading.Event = field(default_factory=threading.Event)

    def _in_namespace(self, obj: Obj) -> bool:
        return self.namespace is None or obj.get("metadata", {}).get("namespace") == self.namespace

    def initial(self, obj: Obj) -> None:
        """Queue the synthetic ADDED a watch from RV 0 starts with."""
        if self._in_namespace(obj) and (self.predicate is None or self.predicate(obj)):
            self.queue.put((ADDED, obj))

    def offer(self, change: Change) -> None:
        """Queue what this watch sees of ``change`` (selector transitions become ADDED/DELETED)."""
        if not self._in_namespace(change.new):
            return
        pred = self.predicate
        if pred is None:
            self.queue.put((change.type, change.new))
            return
        if change.type == DELETED:
            if pred(change.new):
                self.queue.put((DELETED, change.new))
            return
        new_match = pred(change.new)
        old_match = change.old is not None and change.type == MODIFIED and pred(change.old)
        if new_match and old_match:
            self.queue.put((MODIFIED, change.new))
        elif new_match:
            self.queue.put((ADDED, change.new))
        elif old_match:
            self.queue.put((DELETED, change.new))

    def control(self, item: str) -> None:
        """Queue a control item (END, EXPIRE, DROP)."""
        self.queue.put((item, None))
