"""One controller replica: informers (always, so standbys stay warm), leader election, workers, health.

Used by ``cinder-provisioner run``, the sandbox, the e2e tests and the chaos harness, so all of them run
the same wiring. Lifecycle: ``start()`` → lease acquired → caches synced (waited for, however long; workers
never run on unsynced caches) → workers run. ``/readyz`` follows the caches; ``/healthz`` the lease
renewals, the watch loops and (on the leader) the worker pool. ``terminate()`` is
SIGTERM: drain in-flight work, then release the lease so a standby takes over at once. ``crash()`` stops
everything abruptly without releasing (what a killed pod looks like to the others).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import structlog

from provisioner.adapters.health import HealthServer
from provisioner.adapters.kube import KubeAdapter
from provisioner.config.settings import ProvisionerConfig
from provisioner.ports import CinderPort, Clock
from provisioner.runtime.audit_loop import AuditLoop
from provisioner.runtime.controller import Controller
from provisioner.runtime.informer import Informer
from provisioner.runtime.leader import LeaderElector
from provisioner.runtime.snapshot_controller import SnapshotController
from provisioner.runtime.wiring import build_controller
from provisioner.telemetry.metrics import Metrics, make_metrics

log = structlog.get_logger(__name__)


#: Pooled Kubernetes connections besides one per worker: 6 watch streams (each holds one for its whole
#: life), 2 snapshot workers, the event recorder, 2 audit threads, and room to spare. A smaller pool (it
#: was a fixed 32 for 64 tuned workers) opens a connection for every request beyond it and closes it
#: again ("Connection pool is full, discarding connection").
KUBE_POOL_BESIDES_WORKERS = 16


class Replica:
    """A fully wired controller replica."""

    def __init__(
        self,
        config: ProvisionerConfig,
        *,
        client_configuration: Any,
        lease_client_configuration: Any | None = None,
        identity: str | None = None,
        clouds: Mapping[str, CinderPort] | None = None,
        metrics: Metrics | None = None,
        health_address: str | None = None,
        resync_seconds: float = 600.0,
        watch_timeout_seconds: int = 300,
        checkpoint: Callable[[str], None] | None = None,
        stuck_after_seconds: float | None = None,
        sync_timeout_seconds: float = 60.0,
        sync_deadline_seconds: float | None = None,
        clock: Clock | None = None,
        **settings_overrides: float,
    ) -> None:
        """``stuck_after_seconds``: a worker inside one step for longer fails ``/healthz`` (default: the
        configuration's ``stuck_worker_seconds``);
        ``sync_timeout_seconds``: how often a leader still waiting for its caches logs it;
        ``sync_deadline_seconds``: a leader whose caches have not synced by then gives the lease up and
        stops with exit code 1 (a standby with synced caches takes over; the kubelet restarts this pod);
        default: the configuration's ``cache_sync_deadline_seconds``."""
        self.config = config
        self._sync_timeout = sync_timeout_seconds
        self._sync_deadline = (
            config.cache_sync_deadline_seconds if sync_deadline_seconds is None else sync_deadline_seconds
        )
        self.identity = identity or f"{os.environ.get('POD_NAME', os.uname().nodename)}_{os.getpid()}"
        self.metrics = metrics or make_metrics()
        self.kube = KubeAdapter(
            client_configuration,
            qps=config.kube_qps,
            burst=config.kube_burst,
            pool_size=config.workers + KUBE_POOL_BESIDES_WORKERS,
        )
        le = config.leader_election
        self.elector: LeaderElector | None = None
        self._lease_kube: KubeAdapter | None = None
        if le.enabled:
            # Renewals get their own client (and rate limiter) so a busy main client cannot starve them.
            self._lease_kube = KubeAdapter(
                lease_client_configuration or client_configuration, qps=20, burst=20
            )
            self.elector = LeaderElector(
                self._lease_kube,
                namespace=config.namespace,
                name=le.lease_name,
                identity=self.identity,
                lease_duration=le.lease_duration,
                renew_deadline=le.renew_deadline,
                retry_period=le.retry_period,
            )
        self._dead = threading.Event()
        elector = self.elector

        def is_leader() -> bool:
            return not self._dead.is_set() and (elector.is_leader() if elector else True)

        self.controller: Controller = build_controller(
            config,
            self.kube,
            clouds=clouds,
            metrics=self.metrics,
            is_leader=is_leader,
            identity=self.identity,
            resync_seconds=resync_seconds,
            watch_timeout_seconds=watch_timeout_seconds,
            checkpoint=checkpoint or (lambda point: None),
            stuck_after_seconds=(
                config.stuck_worker_seconds if stuck_after_seconds is None else stuck_after_seconds
            ),
            clock=clock,
            **settings_overrides,
        )
        self.controller.on_crash = self.crash
        #: the Cinder adapters this replica made (and so closes); ones passed in belong to the caller
        self._own_clouds = list(self.controller.ctx.clouds.values()) if clouds is None else []
        # The periodic audit (leader only, read-only, off with audit_interval_seconds: 0).
        self.audit = AuditLoop(
            clouds=self.controller.ctx.clouds,
            kube=self.kube,
            events=self.controller.ctx.events,
            registry=self.metrics.registry,
            cluster_id=config.cluster_id,
            default_cloud=config.default_cloud,
            provisioner_name=config.provisioner_name,
            interval_seconds=config.audit_interval_seconds,
            stuck_after_seconds=config.audit_stuck_after_seconds,
            is_leader=is_leader,
        )
        # VolumeSnapshotContents of our driver (the CSI snapshotter's part): same Context, own queue.
        self.snapshots = SnapshotController(
            source=self.kube,
            ctx=self.controller.ctx,
            resync_seconds=resync_seconds,
            watch_timeout_seconds=watch_timeout_seconds,
            clock=self.controller.ctx.clock,
            stuck_after_seconds=(
                config.stuck_worker_seconds if stuck_after_seconds is None else stuck_after_seconds
            ),
        )
        self.snapshots.on_crash = self.crash
        self.health: HealthServer | None = None
        if health_address:
            host, _, port = health_address.rpartition(":")
            self.health = HealthServer(
                host=host or "0.0.0.0",
                port=int(port),
                registry=self.metrics.registry,
                ready=lambda: self.controller.synced,
                liveness=self.liveness_problem,
            )
        self.leases: Informer | None = None
        if self.elector is not None and self._lease_kube is not None:
            # Standbys watch the Lease so a released lease is taken over at once, not at the next tick.
            self.leases = Informer("leases", self._lease_kube, resync_seconds=3600, watch_timeout_seconds=60)
            self.leases.add_handler(self._on_lease)
        self.leading = threading.Event()
        self.finished = threading.Event()
        self.exit_code = 0
        self._thread: threading.Thread | None = None

    def liveness_problem(self) -> str | None:
        """None while healthy, else why ``/healthz`` fails (one line)."""
        if self.elector is not None and not self.elector.healthy():
            return "leader election: lease renewals are stuck"
        return self.controller.liveness_problem() or self.snapshots.liveness_problem()

    def _on_lease(self, event: str, old: dict[str, Any] | None, new: dict[str, Any] | None) -> None:
        obj = new or old or {}
        meta = obj.get("metadata") or {}
        le = self.config.leader_election
        if self.elector is not None and (meta.get("namespace"), meta.get("name")) == (
            self.config.namespace,
            le.lease_name,
        ):
            self.elector.poke()

    def start(self) -> None:
        """Start health, informers and the election loop; workers start once we lead."""
        if self.health:
            self.health.start()
        self.controller.start_informers()
        self.snapshots.start_informers()
        if self.leases is not None:
            self.leases.start()
        self._thread = threading.Thread(target=self._run, name="replica", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        if self.elector is None:
            self._lead()
            return
        self.elector.start()
        while not self.finished.is_set():
            if self.elector.acquired.wait(0.2):
                self._lead()
                break
            if self.elector.lost.is_set():
                break
        while not self.finished.is_set():
            if self.elector.lost.wait(0.2):
                log.error("leadership_lost_stopping", identity=self.identity)
                self.exit_code = 1
                self._shutdown(release=False)
                return

    def _lead(self) -> None:
        if not self._await_sync():
            return
        self.controller.start_workers()
        self.audit.start()
        self.snapshots.start_workers_when_synced()
        self.metrics.leader.set(1)
        self.leading.set()
        log.info("leading", identity=self.identity)

    def _await_sync(self) -> bool:
        """Wait until every cache synced (True), or until we stop / lose the lease (False)."""
        started = time.monotonic()
        next_log = started + self._sync_timeout
        while not self.finished.is_set() and not (self.elector is not None and self.elector.lost.is_set()):
            if self.controller.wait_synced(min(0.5, self._sync_timeout)):
                return True
            if time.monotonic() - started >= self._sync_deadline:
                log.error(
                    "caches_not_synced_giving_up_lease",
                    identity=self.identity,
                    waited_seconds=round(time.monotonic() - started, 1),
                    unsynced=[i.resource for i in self.controller.informers if not i.synced],
                )
                self.exit_code = 1
                self._shutdown(release=True)
                return False
            if time.monotonic() >= next_log:
                next_log += self._sync_timeout
                unsynced = [i.resource for i in self.controller.informers if not i.synced]
                log.warning(
                    "caches_not_synced_workers_held",
                    identity=self.identity,
                    waited_seconds=round(time.monotonic() - started, 1),
                    unsynced=unsynced,
                )
        return False

    def terminate(self, timeout: float = 10.0) -> None:
        """Graceful stop (SIGTERM): drain workers, then release the lease."""
        self._shutdown(release=True, timeout=timeout)

    def crash(self) -> None:
        """Abrupt stop: no drain of the lease; what a killed process looks like to others."""
        self._dead.set()
        if self.elector:
            self.elector.stop()
            with self.elector._lock:
                self.elector._leading = False
        self._shutdown(release=False, timeout=2.0)

    def _shutdown(self, *, release: bool, timeout: float = 10.0) -> None:
        if self.finished.is_set():
            return
        self.finished.set()
        self.metrics.leader.set(0)
        if self.elector and not release:
            self.elector.stop()
        if self.leases is not None:
            self.leases._stop.set()
        self.audit.stop(1.0)
        self.snapshots.stop(timeout=timeout)
        self.controller.stop(abort_watches=self.kube.abort_watches, timeout=timeout)
        self.snapshots.join(1.0)
        if self.elector and release:
            self.elector.release()
        self.controller.ctx.events.flush()
        self.controller.ctx.events.close()
        if self.health:
            self.health.stop()
        self.kube.close()
        for cinder in self._own_clouds:
            close = getattr(cinder, "close", None)
            if close is not None:
                close()
        if self._lease_kube:
            self._lease_kube.close()
        if self.leases is not None:
            self.leases.stop(1.0)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the replica stopped (lost lease or terminate)."""
        return self.finished.wait(timeout)
