"""One shared Cinder ``list`` per poll round for every claim whose new volume is still ``creating``.

Why: a claim waits for its volume to leave ``creating`` before the export. Asking with one ``get`` per
claim per poll makes a burst of N claims cost N reads (and real Cinder's API, one CPU-bound process, is
what a burst waits on). Here the claims of one cloud share the reads: the first claim whose poll is due
lists *every* volume of our cluster created since the oldest one being waited on (``created_at`` ≥ …,
microversion 3.60); claims due while that list is in flight wait for it, and claims due shortly after
take its reading. So a burst costs one list per round instead of a ``get`` per claim.

What keeps it safe:

* **Readings are never older than the caller allows.** ``read`` takes ``not_before`` (the claim's own
  clock): only a list *started* at or after it counts. The flows pass "the poll's due time minus one
  round", so a reading always comes from after the create was answered (and after the claim's last look).
* **Only young waits are served.** A volume is on the board from the create's answer until a reading
  shows it out of ``creating`` or until it has waited ``young_seconds``; after that its claim goes back to
  its own ``get`` (at the slow poll cadence), so one stuck volume cannot make every list long.
* **Anything unusual falls back to the claim's own ``get``.** ``read`` answers None when the volume is not
  on the board, when the list did not contain it (deleted, or a Cinder that ignores the filter), when
  another claim's list failed, or when that list took too long. Its own list's errors propagate like a
  ``get``'s would (the flow backs off).
* **Nothing is decided here.** The reading is a ``Volume`` exactly as a ``get`` returns it; the flow's
  decision (wait, export, replace an ``error`` volume) is the same for both.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from provisioner.domain.model import Volume, VolumeId

#: Lists the cluster's volumes created at or after a Unix time (Cinder's clock) — ``list_volumes``.
Lister = Callable[[float], Iterable[Volume]]

#: Slack below the oldest waited-on ``created_at`` (besides the adapter's floor to the whole second, which
#: covers a Cinder that stores whole seconds, MySQL ``DATETIME``): a volume a list misses is only read by
#: its own ``get``, so the slack trades list size for calls, never correctness.
CREATED_AT_SLACK_SECONDS = 0.0


@dataclass(slots=True)
class _Waiting:
    created_at: float  # Cinder's created_at (Unix seconds): what the list filters on
    since: float  # our clock when it went on the board (for young_seconds)


@dataclass(slots=True)
class _Round:
    started: float
    done: threading.Event = field(default_factory=threading.Event)
    readings: dict[VolumeId, Volume] | None = None  # None: the list failed


def list_window(created: Iterable[float], slack: float = CREATED_AT_SLACK_SECONDS) -> float | None:
    """The ``created_at`` lower bound that covers every waited-on volume (None: nothing to list)."""
    oldest = min(created, default=None)
    return None if oldest is None else oldest - slack


def covers(round_started: float | None, not_before: float) -> bool:
    """True if a list started at ``round_started`` is recent enough for a caller allowing ``not_before``."""
    return round_started is not None and round_started >= not_before


class StatusBoard:
    """Per-cloud shared status reads of volumes still ``creating`` (thread-safe; time is passed in)."""

    def __init__(self, *, young_seconds: float = 10.0, follower_timeout: float = 60.0) -> None:
        self._young = young_seconds
        self._timeout = follower_timeout
        self._lock = threading.Lock()
        self._waiting: dict[str, dict[VolumeId, _Waiting]] = {}
        self._rounds: dict[str, _Round] = {}
        #: lists sent and reads served without a call, for tests and the benchmark's attribution
        self.lists = 0
        self.served = 0

    def wait_on(self, cloud: str, volume: Volume, *, now: float) -> None:
        """``volume`` (as Cinder just answered it) is being waited on: later polls may share a list."""
        if volume.status != "creating" or volume.created_at is None:
            self.forget(cloud, volume.id)
            return
        with self._lock:
            board = self._waiting.setdefault(cloud, {})
            if volume.id not in board:
                board[volume.id] = _Waiting(created_at=volume.created_at, since=now)

    def forget(self, cloud: str, volume_id: VolumeId) -> None:
        with self._lock:
            self._waiting.get(cloud, {}).pop(volume_id, None)

    def waiting(self, cloud: str) -> int:
        with self._lock:
            return len(self._waiting.get(cloud, {}))

    def read(
        self, cloud: str, volume_id: VolumeId, *, not_before: float, now: float, lister: Lister
    ) -> Volume | None:
        """``volume_id`` as a list started at or after ``not_before`` saw it; None: do your own ``get``."""
        with self._lock:
            board = self._waiting.get(cloud)
            if not board or volume_id not in board:
                return None
            for vid in [v for v, w in board.items() if now - w.since > self._young]:
                del board[vid]  # too long in creating: its claim polls on its own, slowly
            if volume_id not in board:
                return None
            current = self._rounds.get(cloud)
            leads = not covers(current.started if current else None, not_before)
            if leads:
                since = list_window(w.created_at for w in board.values())
                wanted = set(board)  # a volume put on the board later cannot follow this round
                current = self._rounds[cloud] = _Round(started=now)
                self.lists += 1
        assert current is not None
        if leads:
            assert since is not None  # the board held volume_id
            try:
                readings = {v.id: v for v in lister(since) if v.id in wanted}
            except BaseException:
                current.done.set()  # followers fall back to their own get
                raise
            current.readings = readings
            current.done.set()
        elif not current.done.wait(self._timeout):
            return None
        seen = (current.readings or {}).get(volume_id)
        if seen is None:
            return None
        with self._lock:
            self.served += 1
            if seen.status != "creating":
                self._waiting.get(cloud, {}).pop(volume_id, None)
        return seen
