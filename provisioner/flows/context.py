"""Everything a reconcile step needs, passed in explicitly (no module-level clients or singletons)."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from provisioner.domain.errors import ConfigError, InvalidInput
from provisioner.domain.model import Connector, VolumeId
from provisioner.flows.fencing import FencedCinder
from provisioner.flows.status_board import StatusBoard
from provisioner.ports import Cache, CinderPort, KubeWriter
from provisioner.telemetry.events import EventRecorder
from provisioner.telemetry.metrics import Metrics

Obj = dict[str, Any]


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    """Controller behaviour knobs (from ProvisionerConfig)."""

    provisioner_name: str
    cluster_id: str
    secret_namespace: str
    connector: Connector
    default_cloud: str
    create_deadline_seconds: float = 600.0
    delete_deadline_seconds: float = 600.0
    max_error_retries: int = 3
    poll_initial_seconds: float = 0.25
    poll_max_seconds: float = 5.0
    final_retry_seconds: float = 300.0
    #: How long another replica's Cinder create may still land after it was sent (its HTTP timeout + margin)
    create_in_flight_seconds: float = 35.0
    identity: str = ""


@dataclass(slots=True)
class Hint:
    """In-memory progress for one claim or PV (lost on restart by design: state lives in the APIs)."""

    volume_id: VolumeId | None = None
    polls: int = 0
    error_volumes: int = 0
    started: float = field(default_factory=time.monotonic)
    deadline_warned: bool = False
    #: monotonic time of the next due Cinder poll: events before it (our own patches, resyncs) do not poll
    next_poll_at: float = 0.0
    #: the claim must be looked up by name before any create (intent patches kept finding the cache stale)
    look_up: bool = False
    #: the resourceVersion of the copy whose version-tested intent patch was refused (the cache was
    #: behind), and how many were: a newer copy without marks may take the fast path again
    stale_version: str | None = None
    stale_refusals: int = 0
    #: the "creating Cinder volume" Event was recorded (only for a create still pending at its first poll)
    announced: bool = False
    #: the create the claim's mark announces was refused for good (no volume): the failure record may
    #: drop the intent with it (see ``provision_execute._record_failure``)
    refused: Refused | None = None


@dataclass(frozen=True, slots=True)
class Refused:
    """The create-attempt mark whose attempt created nothing, and the claim's finalizers as it wrote them."""

    mark: str
    finalizers: tuple[str, ...]


class Hints:
    """uid → Hint, thread-safe. Entries are dropped when a flow completes."""

    def __init__(self, *, remember_released: int = 4096, clock: Callable[[], float] = time.monotonic) -> None:
        """``clock``: the context's monotonic clock (a new hint's ``started``)."""
        self._clock = clock
        self._d: dict[str, Hint] = {}
        self._lock = threading.Lock()
        # uids whose intent finalizer we removed recently: a late event still showing it needs no patch
        self._released: OrderedDict[str, None] = OrderedDict()
        self._remember = remember_released

    def get(self, uid: str) -> Hint:
        with self._lock:
            hint = self._d.get(uid)
            if hint is None:
                hint = self._d[uid] = Hint(started=self._clock())
            return hint

    def drop(self, uid: str) -> None:
        with self._lock:
            self._d.pop(uid, None)

    def __len__(self) -> int:
        with self._lock:
            return len(self._d)

    def mark_intent_released(self, uid: str) -> None:
        """Remember that the intent finalizer of ``uid`` is gone (bounded memory)."""
        with self._lock:
            self._released[uid] = None
            self._released.move_to_end(uid)
            while len(self._released) > self._remember:
                self._released.popitem(last=False)

    def intent_persisted(self, uid: str) -> None:
        """The intent finalizer is on ``uid`` again: forget that it was released."""
        with self._lock:
            self._released.pop(uid, None)

    def intent_released(self, uid: str) -> bool:
        """True if we removed ``uid``'s intent finalizer ourselves (the cache may still show it)."""
        with self._lock:
            return uid in self._released


@dataclass(frozen=True, slots=True, kw_only=True)
class Context:
    """Dependencies of the reconcile flows."""

    settings: Settings
    kube: KubeWriter
    clouds: Mapping[str, CinderPort]
    pvcs: Cache
    pvs: Cache
    classes: Cache
    events: EventRecorder
    metrics: Metrics
    hints: Hints
    #: True while this replica is sure it holds the lease (fencing); always True without election.
    is_leader: Callable[[], bool] = lambda: True
    clock: Callable[[], float] = time.monotonic
    wall: Callable[[], float] = time.time
    #: Crash points for the chaos harness: called with a point name; raises SimulatedCrash when armed.
    checkpoint: Callable[[str], None] = lambda point: None
    #: cloud name → monotonic time before which no call may go to it (Cinder said 429 + Retry-After).
    gates: dict[str, float] = field(default_factory=dict)
    #: shared status lists for volumes still creating (one list per poll round instead of a get per claim)
    board: StatusBoard = field(default_factory=StatusBoard)

    def hold_cloud(self, cloud: str | None, seconds: float) -> None:
        """Honour Retry-After for every claim on this cloud, not just the one that got the 429."""
        name = cloud or self.settings.default_cloud
        self.gates[name] = max(self.gates.get(name, 0.0), self.clock() + seconds)

    def cloud_wait(self, cloud: str | None) -> float:
        """Seconds until the cloud may be called again (0 when open)."""
        return max(0.0, self.gates.get(cloud or self.settings.default_cloud, 0.0) - self.clock())

    def cinder(self, cloud: str | None) -> CinderPort:
        """The Cinder port for a named cloud (the class's ``cloud`` parameter) or the default.

        Fenced: every mutation checks ``is_leader()`` right before it is sent and raises NotLeader instead.
        """
        name = cloud or self.settings.default_cloud
        try:
            return FencedCinder(self.clouds[name], self.is_leader)
        except KeyError:
            if cloud is None:
                raise ConfigError("default_cloud", f"no cloud named {name!r} is configured") from None
            raise InvalidInput(
                "parameters.cloud", f"no cloud named {name!r}; configured: {', '.join(sorted(self.clouds))}"
            ) from None

    def poll_delay(self, hint: Hint) -> float:
        """Polling interval for a Cinder status wait: grows x1.5 from the initial value to the cap."""
        delay = min(self.settings.poll_max_seconds, self.settings.poll_initial_seconds * (1.5**hint.polls))
        hint.polls += 1
        hint.next_poll_at = self.clock() + delay
        return delay

    def poll_not_due(self, hint: Hint) -> float:
        """Seconds until this claim's next Cinder poll is due (0 = poll now)."""
        if hint.volume_id is None:
            return 0.0
        return max(0.0, hint.next_poll_at - self.clock())
