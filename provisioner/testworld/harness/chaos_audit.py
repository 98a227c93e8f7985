"""The audit under chaos (``chaos --audit``): planted leaks must be found, nothing else may be reported.

``AuditProbe.plant()`` puts defects in place that no controller makes and none fixes: tagged orphan
volumes (a claim uid that never existed), a tagged orphan snapshot (of one planted orphan), and a PV with
reclaimPolicy Retain whose volume never existed (``missing-volume`` + ``released-retained``). A background
thread then audits the cluster every few seconds, exactly as the CLI does (own clients, over HTTP), while
claims are provisioned, deleted, snapshotted, grown and the leader is killed. Every finding that is not a
planted one is a false positive, printed with its detail. ``finish()`` runs a last pass (every planted
leak must be found in it), then removes what was planted so the harness's own leak count stays about the
controller. Passes whose lists failed (injected 5xx, the 503 storm) are counted, not judged.
"""

from __future__ import annotations

import re
import threading
import time
import uuid
from collections import Counter
from typing import Any

from provisioner.adapters.cinder.client import make_cinder
from provisioner.adapters.kube import KubeAdapter
from provisioner.audit.collect import collect
from provisioner.audit.decide import Options, audit
from provisioner.audit.model import Kind, Report
from provisioner.config.auth import parse_cloud
from provisioner.domain import names
from provisioner.domain.errors import ProvisionerError
from provisioner.testworld.cinder_emulator.emulator import CinderEmulator
from provisioner.testworld.kube_sim import KubeSimulator
from provisioner.testworld.objects import emulator_cloud


class AuditProbe:
    """Plants leaks, audits in the background, judges every pass."""

    def __init__(
        self, sim: KubeSimulator, emu: CinderEmulator, out: Any, *, cluster_id: str, interval: float = 3.0
    ) -> None:
        self.sim, self.emu, self.out = sim, emu, out
        self.cluster_id = cluster_id
        self.interval = interval
        raw = emulator_cloud(emu.keystone_url, emu.username, emu.password, emu.project_id)
        # Few retries: a pass during a storm should fail fast and be counted, not wait it out.
        self.cinder = make_cinder(parse_cloud("default", raw, env={}, base_dir=None), retry_attempts=2)
        self.kube = KubeAdapter(sim.configuration(), qps=200, burst=200)
        self.planted: set[tuple[Kind, str]] = set()
        self._planted_volumes: list[str] = []
        self._planted_snapshots: list[str] = []
        self._planted_pv = ""
        self.passes = self.failed_passes = 0
        #: why passes failed: "list volumes", "read snapshot" … (a collection error) or an error class
        self.failed_because: Counter[str] = Counter()
        self.false_positives: dict[tuple[Kind, str], str] = {}
        self.found_in_last = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ---- planting --------------------------------------------------------------------------------

    def plant(self, *, orphans: int = 2) -> None:
        store = self.emu._store  # planted through the emulator's own operations: no fault may stop them
        for i in range(orphans):
            uid = str(uuid.uuid4())
            meta = {
                names.META_CLUSTER: self.cluster_id,
                names.META_PVC_NAMESPACE: "default",
                names.META_PVC_NAME: f"planted-{i}",
                names.META_PVC_UID: uid,
                names.META_PV_NAME: names.pv_name_for(uid),
                names.META_STORAGE_CLASS: "chaos-rbd",
            }
            vol = store.create_volume({"name": names.pv_name_for(uid), "size": 1, "metadata": meta})
            self._planted_volumes.append(vol["id"])
            self.planted.add((Kind.ORPHAN_VOLUME, vol["id"]))
        deadline = time.monotonic() + 10
        while (
            store.get_volume(self._planted_volumes[0])["status"] != "available"
            and time.monotonic() < deadline
        ):
            time.sleep(0.05)
        snap = store.create_snapshot(
            {
                "volume_id": self._planted_volumes[0],
                "name": "planted",
                "metadata": {names.META_CLUSTER: self.cluster_id},
            }
        )
        self._planted_snapshots.append(snap["id"])
        self.planted.add((Kind.ORPHAN_SNAPSHOT, snap["id"]))
        missing = str(uuid.uuid4())
        pv_name = f"pvc-planted-{missing[:8]}"
        self.sim.create(
            "persistentvolumes",
            {
                "metadata": {
                    "name": pv_name,
                    "annotations": {
                        names.ANN_VOLUME_ID: missing,
                        names.ANN_PROVISIONED_BY: names.DEFAULT_PROVISIONER_NAME,
                    },
                },
                "spec": {
                    "capacity": {"storage": "1Gi"},
                    "accessModes": ["ReadWriteOnce"],
                    "persistentVolumeReclaimPolicy": "Retain",
                    "storageClassName": "chaos-rbd",
                    "csi": {"driver": names.CSI_DRIVER_NAME, "volumeHandle": missing},
                },
            },
        )
        self._planted_pv = pv_name
        self.planted.add((Kind.MISSING_VOLUME, missing))

    # ---- auditing --------------------------------------------------------------------------------

    def audit_once(self) -> Report | None:
        options = Options(
            cluster_id=self.cluster_id, default_cloud="default", now=time.time(), stuck_after_seconds=120
        )
        try:
            report = audit(collect(clouds={"default": self.cinder}, kube=self.kube, options=options), options)
        except ProvisionerError as e:
            self.failed_passes += 1
            self.failed_because[type(e).__name__] += 1
            print(f"  audit pass failed: {type(e).__name__}", file=self.out, flush=True)
            return None
        if report.errors:
            self.failed_passes += 1
            for kind, error in {_collection_failure(e): e for e in report.errors}.items():
                if kind not in self.failed_because:  # the first of each kind, in full
                    print(f"  audit pass failed: {error}", file=self.out, flush=True)
                self.failed_because[kind] += 1
            return None
        self.passes += 1
        for f in report.findings:
            key = (f.kind, f.cinder_id)
            if key not in self.planted and key not in self.false_positives:
                self.false_positives[key] = f.detail
                where = f"{f.k8s_kind}/{f.k8s_name}"
                print(
                    f"AUDIT FALSE POSITIVE {f.kind.value} {f.cinder_id} {where}: {f.detail} "
                    f"(status={f.cinder_status} age={f.age_seconds} attachments={f.attachments} "
                    f"name={f.cinder_name})",
                    file=self.out,
                    flush=True,
                )
        return report

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.audit_once()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="chaos-audit", daemon=True)
        self._thread.start()

    def finish(self, timeout: float = 30.0) -> dict[str, Any]:
        """Stop the background passes, run a last one (it must find every planted leak), clean up."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        deadline = time.monotonic() + timeout
        report = None
        while report is None and time.monotonic() < deadline:
            report = self.audit_once()
        found = {(f.kind, f.cinder_id) for f in report.findings} if report else set()
        missed = sorted(f"{k.value} {i}" for k, i in self.planted - found)
        for line in missed:
            print(f"AUDIT MISSED PLANTED {line}", file=self.out, flush=True)
        self._clean_up()
        self.kube.close()
        return {
            "audit_passes": self.passes,
            "audit_failed_passes": self.failed_passes,
            "audit_planted": len(self.planted),
            "audit_planted_missed": len(missed),
            "audit_false_positives": len(self.false_positives),
            "audit_failed_because": dict(sorted(self.failed_because.items())),
        }

    def _clean_up(self) -> None:
        store = self.emu._store
        for sid in self._planted_snapshots:
            store.delete_snapshot(sid)
        deadline = time.monotonic() + 10
        while (
            any(s["id"] in self._planted_snapshots for s in self.emu.snapshots())
            and time.monotonic() < deadline
        ):
            time.sleep(0.05)
        for vid in self._planted_volumes:
            store.delete_volume(vid, cascade=True)
        if self._planted_pv:
            self.sim.delete("persistentvolumes", "", self._planted_pv)
            # the simulator's PV protection removes its finalizer asynchronously, like the real one
            deadline = time.monotonic() + 10
            while self.sim.get("persistentvolumes", "", self._planted_pv) is not None:
                if time.monotonic() > deadline:
                    break
                time.sleep(0.05)


_COLLECTION = re.compile(r"cannot (list|read) (\w+)")


def _collection_failure(error: str) -> str:
    """``cloud default: cannot list volumes: …`` → ``list volumes`` (what the audit could not read)."""
    m = _COLLECTION.search(error)
    return f"{m.group(1)} {m.group(2)}" if m else error.split(":", 2)[-1].strip()[:60]
