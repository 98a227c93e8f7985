"""Chaos harness: two controller replicas under kills, split brain and Cinder faults; count what leaked.

``python -m provisioner.testworld.harness.chaos --cycles N --seed S`` (``tox -e chaos``) runs the real
controller (leader election on) against the Kubernetes simulator and the Cinder emulator. It creates and
deletes N claims while, at random, it kills the leader — including at armed crash points between the Cinder
create and the PV save, and between the Cinder delete and the finalizer removal —, sends it SIGTERM, cuts
its lease renewals (split brain), and injects Cinder faults (5xx, 429 + Retry-After, volumes going to error,
slow volumes). Killed replicas are replaced, as a Deployment would. At the end it counts:

- ``leaked``: Cinder volumes of this cluster left after every claim was deleted,
- ``duplicates``: claims that had more than one live Cinder volume when they were Bound,
- ``lost``: Bound claims whose PV's Cinder volume did not exist,
- ``silent``: claims neither Bound nor explaining why with a Warning event at the check.

Alongside the healthy load run persistent faults a controller must contain, not fix: claims on a class
whose ``type`` Cinder does not have (404), a claim whose restore annotation is a path (``../volumes/<id>``),
both present for the whole run, and a 503 storm (every Cinder call, ``--storm-seconds``, shortened for short
runs). They must never be Bound nor get a volume (``bad_claims_bound``, ``bad_claim_volumes``) and their
cost is bounded: Cinder calls and claim writes in their first minute, Event objects
(``chaos_metrics.Bounds``; ``--bound-*`` flags). The counters come from what the Kubernetes simulator and
the Cinder emulator logged, not from the controller (``chaos_metrics``), as do ``worker_deaths`` (worker
threads that ended while their replica ran on).

The last line printed is the JSON summary; the exit code is 0 only if every defect count is 0 and
``bounds_ok`` is true.
"""

from __future__ import annotations

import argparse
import functools
import json
import random
import sys
import threading
import time
import uuid
from collections.abc import Sequence
from typing import Any

from provisioner.adapters.kube import KubeAdapter
from provisioner.config.settings import ProvisionerConfig
from provisioner.domain import names
from provisioner.domain.errors import KubeError, KubeUnavailable
from provisioner.domain.outcome import SimulatedCrash
from provisioner.runtime.replica import Replica
from provisioner.telemetry import logs
from provisioner.testworld import objects
from provisioner.testworld.cinder_emulator.emulator import CinderEmulator
from provisioner.testworld.harness import chaos_metrics as cm
from provisioner.testworld.harness.chaos_audit import AuditProbe
from provisioner.testworld.kube_sim import KubeSimulator
from provisioner.testworld.objects import emulator_cloud

CRASH_POINTS: tuple[str, ...] = (
    "after_cinder_create",
    "after_export",
    "after_pv_create",
    "after_cinder_delete",
    "before_pv_finalizer_removal",
)
#: The expand flow's crash points, armed like the others: a share of bound claims grows before deletion.
EXPAND_CRASH_POINTS = ("before_cinder_extend", "after_cinder_extend", "after_pv_resize")
#: The snapshot flow's crash points (flows/snapshots.py): Cinder snapshot made but not recorded, deleted but
#: the content's finalizer still on, and the finalizer removal itself.
SNAPSHOT_CRASH_POINTS = ("after_snapshot_create", "after_snapshot_delete", "before_content_finalizer_removal")
CRASH_POINTS = (*CRASH_POINTS, *EXPAND_CRASH_POINTS, *SNAPSHOT_CRASH_POINTS)
#: Share of bound claims snapshotted (a VolumeSnapshot, waited for, deleted) before they are deleted.
SNAPSHOT_FRACTION = 0.3
SNAPSHOT_WAIT_SECONDS = 30.0
SNAPSHOT_CLASS = "chaos-snap"
BACKUP_CLASS = "chaos-backup"  # parameters.type backup: the same flow, Cinder backups instead of snapshots
BACKUP_FRACTION = 0.35  # of the snapshots taken, this share are backups
RESTORE_FRACTION = 0.5  # of the ready snapshots/backups, this share are restored into a new claim first
RESTORE_WAIT_SECONDS = 30.0
GROW_FRACTION = 0.25
GROW_TO = "2Gi"
GROW_WAIT_SECONDS = 5.0  # a grown claim is deleted once its PV shows the size, or after this long
FAULT_OPS = (
    "create_volume",
    "get_volume",
    "list_volumes",
    "delete_volume",
    "create_attachment",
    "complete_attachment",
    "delete_attachment",
)
BAD_TYPE = "no-such-type"  # not a volume type of the emulator: every create answers 404
SECONDS_PER_CYCLE = 0.8  # what a cycle costs today (300 cycles ≈ 4 min): sizes the storm for short runs


class Harness:
    """State of one chaos run."""

    def __init__(self, sim: KubeSimulator, emu: CinderEmulator, rng: random.Random, out: Any) -> None:
        self.sim, self.emu, self.rng, self.out = sim, emu, rng, out
        self.config = ProvisionerConfig.from_mapping(
            {
                "cluster_id": "chaos",
                "clouds": {
                    "default": emulator_cloud(emu.keystone_url, emu.username, emu.password, emu.project_id)
                },
                "default_cloud": "default",
                "namespace": "kube-system",
                "secret_namespace": "kube-system",
                "workers": 8,
                "create_deadline_seconds": 8,
                "max_error_retries": 5,
                "leader_election": {"lease_duration": 3, "renew_deadline": 2, "retry_period": 0.5},
            }
        )
        self.replicas: list[Replica] = []
        self.armed: dict[str, str] = {}  # replica identity → crash point
        self.counter = 0
        self.stats = {"kills": 0, "crash_points": 0, "terms": 0, "cuts": 0, "faults": 0}
        self.lock = threading.Lock()
        self.deaths = cm.WorkerDeaths()
        self.timeline: list[tuple[float, str]] = []  # what the harness did and when (for a leak's story)

    def note(self, what: str) -> None:
        self.timeline.append((time.monotonic(), f"chaos {what}"))

    def sample_workers(self) -> None:
        """Count worker threads that ended while their replica is still running."""
        for r in self.alive():
            # Controller keeps its pool private; reading it (never changing it) keeps runtime untouched.
            self.deaths.sample(list(r.controller._threads), stopping=functools.partial(_stopping, r))

    def spawn(self) -> Replica:
        self.counter += 1
        identity = f"replica-{self.counter}"

        def checkpoint(point: str) -> None:
            if self.armed.get(identity) == point:
                self.armed.pop(identity, None)
                self.stats["crash_points"] += 1
                self.note(f"{identity} crashes at {point}")
                raise SimulatedCrash(point)

        r = Replica(
            self.config,
            client_configuration=self.sim.configuration(),
            identity=identity,
            resync_seconds=20.0,
            watch_timeout_seconds=15,
            checkpoint=checkpoint,
            create_in_flight_seconds=5.0,  # the harness's slowest create is 1 s
            poll_initial_seconds=0.05,
            poll_max_seconds=0.5,
            # 30 s (not the shipped 300 s, which is longer than a run): a typo'd class still gets only two
            # slow retries per minute, so the first-minute bounds are measured on the real mechanism.
            final_retry_seconds=30.0,
        )
        r.start()
        self.note(f"{identity} started")
        self.replicas.append(r)
        return r

    def alive(self) -> list[Replica]:
        return [r for r in self.replicas if not r.finished.is_set()]

    def leader(self) -> Replica | None:
        for r in self.alive():
            if r.elector is not None and r.elector.is_leader():
                return r
        return None

    def keep_two(self) -> None:
        while len(self.alive()) < 2:
            self.spawn()

    def chaos_tick(self) -> None:
        rng = self.rng
        roll = rng.random()
        leader = self.leader()
        if leader is not None and roll < 0.004:
            leader.crash()
            self.note(f"{leader.identity} killed")
            self.stats["kills"] += 1
        elif leader is not None and roll < 0.02:
            point = self.armed.setdefault(leader.identity, rng.choice(CRASH_POINTS))
            self.note(f"{leader.identity} armed at {point}")
        elif leader is not None and roll < 0.022:
            threading.Thread(target=leader.terminate, daemon=True).start()
            self.note(f"{leader.identity} terminated")
            self.stats["terms"] += 1
        elif leader is not None and roll < 0.024 and leader.elector is not None:
            client: Any = leader.elector._client

            def cut(*_a: Any, **_k: Any) -> Any:
                raise KubeUnavailable("lease renewals cut by chaos")

            client.replace = cut
            self.note(f"{leader.identity} lease renewals cut")
            self.stats["cuts"] += 1
        elif roll < 0.05:
            op = rng.choice(FAULT_OPS)
            self.emu.faults.fail_next(op, status=rng.choice([500, 502, 503]), count=1)
            self.stats["faults"] += 1
        elif roll < 0.06:
            self.emu.faults.fail_next("create_volume", status=429, retry_after=1, count=1)
            self.stats["faults"] += 1
        elif roll < 0.07:
            self.emu.faults.error_on_create(count=1)
            self.stats["faults"] += 1
        elif roll < 0.075:
            self.emu.faults.set_latency("create_volume", rng.choice([0.0, 0.2, 1.0]))
            self.stats["faults"] += 1
        for r in self.replicas:
            if r.controller.crashed.is_set() and not r.finished.is_set():
                r.crash()


def _stopping(r: Replica) -> bool:
    """The replica is shutting down, or one of its workers hit an armed crash point (it is about to)."""
    return r.finished.is_set() or r.controller.crashed.is_set()


def storm_length(storm_seconds: float, cycles: int, fraction: float = 0.25) -> float:
    """The storm lasts ``storm_seconds``, but at most ``fraction`` of what the run is expected to take."""
    return max(0.0, min(storm_seconds, fraction * cycles * SECONDS_PER_CYCLE))


def _bad_claims(kube: KubeAdapter, bad_type_claims: int) -> list[cm.Claim]:
    """Create the claims that can never succeed; they stay for the whole run."""
    kube.create("storageclasses", objects.storage_class("chaos-badtype", {"type": BAD_TYPE}))
    specs: list[tuple[str, str, dict[str, str], cm.ClaimKind, frozenset[str]]] = [
        (f"bad-type-{i}", "chaos-badtype", {}, "bad_type", frozenset()) for i in range(bad_type_claims)
    ]
    target = str(uuid.uuid4())  # no such volume: calls naming it can only come from this claim
    ann = {names.ANN_RESTORE_FROM_SNAPSHOT: f"../volumes/{target}"}
    specs.append(("bad-restore-0", "chaos-rbd", ann, "bad_restore", frozenset({target})))
    out = []
    for name, sc, extra, kind, ids in specs:
        at = time.monotonic()
        made = kube.create(
            "persistentvolumeclaims", objects.claim(name, sc, annotations=extra), namespace="default"
        )
        uid = made["metadata"]["uid"]
        out.append(cm.Claim(namespace="default", name=name, uid=uid, created_at=at, kind=kind, ids=ids))
    return out


def run(
    cycles: int,
    seed: int,
    concurrency: int,
    out: Any,
    stall_seconds: float = 90.0,
    *,
    storm_seconds: float = 60.0,
    bad_type_claims: int = 3,
    bounds: cm.Bounds | None = None,
    audit: bool = False,
) -> dict[str, Any]:
    """Run the harness and return the summary (``audit``: plant leaks and audit throughout, chaos_audit)."""
    bounds = bounds or cm.Bounds()
    rng = random.Random(seed)  # noqa: S311 - reproducible chaos, not cryptography
    started = time.monotonic()
    storm = storm_length(storm_seconds, cycles)
    storm_at = cycles // 3  # start the storm once a third of the claims exist: mid-run, whatever the speed
    stormed = storm <= 0
    with KubeSimulator() as sim, CinderEmulator(create_seconds=0.05, delete_seconds=0.05) as emu:
        h = Harness(sim, emu, rng, out)
        kube = KubeAdapter(sim.configuration(), qps=1000, burst=1000)
        for name, vtype in (("chaos-rbd", "rbd"), ("chaos-iscsi", "iscsi")):
            kube.create(
                "storageclasses",
                {**objects.storage_class(name, {"type": vtype}), "allowVolumeExpansion": True},
            )
        _snapshot_class(kube)
        snapshots: dict[str, tuple[str, float]] = {}  # claim name → (phase, since)
        claims = _bad_claims(kube, bad_type_claims)
        bad_uids = {c.uid for c in claims}
        h.keep_two()
        probe = AuditProbe(sim, emu, out, cluster_id="chaos") if audit else None
        if probe is not None:
            probe.plant()
            probe.start()
        created = deleted = 0
        active: dict[str, float] = {}  # claim name → creation time
        deleting: set[str] = set()
        growing: dict[str, float] = {}  # claim name → when its resize was requested
        duplicates = lost = 0
        last_report = time.monotonic()
        progress_at, progress = time.monotonic(), (0, 0)
        stalled = 0
        while deleted < cycles:
            if not stormed and created >= storm_at:
                emu.faults.fail_for("*", seconds=storm, status=503, message="chaos: Cinder is down")
                stormed = True
                print(f"  503 storm for {storm:g} s", file=out, flush=True)
            if (created, deleted) != progress or emu.faults.storming():  # no progress is expected in a storm
                progress_at, progress = time.monotonic(), (created, deleted)
            elif time.monotonic() - progress_at > stall_seconds:
                stalled = len(active)
                _dump_stall(sim, emu, active, out)
                break
            h.chaos_tick()
            h.keep_two()
            h.sample_workers()
            if created < cycles and len(active) < concurrency:
                name = f"claim-{created:05d}"
                sc = rng.choice(["chaos-rbd", "chaos-iscsi"])
                at = time.monotonic()
                made = kube.create("persistentvolumeclaims", objects.claim(name, sc), namespace="default")
                claims.append(
                    cm.Claim(namespace="default", name=name, uid=made["metadata"]["uid"], created_at=at)
                )
                active[name] = time.monotonic()
                created += 1
            pvcs = {p["metadata"]["name"]: p for p in sim.list("persistentvolumeclaims", "default")}
            for name in list(active):
                pvc = pvcs.get(name)
                if name in deleting:
                    if pvc is None:
                        del active[name]
                        deleting.discard(name)
                        deleted += 1
                    continue
                if pvc is None:
                    continue
                bound = (pvc.get("status") or {}).get("phase") == "Bound"
                if bound and _grow_first(sim, kube, pvc, rng=rng, growing=growing, stats=h.stats):
                    continue
                if bound and _snapshot_first(sim, kube, name, rng=rng, snapshots=snapshots, stats=h.stats):
                    continue
                mid_provision = not bound and rng.random() < 0.002
                if bound or mid_provision:
                    if bound:
                        d, lo = _check_bound(sim, emu, pvc)
                        duplicates += d
                        lost += lo
                        if d or lo:
                            _bound_story(out, sim, emu, pvc, h.timeline)
                    kube.delete("persistentvolumeclaims", name, namespace="default")
                    deleting.add(name)
            if time.monotonic() - last_report > 5:
                last_report = time.monotonic()
                print(
                    f"  created {created}, deleted {deleted}/{cycles}, replicas alive {len(h.alive())}, "
                    f"{h.stats}",
                    file=out,
                    flush=True,
                )
            time.sleep(0.02)
        # Quiesce: no more chaos; let the survivors finish and check nothing was left behind.
        emu.faults.clear()
        audited = probe.finish() if probe is not None else {}
        silent = _silent(sim, kube)
        deadline = time.monotonic() + 60
        leaked_list = _our_volumes(emu, excluding=bad_uids)
        while leaked_list and time.monotonic() < deadline:
            h.keep_two()
            h.sample_workers()
            time.sleep(0.2)
            leaked_list = _our_volumes(emu, excluding=bad_uids)
        leaked = len(leaked_list)
        leaked_snaps = _wait_snapshots_given_back(h, sim, emu, deadline)
        leaked_snapshots = len(leaked_snaps)
        for snap in leaked_snaps:
            md = snap.get("metadata") or {}
            print(
                f"LEAKED SNAPSHOT {snap['id']} status={snap.get('status')} "
                f"content={md.get(names.META_CONTENT_NAME)} by={md.get(names.META_CREATED_BY)}",
                file=out,
            )
        for v in leaked_list:  # say what leaked, for the human reading the log
            md = v.get("metadata") or {}
            print(
                f"LEAKED {v['id']} status={v.get('status')} claim={md.get(names.META_PVC_NAME)} "
                f"uid={md.get(names.META_PVC_UID)} by={md.get(names.META_CREATED_BY)} "
                f"attachments={len(v.get('attachments') or [])}",
                file=out,
            )
            _forensics(out, v, emu.calls(), sim.requests, h.timeline)
        h.sample_workers()
        bad_claims = [c for c in claims if c.kind != "healthy"]
        bad_bound = _bound(sim, bad_claims)
        calls = emu.calls()
        bad_volumes = cm.volumes_created(calls, bad_claims) | {
            v["id"]
            for v in _our_volumes(emu)
            if (v.get("metadata") or {}).get(names.META_PVC_UID) in bad_uids
        }
        seen, unattributed = cm.collect(claims, calls, sim.requests, sim.list("events"))
        behaviour = cm.summarize(claims, seen, unattributed, bounds)
        for c in bad_claims:
            if any(v.startswith(f"{c.name} ") for v in behaviour["violations"]):
                _bad_claim_story(out, c, calls, sim.requests, timeline=h.timeline, w=bounds.window_seconds)
        for r in h.alive():
            r.terminate()
        kube.close()
    return {
        "stalled": stalled,
        "leaked": leaked,
        "leaked_snapshots": leaked_snapshots,
        "snapshots_left": len(_our_snapshots(emu)),
        "duplicates": duplicates,
        "lost": lost,
        "silent": silent,
        "cycles": cycles,
        "seed": seed,
        "seconds": round(time.monotonic() - started, 1),
        **h.stats,
        "replicas_started": h.counter,
        "storm_seconds": round(storm, 1),
        "bad_claims_bound": bad_bound,
        "bad_claim_volumes": len(bad_volumes),
        "worker_deaths": h.deaths.count,
        "cinder_calls": len(calls),
        **behaviour,
        **audited,
    }


def _dump_stall(sim: KubeSimulator, emu: CinderEmulator, active: dict[str, float], out: Any) -> None:
    """Print what the claims that stopped making progress look like (for the human reading the log)."""
    print(f"STALLED: {len(active)} claims made no progress", file=out)
    pvcs = {p["metadata"]["name"]: p for p in sim.list("persistentvolumeclaims", "default")}
    for name in sorted(active)[:10]:
        pvc = pvcs.get(name)
        if pvc is None:
            print(f"  {name}: gone", file=out)
            continue
        meta = pvc["metadata"]
        uid = meta["uid"]
        vols = [
            (v["id"][:8], v.get("status"))
            for v in _our_volumes(emu)
            if (v.get("metadata") or {}).get(names.META_PVC_UID) == uid
        ]
        pv = sim.get("persistentvolumes", "", names.pv_name_for(uid))
        events = [
            (e["reason"], e["message"][:100])
            for e in sim.list("events")
            if e["involvedObject"].get("uid") == uid
        ]
        print(
            f"  {name}: phase={(pvc.get('status') or {}).get('phase')} "
            f"deleting={bool(meta.get('deletionTimestamp'))} "
            f"finalizers={meta.get('finalizers')} annotations={meta.get('annotations')} volumes={vols} "
            f"pv={(pv or {}).get('status')} events={events}",
            file=out,
        )


def _our_volumes(
    emu: CinderEmulator, *, excluding: set[str] | frozenset[str] = frozenset()
) -> list[dict[str, Any]]:
    """This cluster's volumes, without those of the claims in ``excluding`` (uids)."""
    return [
        v
        for v in emu.volumes()
        if (v.get("metadata") or {}).get(names.META_CLUSTER) == "chaos"
        and (v.get("metadata") or {}).get(names.META_PVC_UID) not in excluding
    ]


def _grow_first(
    sim: KubeSimulator,
    kube: KubeAdapter,
    pvc: dict[str, Any],
    *,
    rng: random.Random,
    growing: dict[str, float],
    stats: dict[str, int],
) -> bool:
    """Grow a share of bound claims to GROW_TO before they are deleted; True = wait, do not delete yet."""
    name = pvc["metadata"]["name"]
    now = time.monotonic()
    if name not in growing:
        if rng.random() >= GROW_FRACTION:
            return False
        try:
            kube.patch(
                "persistentvolumeclaims",
                name,
                {"spec": {"resources": {"requests": {"storage": GROW_TO}}}},
                namespace="default",
            )
        except KubeError:
            return False
        growing[name] = now
        stats["grown"] = stats.get("grown", 0) + 1
        return True
    if growing[name] == float("-inf"):
        return False  # already counted; its deletion is under way
    pv = sim.get("persistentvolumes", "", pvc["spec"].get("volumeName", ""))
    if ((pv or {}).get("spec") or {}).get("capacity", {}).get("storage") == GROW_TO:
        stats["grown_done"] = stats.get("grown_done", 0) + 1
        growing[name] = float("-inf")  # counted once; delete now
        return False
    return now - growing[name] < GROW_WAIT_SECONDS


def _snapshot_class(kube: KubeAdapter) -> None:
    for name, parameters in ((SNAPSHOT_CLASS, {}), (BACKUP_CLASS, {"type": "backup"})):
        kube.create(
            "volumesnapshotclasses",
            {
                "apiVersion": "snapshot.storage.k8s.io/v1",
                "kind": "VolumeSnapshotClass",
                "metadata": {"name": name},
                "driver": names.CSI_DRIVER_NAME,
                "deletionPolicy": "Delete",
                "parameters": parameters,
            },
        )


def _snapshot_first(
    sim: KubeSimulator,
    kube: KubeAdapter,
    claim: str,
    *,
    rng: random.Random,
    snapshots: dict[str, tuple[str, float]],
    stats: dict[str, int],
) -> bool:
    """Snapshot (or back up) a share of bound claims before they are deleted: VolumeSnapshot → ready or
    failed or a timeout → for a share of the ready ones, a restore claim from it → bound (or a timeout) →
    that claim deleted and gone → the VolumeSnapshot deleted → gone. True = wait, do not delete the claim
    yet."""
    now = time.monotonic()
    phase, since = snapshots.get(claim, ("", now))
    name = f"snap-{claim}"
    restore = f"restore-{claim}"
    if not phase:
        if rng.random() >= SNAPSHOT_FRACTION:
            snapshots[claim] = ("skipped", now)
            return False
        backup = rng.random() < BACKUP_FRACTION
        body = {
            "apiVersion": "snapshot.storage.k8s.io/v1",
            "kind": "VolumeSnapshot",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {
                "volumeSnapshotClassName": BACKUP_CLASS if backup else SNAPSHOT_CLASS,
                "source": {"persistentVolumeClaimName": claim},
            },
        }
        try:
            kube.create("volumesnapshots", body, namespace="default")
        except KubeError:
            return False
        snapshots[claim] = ("taking", now)
        kind = "backups" if backup else "snapshots"
        stats[kind] = stats.get(kind, 0) + 1
        return True
    if phase == "taking":
        status = (sim.get("volumesnapshots", "default", name) or {}).get("status") or {}
        done = status.get("readyToUse") is True or bool(status.get("error"))
        if status.get("readyToUse") is True and rng.random() < RESTORE_FRACTION:
            stats["snapshots_ready"] = stats.get("snapshots_ready", 0) + 1
            pvc = sim.get("persistentvolumeclaims", "default", claim) or {}
            source = (pvc.get("spec") or {}).get("storageClassName") or "chaos-rbd"
            body = objects.claim(
                restore,
                source,
                size=str(status.get("restoreSize") or "1Gi"),
                data_source={"apiGroup": "snapshot.storage.k8s.io", "kind": "VolumeSnapshot", "name": name},
            )
            try:
                kube.create("persistentvolumeclaims", body, namespace="default")
            except KubeError:
                return True
            stats["restores"] = stats.get("restores", 0) + 1
            snapshots[claim] = ("restoring", now)
            return True
        if done or now - since > SNAPSHOT_WAIT_SECONDS:
            if status.get("readyToUse") is True:
                stats["snapshots_ready"] = stats.get("snapshots_ready", 0) + 1
            _delete_then(
                kube, "volumesnapshots", name, snapshots=snapshots, claim=claim, phase="deleting", now=now
            )
        return True
    if phase == "restoring":
        restored = sim.get("persistentvolumeclaims", "default", restore) or {}
        bound = (restored.get("status") or {}).get("phase") == "Bound"
        if bound or now - since > RESTORE_WAIT_SECONDS:
            if bound:
                stats["restores_bound"] = stats.get("restores_bound", 0) + 1
            _delete_then(
                kube,
                "persistentvolumeclaims",
                restore,
                snapshots=snapshots,
                claim=claim,
                phase="unrestoring",
                now=now,
            )
        return True
    if phase == "unrestoring":
        if (
            sim.get("persistentvolumeclaims", "default", restore) is None
            or now - since > RESTORE_WAIT_SECONDS
        ):
            _delete_then(
                kube, "volumesnapshots", name, snapshots=snapshots, claim=claim, phase="deleting", now=now
            )
        return True
    if phase == "deleting":
        if sim.get("volumesnapshots", "default", name) is None or now - since > SNAPSHOT_WAIT_SECONDS:
            snapshots[claim] = ("done", now)
            return False
        return True
    return False


def _delete_then(
    kube: KubeAdapter,
    resource: str,
    name: str,
    *,
    snapshots: dict[str, tuple[str, float]],
    claim: str,
    phase: str,
    now: float,
) -> None:
    """Delete ``name`` (namespace default) and move the claim's snapshot story to ``phase``; a refused
    delete leaves the story where it is, to be tried again on the next tick."""
    try:
        kube.delete(resource, name, namespace="default")
    except KubeError:
        return
    snapshots[claim] = (phase, now)


def _our_snapshots(emu: CinderEmulator) -> list[dict[str, Any]]:
    """This cluster's Cinder snapshots and backups (both are what a VolumeSnapshotContent gives back)."""
    return [
        s
        for s in [*emu.snapshots(), *emu.backups()]
        if (s.get("metadata") or {}).get(names.META_CLUSTER) == "chaos"
    ]


def _leaked_snapshots(sim: KubeSimulator, emu: CinderEmulator) -> list[dict[str, Any]]:
    """Cinder snapshots with our tags whose VolumeSnapshotContent is gone (nobody will give them back)."""
    return [
        s
        for s in _our_snapshots(emu)
        if sim.get("volumesnapshotcontents", "", (s.get("metadata") or {}).get(names.META_CONTENT_NAME, ""))
        is None
    ]


def _wait_snapshots_given_back(
    h: Harness, sim: KubeSimulator, emu: CinderEmulator, deadline: float
) -> list[dict[str, Any]]:
    """Let the survivors give back every snapshot (all VolumeSnapshots were deleted); the leaked ones."""
    while _our_snapshots(emu) and time.monotonic() < deadline:
        h.keep_two()
        time.sleep(0.2)
    return _leaked_snapshots(sim, emu)


def _bound(sim: KubeSimulator, claims: Sequence[cm.Claim]) -> int:
    """How many of ``claims`` are Bound (or gone: nobody deletes them, so gone means something did)."""
    count = 0
    for c in claims:
        pvc = sim.get("persistentvolumeclaims", c.namespace, c.name)
        if pvc is None or (pvc.get("status") or {}).get("phase") == "Bound" or pvc["spec"].get("volumeName"):
            count += 1
    return count


def _check_bound(sim: KubeSimulator, emu: CinderEmulator, pvc: dict[str, Any]) -> tuple[int, int]:
    """(duplicate, lost) for a Bound claim: exactly one live volume, and it is the PV's."""
    uid = pvc["metadata"]["uid"]
    pv = sim.get("persistentvolumes", "", pvc["spec"].get("volumeName", ""))
    vid = ((pv or {}).get("metadata", {}).get("annotations") or {}).get(names.ANN_VOLUME_ID)
    live = [
        v
        for v in _our_volumes(emu)
        if (v.get("metadata") or {}).get(names.META_PVC_UID) == uid
        and v.get("status") not in ("deleting", "error")
    ]
    duplicate = 1 if len(live) > 1 else 0
    lost_ = 0 if vid and any(v["id"] == vid for v in live) else 1
    return duplicate, lost_


def _bound_story(
    out: Any, sim: KubeSimulator, emu: CinderEmulator, pvc: dict[str, Any], timeline: list[tuple[float, str]]
) -> None:
    """Print a Bound claim's duplicate or lost story: each of its volumes' Cinder calls and API requests."""
    uid = pvc["metadata"]["uid"]
    pv = sim.get("persistentvolumes", "", pvc["spec"].get("volumeName", ""))
    vid = ((pv or {}).get("metadata", {}).get("annotations") or {}).get(names.ANN_VOLUME_ID)
    print(f"DUPLICATE OR LOST claim {pvc['metadata']['name']} uid={uid} pv volume={vid}", file=out)
    for v in _our_volumes(emu):
        md = v.get("metadata") or {}
        if md.get(names.META_PVC_UID) == uid:
            print(f"  volume {v['id']} status={v.get('status')} by={md.get(names.META_CREATED_BY)}", file=out)
            _forensics(out, v, emu.calls(), sim.requests, timeline)


def _silent(sim: KubeSimulator, kube: KubeAdapter) -> int:
    """Claims still present that are neither Bound nor explained by a Warning event."""
    count = 0
    warned = {e["involvedObject"].get("uid") for e in sim.list("events") if e.get("type") == "Warning"}
    for pvc in sim.list("persistentvolumeclaims"):
        if (pvc.get("status") or {}).get("phase") == "Bound" or pvc["metadata"].get("deletionTimestamp"):
            continue
        if pvc["metadata"]["uid"] not in warned:
            count += 1
    return count


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry."""
    parser = argparse.ArgumentParser(prog="chaos", description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--cycles", type=int, default=200)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument(
        "--storm-seconds",
        type=float,
        default=60.0,
        help="503 storm length (shortened to a quarter of the expected run; 0 = no storm)",
    )
    parser.add_argument(
        "--bad-type-claims", type=int, default=3, help="claims on a class with an unknown type"
    )
    d = cm.Bounds()
    parser.add_argument(
        "--bounds",
        choices=("enforce", "report"),
        default="enforce",
        help="enforce: exceeded call/write/event bounds fail the run; report: print them only",
    )
    parser.add_argument("--bound-window-seconds", type=float, default=d.window_seconds)
    parser.add_argument("--bound-bad-calls", type=int, default=d.bad_calls, help="Cinder calls in the window")
    parser.add_argument(
        "--bound-bad-writes", type=int, default=d.bad_writes, help="claim writes in the window"
    )
    parser.add_argument("--bound-bad-events", type=int, default=d.bad_events, help="Event objects per claim")
    parser.add_argument(
        "--bound-bad-event-duplicates",
        type=int,
        default=d.bad_event_duplicates,
        help="Event objects beyond one per (claim, type, reason, message)",
    )
    parser.add_argument(
        "--bound-calls-per-second", type=int, default=None, help="any one claim (default: report only)"
    )
    parser.add_argument(
        "--audit",
        action="store_true",
        help="plant leaks and audit throughout (chaos_audit): 0 false positives",
    )
    args = parser.parse_args(argv)
    logs.configure("critical")
    bounds = cm.Bounds(
        window_seconds=args.bound_window_seconds,
        bad_calls=args.bound_bad_calls,
        bad_writes=args.bound_bad_writes,
        bad_events=args.bound_bad_events,
        bad_event_duplicates=args.bound_bad_event_duplicates,
        calls_per_second=args.bound_calls_per_second,
    )
    summary = run(
        args.cycles,
        args.seed,
        args.concurrency,
        sys.stderr,
        storm_seconds=args.storm_seconds,
        bad_type_claims=args.bad_type_claims,
        bounds=bounds,
        audit=args.audit,
    )
    print(json.dumps(summary))
    bounds_ok = summary["bounds_ok"] or args.bounds == "report"
    return 0 if _defects(summary) == 0 and bounds_ok else 1


def _defects(summary: dict[str, Any]) -> int:
    keys: tuple[str, ...] = ("leaked", "duplicates", "lost", "silent", "stalled", "bad_claims_bound")
    keys += ("bad_claim_volumes", "leaked_snapshots", "snapshots_left")
    audit = summary.get("audit_false_positives", 0) + summary.get("audit_planted_missed", 0)
    return int(sum(summary[k] for k in keys) + summary["worker_deaths"] + audit)


def _forensics(
    out: Any, volume: dict[str, Any], calls: list[Any], requests: list[Any], timeline: list[tuple[float, str]]
) -> None:
    """Print a leaked volume's story: every Cinder call naming it, every API request on its claim or PV."""
    vid = str(volume["id"])
    md = volume.get("metadata") or {}
    claim = str(md.get(names.META_PVC_NAME) or "")
    pv = str(volume.get("name") or "")
    t0 = min([c.at for c in calls] + [r.at for r in requests] or [0.0])
    story: list[tuple[float, str]] = list(timeline)
    for c in calls:
        if vid in c.path or c.result_id == vid or vid in repr(c.body) or (pv and pv in repr(c.body)):
            story.append((c.at, f"cinder {c.method} {c.path} {c.operation} -> {c.status} {c.request_id}"))
    for r in requests:
        if not r.watch and ((claim and claim in r.path) or (pv and pv in r.path)):
            story.append((r.at, f"kube {r.method} {r.path}?{r.query} -> {r.status}"))
    if len(story) > len(timeline):  # only the harness's actions around this volume's life
        first = min(at for at, _ in story[len(timeline) :]) - 5
        last = max(at for at, _ in story[len(timeline) :]) + 5
        story = [(at, line) for at, line in story if first <= at <= last]
    for at, line in sorted(story):
        print(f"    {at - t0:9.3f} {line}", file=out)


def _bad_claim_story(
    out: Any,
    claim: cm.Claim,
    calls: list[Any],
    requests: list[Any],
    *,
    timeline: list[tuple[float, str]],
    w: float,
) -> None:
    """Print what a bad claim that broke a bound cost in its window: its Cinder calls (who sent the
    create: the ``created_by`` metadata), its claim writes, and what the harness did meanwhile."""
    uid = claim.uid.lower()
    start, end = claim.created_at - 1.0, claim.created_at + w
    print(f"BOUND STORY {claim.name} uid={uid}", file=out)
    story = [(at, line) for at, line in timeline if start <= at <= end]
    for c in calls:
        if start <= c.at <= end and (uid in c.path.lower() or uid in repr(c.body).lower()):
            by = ((c.body or {}).get("volume") or {}).get("metadata", {}).get(names.META_CREATED_BY, "")
            story.append((c.at, f"cinder {c.method} {c.path[:90]} {c.operation} -> {c.status} {by}"))
    for r in requests:
        if start <= r.at <= end and not r.watch and r.method != "GET" and claim.name in r.path:
            story.append((r.at, f"kube {r.method} {r.path} -> {r.status}"))
    for at, line in sorted(story):
        print(f"    {at - claim.created_at:8.3f} {line}", file=out)


if __name__ == "__main__":
    sys.exit(main())
