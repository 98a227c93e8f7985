"""``cinder-provisioner audit`` against the simulator and the emulator: every finding kind made on purpose.

The real controller provisions claims; then each defect is made behind its back, through the official
clients (a volume deleted, a tag changed, an extend, an attachment removed, a Retain claim deleted …),
and the audit must report exactly those, exit 1, in every output format. A healthy cluster is clean (exit 0).
"""

from __future__ import annotations

import csv
import io
import json
import time
import uuid
from typing import Any

import pytest

from provisioner.audit.model import SCHEMA_VERSION, Kind
from provisioner.cli.audit import audit_command
from provisioner.cli.main import build_parser
from provisioner.domain import names
from provisioner.domain.model import CreateVolumeRequest
from tests.e2e.world import World, wait_for

DAY = 86400.0


def run_audit(world: World, *argv: str, wall_offset: float = 0.0) -> tuple[int, str, str]:
    """The audit command on the world's clients; (exit code, stdout, stderr)."""
    args = build_parser().parse_args(["audit", *argv])
    out, err = io.StringIO(), io.StringIO()
    code = audit_command(
        args,
        clouds=world.replicas[0].controller.ctx.clouds,
        kube=world.kube,
        cluster_id="e2e",
        default_cloud="default",
        provisioner_name=names.DEFAULT_PROVISIONER_NAME,
        out=out,
        err=err,
        wall=lambda: time.time() + wall_offset,
    )
    return code, out.getvalue(), err.getvalue()


def found(stdout: str) -> set[tuple[str, str]]:
    doc = json.loads(stdout)
    return {(f["kind"], f["cinder"]["id"] or f["kubernetes"]["name"]) for f in doc["findings"]}


def tagged(uid: str, *, pvc: str = "gone", cluster: str = "e2e") -> dict[str, str]:
    return {
        names.META_CLUSTER: cluster,
        names.META_PVC_NAMESPACE: "default",
        names.META_PVC_NAME: pvc,
        names.META_PVC_UID: uid,
        names.META_PV_NAME: f"pvc-{uid}",
        names.META_STORAGE_CLASS: "fast",
    }


def bound_volume(world: World, name: str) -> tuple[dict[str, Any], str]:
    world.wait_bound(name)
    wait_for(lambda: world.pv_of(name) is not None, 10, f"PV of {name}")
    pv = world.pv_of(name)
    assert pv is not None
    return pv, pv["metadata"]["annotations"][names.ANN_VOLUME_ID]


@pytest.fixture
def provisioned(world: World) -> World:
    world.start_replica()
    world.create_class("fast", {"type": "rbd", "volumeSource": "csi"})
    world.create_class("keep", {"type": "rbd", "volumeSource": "csi"}, reclaim="Retain")
    for name in ("healthy", "gone", "tagswap", "dup", "grown", "detached"):
        world.create_pvc(name, "fast")
    world.create_pvc("kept", "keep")
    for name in ("healthy", "gone", "tagswap", "dup", "grown", "detached", "kept"):
        bound_volume(world, name)
    wait_for(
        lambda: all(
            names.PVC_PROVISIONING_FINALIZER not in (world.pvc(n) or {})["metadata"].get("finalizers", [])
            for n in ("healthy", "gone", "tagswap", "dup", "grown", "detached", "kept")
        ),
        10,
        "intent finalizers removed",
    )
    return world


def test_healthy_cluster_is_clean(provisioned: World) -> None:
    """Bound claims with their volumes: no finding, exit 0, the table says so."""
    code, out, err = run_audit(provisioned)
    assert (0, "") == (code, err)
    assert "no findings" in out
    assert "7 volumes" in out


def test_every_finding_kind_made_on_purpose(provisioned: World) -> None:
    """Each defect made behind the controller's back is reported, and nothing else."""
    w = provisioned
    cinder = w.cinder
    # orphan-volume: a tagged volume whose claim never existed here
    orphan = cinder.create_volume(
        CreateVolumeRequest(name="pvc-orphan", size_gib=1, metadata=tagged("nouid"))
    )
    # missing-volume: the volume of a bound PV deleted behind the controller's back
    gone_pv, gone_vid = bound_volume(w, "gone")
    cinder.delete_attachment(gone_pv["metadata"]["annotations"][names.ANN_ATTACHMENT_ID])
    cinder.delete_volume(gone_vid)
    wait_for(lambda: gone_vid not in {v["id"] for v in w.emu.volumes()}, 5, "volume gone")
    # wrong-volume: the PV's volume now says it belongs to another claim
    _, swapped = bound_volume(w, "tagswap")
    cinder.set_volume_metadata(swapped, {names.META_PVC_UID: str(uuid.uuid4())})
    # duplicate: a second volume tagged with a bound claim's uid
    dup_uid = w.pvc("dup")["metadata"]["uid"]  # type: ignore[index]
    dup = cinder.create_volume(
        CreateVolumeRequest(name=f"pvc-{dup_uid}", size_gib=1, metadata=tagged(dup_uid, pvc="dup"))
    )
    # size-drift: extended in Cinder, the PV still says 1Gi
    _, grown = bound_volume(w, "grown")
    cinder.extend_volume(grown, 3)
    # attachment-drift: the PV's recorded attachment removed in Cinder
    detached_pv, detached = bound_volume(w, "detached")
    cinder.delete_attachment(detached_pv["metadata"]["annotations"][names.ANN_ATTACHMENT_ID])
    # released-retained: a Retain claim deleted
    kept_pv, kept = bound_volume(w, "kept")
    w.kube.delete("persistentvolumeclaims", "kept", namespace="default")
    wait_for(
        lambda: (
            ((w.sim.get("persistentvolumes", "", kept_pv["metadata"]["name"]) or {}).get("status") or {}).get(
                "phase"
            )
            == "Released"
        ),
        10,
        "Released",
    )
    # stuck: a volume Cinder never finishes creating (also an orphan: no claim has it)
    w.emu.faults.stuck_creating(name_pattern="pvc-stuck")
    stuck = cinder.create_volume(
        CreateVolumeRequest(name="pvc-stuck", size_gib=1, metadata=tagged("stuckuid"))
    )
    # orphan-snapshot: a tagged snapshot no VolumeSnapshotContent references
    _, healthy = bound_volume(w, "healthy")
    snap = cinder.create_snapshot(
        healthy, name="snapshot-x", metadata={names.META_CLUSTER: "e2e"}, force=True
    )
    # orphan-backup: a tagged backup no VolumeSnapshotContent references; a referenced one is fine
    backup = cinder.create_backup(healthy, name="backup-x", metadata={names.META_CLUSTER: "e2e"}, force=True)
    kept_backup = cinder.create_backup(
        healthy,
        name="backup-kept",
        metadata={names.META_CLUSTER: "e2e", names.META_CONTENT_NAME: "pre-backup"},
        force=True,
    )
    wait_for(lambda: cinder.get_backup(kept_backup.id).status == "available", 10, "backup available")
    w.kube.create(
        "volumesnapshotcontents",
        {
            "apiVersion": "snapshot.storage.k8s.io/v1",
            "kind": "VolumeSnapshotContent",
            "metadata": {"name": "pre-backup"},
            "spec": {
                "driver": names.CSI_DRIVER_NAME,
                "deletionPolicy": "Retain",
                "source": {"snapshotHandle": kept_backup.id},
                "volumeSnapshotRef": {"namespace": "default", "name": "pre-backup"},
            },
        },
    )
    # missing-snapshot: a pre-provisioned content naming a snapshot that does not exist
    missing_handle = str(uuid.uuid4())
    w.kube.create(
        "volumesnapshotcontents",
        {
            "apiVersion": "snapshot.storage.k8s.io/v1",
            "kind": "VolumeSnapshotContent",
            "metadata": {"name": "pre-missing"},
            "spec": {
                "driver": names.CSI_DRIVER_NAME,
                "deletionPolicy": "Retain",
                "source": {"snapshotHandle": missing_handle},
                "volumeSnapshotRef": {"namespace": "default", "name": "pre-missing"},
            },
        },
    )
    time.sleep(1.1)
    code, out, err = run_audit(w, "-o", "json", "--stuck-after", "1s")
    assert ("", 1) == (err, code)
    assert {
        (Kind.ORPHAN_VOLUME.value, orphan.id),
        (Kind.MISSING_VOLUME.value, gone_vid),
        (Kind.WRONG_VOLUME.value, swapped),
        (Kind.DUPLICATE.value, dup.id),
        (Kind.SIZE_DRIFT.value, grown),
        (Kind.ATTACHMENT_DRIFT.value, detached),
        (Kind.RELEASED_RETAINED.value, kept),
        (Kind.STUCK.value, stuck.id),
        (Kind.ORPHAN_VOLUME.value, stuck.id),
        (Kind.ORPHAN_SNAPSHOT.value, snap.id),
        (Kind.ORPHAN_BACKUP.value, backup.id),
        (Kind.MISSING_SNAPSHOT.value, missing_handle),
    } == found(out)
    doc = json.loads(out)
    assert SCHEMA_VERSION == doc["schema_version"]
    assert {"count": 1, "gib": 3} == doc["summary"]["by_kind"]["size-drift"]

    # --kind filters; CSV carries the same rows
    code, out, _ = run_audit(w, "-o", "csv", "--kind", "orphan-volume,duplicate", "--stuck-after", "1s")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert 1 == code
    assert {("orphan-volume", orphan.id), ("orphan-volume", stuck.id), ("duplicate", dup.id)} == {
        (r["kind"], r["cinder_id"]) for r in rows
    }


def test_errors_exit_2_and_say_why(provisioned: World) -> None:
    """A cloud that cannot be listed is exit 2 with one line naming it, even with findings elsewhere."""
    provisioned.emu.faults.fail_next("list_volumes", status=500, count=20)
    code, _, err = run_audit(provisioned)
    assert 2 == code
    assert "cloud default: cannot list volumes" in err


def test_bad_kind_is_exit_2_naming_the_flag(provisioned: World) -> None:
    """--kind with an unknown name: exit 2, the flag and the choices named."""
    code, _, err = run_audit(provisioned, "--kind", "orphans")
    assert 2 == code
    assert "--kind: unknown kind 'orphans'" in err
    code, _, err = run_audit(provisioned, "--fix", "missing-volume")
    assert 2 == code
    assert "--fix: unknown kind 'missing-volume'" in err
