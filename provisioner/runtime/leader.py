"""Leader election on a coordination.k8s.io/v1 Lease, with fencing.

Safety comes from the API server: every lease write is a resourceVersion-checked PUT, so two replicas can
never both succeed in taking it. Fencing comes from time: a leader stops trusting its leadership as soon
as its last successful renewal is older than ``renew_deadline`` — strictly less than ``lease_duration``,
after which a standby may take over — so ``is_leader()`` turns False before anyone else can become leader.
Standbys judge expiry by *their own* clock from when they last saw the lease change (as client-go does),
never by comparing wall clocks across machines. Renewals should use their own API client so a busy
shared client cannot starve them.
"""

from __future__ import annotations

import copy
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import structlog

from provisioner.domain.errors import ConfigError, KubeConflict, KubeError, KubeNotFound
from provisioner.ports import LeaseClient

log = structlog.get_logger(__name__)


def _micro_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def validate_timing(lease_duration: float, renew_deadline: float, retry_period: float) -> None:
    """duration > renew deadline > 1.2 x retry period (client-go's rule), else ConfigError."""
    if not lease_duration > renew_deadline:
        raise ConfigError("leader_election.lease_duration", "must be greater than renew_deadline")
    if not renew_deadline > 1.2 * retry_period:
        raise ConfigError("leader_election.renew_deadline", "must be greater than 1.2 x retry_period")
    if retry_period <= 0:
        raise ConfigError("leader_election.retry_period", "must be positive")


class LeaderElector:
    """Acquire, renew and release one Lease; ``is_leader()`` is the fencing check."""

    def __init__(
        self,
        client: LeaseClient,
        *,
        namespace: str,
        name: str,
        identity: str,
        lease_duration: float = 15.0,
        renew_deadline: float = 10.0,
        retry_period: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        validate_timing(lease_duration, renew_deadline, retry_period)
        self._client = client
        self.namespace, self.name, self.identity = namespace, name, identity
        self.lease_duration, self.renew_deadline, self.retry_period = (
            lease_duration,
            renew_deadline,
            retry_period,
        )
        self._clock = clock
        self._lock = threading.Lock()
        self._leading = False
        self._last_renew = float("-inf")
        self._observed: tuple[str, str] | None = None  # (holder, renewTime) last seen
        self._observed_at = float("-inf")
        self._last_poll_at: float | None = None
        #: the Lease as our last successful write returned it (the leader's renewals start from it)
        self._held: dict[str, Any] | None = None
        self._poke = threading.Event()
        self._stop = threading.Event()
        self.lost = threading.Event()
        self.acquired = threading.Event()
        self.transitions_seen = 0

    # ---- state ---------------------------------------------------------------------------------------

    def is_leader(self) -> bool:
        """True only while we hold the lease and renewed it within ``renew_deadline`` (fencing)."""
        with self._lock:
            return self._leading and (self._clock() - self._last_renew) < self.renew_deadline

    def healthy(self) -> bool:
        """Liveness: a leader whose renewals are stuck past the deadline is unhealthy."""
        with self._lock:
            if not self._leading:
                return True
            return (self._clock() - self._last_renew) < self.renew_deadline + self.retry_period

    # ---- one attempt ---------------------------------------------------------------------------------

    def try_acquire_or_renew(self) -> bool:
        """One round: create/renew/take over the lease. True if we hold it afterwards.

        A leader renews optimistically from the Lease its last write returned: one ``update`` whose
        resourceVersion the API server tests, no ``get`` first (client-go's fast path). Any failure of that
        write (someone else wrote the Lease, or the server did not answer) drops to the full round below,
        which reads the Lease and decides from what it holds.
        """
        now_wall = _micro_now()
        if self._held is not None and self.is_leader():
            lease = copy.deepcopy(self._held)
            lease.setdefault("spec", {})["renewTime"] = now_wall
            try:
                self._held = self._client.replace("leases", lease, namespace=self.namespace)
            except KubeError as e:
                log.info("lease_fast_renew_failed", error=str(e))
                self._held = None
            else:
                # What a full round would have seen: our own record, now (a later change by anyone else
                # happened after this look, which is how the full round dates it).
                self._observed = (self.identity, now_wall)
                self._last_poll_at = self._clock()
                self._mark_renewed()
                return True
        self._held = None
        try:
            lease = self._client.get("leases", self.name, namespace=self.namespace)
        except KubeNotFound:
            body = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": self.name, "namespace": self.namespace},
                "spec": {
                    "holderIdentity": self.identity,
                    "leaseDurationSeconds": max(1, int(self.lease_duration)),
                    "acquireTime": now_wall,
                    "renewTime": now_wall,
                    "leaseTransitions": 0,
                },
            }
            try:
                self._held = self._client.create("leases", body, namespace=self.namespace)
            except KubeError:
                return False
            self._mark_renewed()
            return True
        except KubeError as e:
            log.warning("lease_get_failed", error=str(e))
            return False
        spec = dict(lease.get("spec") or {})
        holder = spec.get("holderIdentity") or ""
        record = (holder, str(spec.get("renewTime") or ""))
        now = self._clock()
        if record != self._observed:
            # The change happened after our previous look. Dating it at that previous look (not now) is
            # still safe when duration > renew_deadline + retry_period: the old leader fences itself
            # renew_deadline after its last renewal, before we can possibly take over. It saves up to one
            # retry period on failover.
            early_ok = self.lease_duration > self.renew_deadline + self.retry_period
            seen_at = self._last_poll_at if (early_ok and self._last_poll_at is not None) else now
            self._observed, self._observed_at = record, seen_at
        self._last_poll_at = now
        duration = float(spec.get("leaseDurationSeconds") or self.lease_duration)
        if holder and holder != self.identity and now < self._observed_at + duration:
            with self._lock:
                self._leading = False
            return False  # someone else holds a live lease
        if holder != self.identity:
            spec["leaseTransitions"] = int(spec.get("leaseTransitions") or 0) + 1
            spec["acquireTime"] = now_wall
        spec["holderIdentity"] = self.identity
        spec["renewTime"] = now_wall
        spec["leaseDurationSeconds"] = max(1, int(self.lease_duration))
        lease["spec"] = spec
        try:
            self._held = self._client.replace("leases", lease, namespace=self.namespace)
        except (KubeConflict, KubeError) as e:
            log.info("lease_update_failed", error=str(e))
            return False
        self._mark_renewed()
        return True

    def _mark_renewed(self) -> None:
        with self._lock:
            first = not self._leading
            self._leading = True
            self._last_renew = self._clock()
        if first:
            log.info("lease_acquired", lease=f"{self.namespace}/{self.name}", identity=self.identity)
            self.acquired.set()

    # ---- loops ---------------------------------------------------------------------------------------

    def poke(self) -> None:
        """The lease changed (seen by a watch): a standby re-checks now instead of at its next tick."""
        self._poke.set()

    def _standby_wait(self) -> float:
        """Sleep until the next retry tick or the moment the observed lease expires, whichever is first."""
        if self._observed is None or not self._observed[0]:
            return self.retry_period
        expires_in = self._observed_at + self.lease_duration - self._clock()
        return max(0.05, min(self.retry_period, expires_in + 0.01))

    def run(self) -> None:
        """Acquire (retrying every retry period, or when poked), then renew until stopped or lost."""
        while not self._stop.is_set():
            if self.try_acquire_or_renew():
                break
            self._poke.wait(self._standby_wait())
            self._poke.clear()
        while not self._stop.is_set():
            self._stop.wait(self.retry_period)
            if self._stop.is_set():
                return
            ok = self.try_acquire_or_renew()
            if not ok and not self.is_leader():
                with self._lock:
                    self._leading = False
                log.error("lease_lost", lease=f"{self.namespace}/{self.name}", identity=self.identity)
                self.lost.set()
                return

    def start(self) -> threading.Thread:
        """Run the election loop on a daemon thread."""
        t = threading.Thread(target=self.run, name="leader-election", daemon=True)
        t.start()
        return t

    def stop(self) -> None:
        """Stop renewing (does not release)."""
        self._stop.set()
        self._poke.set()

    def release(self) -> None:
        """Give the lease up at once so a standby takes over without waiting for expiry."""
        self._stop.set()
        self._poke.set()
        with self._lock:
            was_leading = self._leading
            self._leading = False
        if not was_leading:
            return
        try:
            lease = self._client.get("leases", self.name, namespace=self.namespace)
            spec = dict(lease.get("spec") or {})
            if spec.get("holderIdentity") != self.identity:
                return
            spec["holderIdentity"] = ""
            spec["leaseDurationSeconds"] = 1
            spec["renewTime"] = _micro_now()
            lease["spec"] = spec
            self._client.replace("leases", lease, namespace=self.namespace)
            log.info("lease_released", lease=f"{self.namespace}/{self.name}")
        except KubeError as e:
            log.warning("lease_release_failed", error=str(e))
