"""Volume sources: clone of a claim, restore of a Cinder snapshot (backup teams), VolumeSnapshot restore."""

from __future__ import annotations

from typing import Any

import pytest

from provisioner import csi_contract
from provisioner.domain import names
from tests.e2e.world import World, wait_for


def volume_of(world: World, claim: str) -> Any:
    pv = world.pv_of(claim)
    assert pv is not None
    return world.cinder.get_volume(pv["metadata"]["annotations"][names.ANN_VOLUME_ID]), pv


def snapshot_of(world: World, claim: str, *, taken_in: str) -> Any:
    """An available Cinder snapshot of ``claim``'s volume, tagged as taken in namespace ``taken_in``."""
    src, _ = volume_of(world, claim)
    snap = world.cinder.create_snapshot(
        src.id,
        name=f"of-{claim}",
        force=True,
        metadata={names.META_CLUSTER: "e2e", names.META_PVC_NAMESPACE: taken_in},
    )
    wait_for(lambda: world.cinder.get_snapshot(snap.id).status == "available", 10, "snapshot available")
    return snap


@pytest.fixture
def sourced(world: World) -> World:
    world.start_replica()
    world.create_class("rbd", {"type": "rbd"})
    world.create_pvc("src", "rbd", size="2Gi")
    world.wait_bound("src")
    return world


def test_clone_of_a_claim(sourced: World) -> None:
    """dataSource PVC → a Cinder clone of its volume, marked so the node never formats it."""
    world = sourced
    src, _ = volume_of(world, "src")
    world.create_pvc("copy", "rbd", size="3Gi", data_source={"kind": "PersistentVolumeClaim", "name": "src"})
    world.wait_bound("copy")
    copy, pv = volume_of(world, "copy")
    assert src.id == copy.source_volid
    assert 3 == copy.size_gib
    target = csi_contract.decode(pv["spec"]["csi"]["volumeAttributes"])
    assert ("volume", True) == (target.content_source, target.grow_fs)


def test_restore_from_cinder_snapshot_annotation(sourced: World) -> None:
    """netvol.io/restore-from-snapshot with a snapshot of this cluster and namespace restores it."""
    world = sourced
    snap = snapshot_of(world, "src", taken_in="default")
    world.create_pvc("restored", "rbd", size="2Gi", annotations={names.ANN_RESTORE_FROM_SNAPSHOT: snap.id})
    world.wait_bound("restored")
    restored, pv = volume_of(world, "restored")
    assert snap.id == restored.snapshot_id
    assert "snapshot" == csi_contract.decode(pv["spec"]["csi"]["volumeAttributes"]).content_source


def test_restore_refuses_another_namespaces_snapshot(sourced: World) -> None:
    """A snapshot taken in another namespace is refused (tenant isolation): Warning, no volume."""
    world = sourced
    snap = snapshot_of(world, "src", taken_in="other-team")
    before = len(world.our_volumes())
    world.create_pvc("stolen", "rbd", annotations={names.ANN_RESTORE_FROM_SNAPSHOT: snap.id})
    wait_for(lambda: any(e["type"] == "Warning" for e in world.events_for("stolen")), 10, "warning")
    warning = next(e for e in world.events_for("stolen") if e["type"] == "Warning")
    assert names.ANN_RESTORE_FROM_SNAPSHOT in warning["message"]
    assert "namespace" in warning["message"]
    assert before == len(world.our_volumes())
    assert "Bound" != (world.pvc("stolen") or {}).get("status", {}).get("phase")


def test_restore_from_volume_snapshot(world: World) -> None:
    """dataSource VolumeSnapshot → the bound content's snapshotHandle is the Cinder snapshot restored.

    The snapshot is cut by our controller (the simulator's snapshot-controller only creates the content)."""
    world.start_replica()
    world.create_class("rbd", {"type": "rbd", "volumeSource": "csi"})
    world.create_pvc("src", "rbd")
    world.wait_bound("src")
    world.kube.create(
        "volumesnapshotclasses",
        {
            "apiVersion": "snapshot.storage.k8s.io/v1",
            "kind": "VolumeSnapshotClass",
            "metadata": {"name": "cinder"},
            "driver": names.CSI_DRIVER_NAME,
            "deletionPolicy": "Delete",
        },
    )
    world.kube.create(
        "volumesnapshots",
        {
            "apiVersion": "snapshot.storage.k8s.io/v1",
            "kind": "VolumeSnapshot",
            "metadata": {"name": "snap", "namespace": "default"},
            "spec": {"volumeSnapshotClassName": "cinder", "source": {"persistentVolumeClaimName": "src"}},
        },
        namespace="default",
    )
    wait_for(
        lambda: (
            ((world.sim.get("volumesnapshots", "default", "snap") or {}).get("status") or {}).get(
                "readyToUse"
            )
            is True
        ),
        15,
        "snapshot ready",
    )
    world.create_pvc(
        "restored",
        "rbd",
        data_source={"kind": "VolumeSnapshot", "name": "snap", "apiGroup": "snapshot.storage.k8s.io"},
    )
    world.wait_bound("restored")
    restored, _ = volume_of(world, "restored")
    assert restored.snapshot_id is not None
    assert [restored.snapshot_id] == [
        s.id for s in world.cinder.list_snapshots(volume_id=volume_of(world, "src")[0].id)
    ]
