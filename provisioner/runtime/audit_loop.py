"""The controller's continuous audit: on the leader only, every ``audit_interval_seconds``, never deleting.

Why in the controller: admins want the audit's answer as a metric they can alert on, and the PVs that lost
their volume (or disagree about its size) to say so where their users look — an Event. Rate-limited: the
first run comes one interval after the loop starts (a leader change does not trigger a burst of lists),
the interval is at least a minute (configuration refuses less; 0 turns it off), one run at a time, and a
run is skipped when this replica does not lead at that moment. It only reads: ``collect`` lists, ``audit``
decides; nothing is deleted or patched, the only writes are Warning Events on PVs (deduplicated by the
recorder, so a PV that stays broken is bumped, not flooded).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import structlog
from prometheus_client import CollectorRegistry, Gauge

from provisioner.audit.collect import KubeLister, collect
from provisioner.audit.decide import Options, audit
from provisioner.audit.model import PV_WARNING_KINDS, Kind, Report
from provisioner.domain.errors import ProvisionerError
from provisioner.ports import CinderPort

log = structlog.get_logger(__name__)

#: Event reasons on PVs.
REASONS: Mapping[Kind, str] = {Kind.MISSING_VOLUME: "CinderVolumeMissing", Kind.SIZE_DRIFT: "CinderSizeDrift"}


class Events(Protocol):
    def event(self, obj: Mapping[str, Any], type_: Any, reason: str, message: str) -> None: ...


class AuditMetrics:
    """Gauges of the last audit, on the injected registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        p = "cinder_provisioner_audit_"
        self.findings = Gauge(
            p + "findings", "Findings of the last audit, by kind", ["kind"], registry=registry
        )
        self.gib = Gauge(
            p + "findings_gib",
            "GiB concerned by the last audit's findings, by kind",
            ["kind"],
            registry=registry,
        )
        self.last_run = Gauge(
            p + "last_run_timestamp_seconds", "When the last audit finished", registry=registry
        )
        self.errors = Gauge(p + "errors", "Clouds or lists the last audit could not read", registry=registry)
        self.seconds = Gauge(p + "duration_seconds", "How long the last audit took", registry=registry)

    def export(self, report: Report, *, seconds: float, now: float) -> None:
        by_kind = report.summary.by_kind
        for kind in Kind:
            tally = by_kind.get(kind.value)
            self.findings.labels(kind=kind.value).set(tally.count if tally else 0)
            self.gib.labels(kind=kind.value).set(tally.gib if tally else 0)
        self.errors.set(len(report.errors))
        self.seconds.set(seconds)
        self.last_run.set(now)


class AuditLoop:
    """A daemon thread running ``run_once`` every ``interval`` seconds while ``is_leader()``."""

    def __init__(
        self,
        *,
        clouds: Mapping[str, CinderPort],
        kube: KubeLister,
        events: Events,
        registry: CollectorRegistry,
        cluster_id: str,
        default_cloud: str,
        provisioner_name: str,
        interval_seconds: float,
        stuck_after_seconds: float = 3600.0,
        is_leader: Callable[[], bool] = lambda: True,
        wall: Callable[[], float] = time.time,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._clouds = clouds
        self._kube = kube
        self._events = events
        self.metrics = AuditMetrics(registry)
        self._cluster_id = cluster_id
        self._default_cloud = default_cloud
        self._provisioner_name = provisioner_name
        self.interval = interval_seconds
        self._stuck_after = stuck_after_seconds
        self._is_leader = is_leader
        self._wall = wall
        self._clock = clock
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.runs = 0

    def run_once(self) -> Report | None:
        """One audit if this replica leads (None otherwise): gauges, then Warning Events on broken PVs."""
        if not self._is_leader():
            return None
        with self._lock:
            started = self._clock()
            options = Options(
                cluster_id=self._cluster_id,
                default_cloud=self._default_cloud,
                now=self._wall(),
                provisioner_name=self._provisioner_name,
                stuck_after_seconds=self._stuck_after,
            )
            observed = collect(clouds=self._clouds, kube=self._kube, options=options, max_workers=2)
            report = audit(observed, options)
            self.metrics.export(report, seconds=self._clock() - started, now=self._wall())
            self.runs += 1
            pvs = {str((pv.get("metadata") or {}).get("name")): pv for pv in observed.kube.pvs}
            for f in report.findings:
                pv = pvs.get(f.k8s_name) if f.k8s_kind == "PersistentVolume" else None
                if f.kind in PV_WARNING_KINDS and pv is not None and self._is_leader():
                    self._events.event(pv, "Warning", REASONS[f.kind], f"audit: {f.detail}")
            log.info(
                "audit_done",
                findings=len(report.findings),
                errors=len(report.errors),
                seconds=round(self._clock() - started, 3),
                **{k: t.count for k, t in report.summary.by_kind.items()},
            )
            return report

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.run_once()
            except ProvisionerError as e:  # Kubernetes unreachable: the next run tries again
                log.warning("audit_failed", error=str(e))
            except Exception:  # never let the audit take a thread of the controller down silently
                log.exception("audit_crashed")

    def start(self) -> None:
        """Start the loop (no-op when the interval is 0 or it already runs)."""
        if self.interval <= 0 or self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="audit", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
