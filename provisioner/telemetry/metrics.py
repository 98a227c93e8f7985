"""Prometheus metrics, registered on an injected registry (no globals, so tests and replicas can coexist).

What operators asked for: how long a claim waits to be Bound (up to 30 min, because slow backends exist),
how provisioning and deletion end (by class and reason), how Cinder behaves (latency by operation and
status), how full the in-flight cap is (the wait for a slot, and the slot-seconds each operation holds:
their rate is the mean number of slots in use), whether the controller keeps up (queue depth, retries
by reason, in-flight, leader), and whether it is whole (worker threads alive, failures caught by the
worker's barrier that would have killed it).
"""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

BOUND_BUCKETS = (0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 900, 1200, 1800)
SLOT_WAIT_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
CINDER_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


@dataclass(frozen=True, slots=True, kw_only=True)
class Metrics:
    """All the controller's metrics."""

    registry: CollectorRegistry
    pvc_bound_seconds: Histogram
    provision_total: Counter
    delete_total: Counter
    cinder_request_seconds: Histogram
    #: the in-flight cap (``cinder_max_in_flight``, per cloud): the wait for a slot, the time slots are held
    cinder_slot_wait_seconds: Histogram
    cinder_slot_seconds_total: Counter
    queue_depth: Gauge
    queue_waiting: Gauge
    queue_retries_total: Counter
    in_flight: Gauge
    workers_alive: Gauge
    worker_errors_total: Counter
    leader: Gauge
    reconcile_seconds: Histogram
    #: VolumeSnapshots of our driver (Cinder snapshots and backups): outcomes and latency
    snapshot_total: Counter
    snapshot_create_seconds: Histogram
    snapshot_delete_seconds: Histogram

    def observe_cinder(self, operation: str, status: str, seconds: float) -> None:
        """Observer handed to the Cinder adapter."""
        self.cinder_request_seconds.labels(operation=operation, status=status).observe(seconds)

    def observe_cinder_slot(self, cloud: str, operation: str, waited: float, held: float) -> None:
        """Slot observer handed to the Cinder adapter."""
        self.cinder_slot_wait_seconds.labels(cloud=cloud, operation=operation).observe(waited)
        self.cinder_slot_seconds_total.labels(cloud=cloud, operation=operation).inc(held)


def make_metrics(registry: CollectorRegistry | None = None) -> Metrics:
    """Create and register every metric on ``registry`` (a fresh one by default)."""
    reg = registry or CollectorRegistry()
    p = "cinder_provisioner_"
    return Metrics(
        registry=reg,
        pvc_bound_seconds=Histogram(
            p + "pvc_bound_seconds",
            "Time from PVC creation to Bound, for claims this provisioner served",
            ["storage_class"],
            buckets=BOUND_BUCKETS,
            registry=reg,
        ),
        provision_total=Counter(
            p + "provision_total",
            "Provisioning outcomes",
            ["storage_class", "outcome", "reason"],
            registry=reg,
        ),
        delete_total=Counter(
            p + "delete_total", "Deletion outcomes", ["storage_class", "outcome", "reason"], registry=reg
        ),
        cinder_request_seconds=Histogram(
            p + "cinder_request_seconds",
            "Cinder API call latency (from the send, the in-flight slot held, to the answer)",
            ["operation", "status"],
            buckets=CINDER_BUCKETS,
            registry=reg,
        ),
        cinder_slot_wait_seconds=Histogram(
            p + "cinder_slot_wait_seconds",
            "Time a Cinder call waited for an in-flight slot (cinder_max_in_flight per cloud)",
            ["cloud", "operation"],
            buckets=SLOT_WAIT_BUCKETS,
            registry=reg,
        ),
        cinder_slot_seconds_total=Counter(
            p + "cinder_slot_seconds",
            "Seconds Cinder calls held an in-flight slot; the rate is the mean number of slots in use",
            ["cloud", "operation"],
            registry=reg,
        ),
        queue_depth=Gauge(p + "queue_depth", "Keys ready to be processed", registry=reg),
        queue_waiting=Gauge(p + "queue_waiting", "Keys scheduled for a later retry or poll", registry=reg),
        queue_retries_total=Counter(
            p + "queue_retries", "Rate-limited retries, by the failed step's reason", ["reason"], registry=reg
        ),
        in_flight=Gauge(p + "in_flight", "Keys being reconciled now", registry=reg),
        workers_alive=Gauge(p + "workers_alive", "Worker threads running (0 on standbys)", registry=reg),
        worker_errors_total=Counter(
            p + "worker_errors",
            "Exceptions caught by the worker loop's barrier (the worker went on), by where they happened",
            ["stage"],
            registry=reg,
        ),
        leader=Gauge(p + "leader", "1 while this replica holds the leader lease", registry=reg),
        reconcile_seconds=Histogram(
            p + "reconcile_seconds",
            "Wall time of one reconcile step",
            ["kind"],
            buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5),
            registry=reg,
        ),
        snapshot_total=Counter(
            p + "snapshot",
            "VolumeSnapshot outcomes: kind snapshot|backup, operation create|delete, outcome success|failure",
            ["kind", "operation", "outcome", "reason"],
            registry=reg,
        ),
        snapshot_create_seconds=Histogram(
            p + "snapshot_create_seconds",
            "Time from VolumeSnapshotContent creation to readyToUse",
            ["kind"],
            buckets=BOUND_BUCKETS,
            registry=reg,
        ),
        snapshot_delete_seconds=Histogram(
            p + "snapshot_delete_seconds",
            "Time from VolumeSnapshotContent deletion to its Cinder snapshot or backup being gone",
            ["kind"],
            buckets=BOUND_BUCKETS,
            registry=reg,
        ),
    )
