"""VolumeSnapshots of our driver, end to end: simulator (common snapshot-controller) + emulator + a replica.

VolumeSnapshot → the common controller's content → our controller's Cinder snapshot (tagged) → ready →
a claim restored from it carries the source's content marker; deletion gives the snapshot back.
"""

from __future__ import annotations

from typing import Any

import pytest

from provisioner.domain import names
from provisioner.flows.snapshots import ANN_BEING_DELETED
from tests.e2e.world import World, wait_for

SNAP = "snapshot.storage.k8s.io/v1"
MISSING = "00000000-0000-0000-0000-000000000000"


def vs_class(world: World, name: str = "cinder", *, policy: str = "Delete", **params: str) -> None:
    world.kube.create(
        "volumesnapshotclasses",
        {
            "apiVersion": SNAP,
            "kind": "VolumeSnapshotClass",
            "metadata": {"name": name},
            "driver": names.CSI_DRIVER_NAME,
            "deletionPolicy": policy,
            "parameters": params,
        },
    )


def take_snapshot(world: World, name: str, claim: str, vs_class_name: str = "cinder") -> None:
    world.kube.create(
        "volumesnapshots",
        {
            "apiVersion": SNAP,
            "kind": "VolumeSnapshot",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {
                "volumeSnapshotClassName": vs_class_name,
                "source": {"persistentVolumeClaimName": claim},
            },
        },
        namespace="default",
    )


def vs(world: World, name: str) -> dict[str, Any]:
    return world.sim.get("volumesnapshots", "default", name) or {}


def content_of(world: World, name: str) -> dict[str, Any]:
    bound = (vs(world, name).get("status") or {}).get("boundVolumeSnapshotContentName")
    return (world.sim.get("volumesnapshotcontents", "", bound) or {}) if bound else {}


def wait_ready(world: World, name: str, timeout: float = 15.0) -> dict[str, Any]:
    wait_for(
        lambda: (vs(world, name).get("status") or {}).get("readyToUse") is True, timeout, f"{name} ready"
    )
    return vs(world, name)


def our_snapshots(world: World) -> list[Any]:
    return list(world.cinder.list_snapshots(metadata={names.META_CLUSTER: "e2e"}))


@pytest.fixture
def snapshots(world: World) -> World:
    world.start_replica()
    world.create_class("rbd", {"type": "rbd", "volumeSource": "csi"})
    world.create_pvc("src", "rbd", size="2Gi")
    world.wait_bound("src")
    vs_class(world)
    return world


def source_volume_id(world: World) -> str:
    pv = world.pv_of("src")
    assert pv is not None
    return str(pv["spec"]["csi"]["volumeHandle"])


def test_volume_snapshot_is_a_tagged_cinder_snapshot_and_restores_the_content(snapshots: World) -> None:
    """VolumeSnapshot → Cinder snapshot (tags, name) → ready status → restore keeps the content marker."""
    world = snapshots
    world.emu.write_content(source_volume_id(world), "marker-42")
    take_snapshot(world, "snap", "src")
    ready = wait_ready(world, "snap")
    content = content_of(world, "snap")
    handle = content["status"]["snapshotHandle"]
    snap = world.cinder.get_snapshot(handle)
    uid = ready["metadata"]["uid"]
    assert (f"snapshot-{uid}", source_volume_id(world), "available") == (
        snap.name,
        snap.volume_id,
        snap.status,
    )
    assert {
        names.META_CLUSTER: "e2e",
        names.META_PVC_NAMESPACE: "default",
        names.META_PVC_NAME: "src",
        names.META_SNAPSHOT_NAME: "snap",
        names.META_SNAPSHOT_UID: uid,
        names.META_CONTENT_NAME: content["metadata"]["name"],
    }.items() <= dict(snap.metadata).items()
    assert ("2Gi", 2 * 2**30) == (ready["status"]["restoreSize"], content["status"]["restoreSize"])
    assert names.CONTENT_SNAPSHOT_FINALIZER in content["metadata"]["finalizers"]
    world.create_pvc(
        "restored",
        "rbd",
        size="2Gi",
        data_source={"kind": "VolumeSnapshot", "name": "snap", "apiGroup": "snapshot.storage.k8s.io"},
    )
    world.wait_bound("restored")
    pv = world.pv_of("restored")
    assert pv is not None
    restored = world.cinder.get_volume(pv["spec"]["csi"]["volumeHandle"])
    assert (handle, "marker-42") == (restored.snapshot_id, world.emu.content(restored.id))
    created = [e for e in world.events_for("snap") if e["reason"] == "SnapshotCreated"]
    assert [handle in created[0]["message"]] == [True]


def test_deleting_the_volume_snapshot_deletes_the_cinder_snapshot(snapshots: World) -> None:
    """deletionPolicy Delete: VolumeSnapshot gone → content gone → Cinder snapshot gone."""
    world = snapshots
    take_snapshot(world, "snap", "src")
    wait_ready(world, "snap")
    content_name = content_of(world, "snap")["metadata"]["name"]
    assert 1 == len(our_snapshots(world))
    world.kube.delete("volumesnapshots", "snap", namespace="default")
    wait_for(lambda: not our_snapshots(world), 15, "Cinder snapshot deleted")
    wait_for(lambda: world.sim.get("volumesnapshotcontents", "", content_name) is None, 15, "content gone")
    wait_for(lambda: world.sim.get("volumesnapshots", "default", "snap") is None, 15, "snapshot gone")


def test_retain_policy_keeps_the_cinder_snapshot(snapshots: World) -> None:
    """deletionPolicy Retain: the VolumeSnapshot goes, the content and the Cinder snapshot stay."""
    world = snapshots
    vs_class(world, "keep", policy="Retain")
    take_snapshot(world, "kept", "src", "keep")
    wait_ready(world, "kept")
    content_name = content_of(world, "kept")["metadata"]["name"]
    world.kube.delete("volumesnapshots", "kept", namespace="default")
    wait_for(lambda: world.sim.get("volumesnapshots", "default", "kept") is None, 15, "snapshot gone")
    content = world.sim.get("volumesnapshotcontents", "", content_name)
    assert content is not None
    assert ANN_BEING_DELETED not in (content["metadata"].get("annotations") or {})
    assert ["available"] == [s.status for s in our_snapshots(world)]
    # the admin deletes the retained content: the Cinder snapshot is still kept (Retain)
    world.kube.delete("volumesnapshotcontents", content_name)
    wait_for(lambda: world.sim.get("volumesnapshotcontents", "", content_name) is None, 15, "content gone")
    assert ["available"] == [s.status for s in our_snapshots(world)]


def test_pre_provisioned_content_is_validated_and_marked_ready(snapshots: World) -> None:
    """An existing Cinder snapshot as a content's snapshotHandle: ready with its size; a bad id errors."""
    world = snapshots
    existing = world.cinder.create_snapshot(
        source_volume_id(world), name="by-admin", metadata={names.META_CLUSTER: "e2e"}, force=True
    )
    wait_for(lambda: world.cinder.get_snapshot(existing.id).status == "available", 10, "admin snapshot")
    for content_name, handle in (
        ("static", existing.id),
        ("missing", MISSING),
    ):
        world.kube.create(
            "volumesnapshotcontents",
            {
                "apiVersion": SNAP,
                "kind": "VolumeSnapshotContent",
                "metadata": {"name": content_name},
                "spec": {
                    "driver": names.CSI_DRIVER_NAME,
                    "deletionPolicy": "Retain",
                    "source": {"snapshotHandle": handle},
                    "volumeSnapshotRef": {"name": content_name, "namespace": "default"},
                },
            },
        )
        world.kube.create(
            "volumesnapshots",
            {
                "apiVersion": SNAP,
                "kind": "VolumeSnapshot",
                "metadata": {"name": content_name, "namespace": "default"},
                "spec": {"source": {"volumeSnapshotContentName": content_name}},
            },
            namespace="default",
        )
    ready = wait_ready(world, "static")
    assert ("2Gi", existing.id) == (
        ready["status"]["restoreSize"],
        content_of(world, "static")["status"]["snapshotHandle"],
    )
    wait_for(lambda: bool((vs(world, "missing").get("status") or {}).get("error")), 15, "error on missing")
    message = vs(world, "missing")["status"]["error"]["message"]
    assert f"spec.source.snapshotHandle: Cinder snapshot {MISSING} does not exist" == message
    assert False is vs(world, "missing")["status"]["readyToUse"]


def test_backup_class_makes_an_incremental_chain_of_cinder_backups(snapshots: World) -> None:
    """type: backup → a tagged Cinder backup; the second one of the volume is incremental; delete → gone."""
    world = snapshots
    vs_class(world, "backups", **{"type": "backup", "incremental": "true", "force-create": "true"})
    take_snapshot(world, "full", "src", "backups")
    wait_ready(world, "full")
    full = world.cinder.get_backup(content_of(world, "full")["status"]["snapshotHandle"])
    take_snapshot(world, "incr", "src", "backups")
    ready = wait_ready(world, "incr")
    incr = world.cinder.get_backup(content_of(world, "incr")["status"]["snapshotHandle"])
    assert (False, True) == (full.is_incremental, incr.is_incremental)
    assert (f"snapshot-{ready['metadata']['uid']}", "incr") == (
        incr.name,
        incr.metadata[names.META_SNAPSHOT_NAME],
    )
    assert "backup" == content_of(world, "incr")["metadata"]["annotations"][names.ANN_SNAPSHOT_KIND]
    assert [] == our_snapshots(world)  # backups, not snapshots
    world.kube.delete("volumesnapshots", "incr", namespace="default")
    wait_for(
        lambda: [full.id] == [b.id for b in world.cinder.list_backups(metadata={names.META_CLUSTER: "e2e"})],
        15,
        "incremental backup deleted",
    )


def test_backup_class_on_a_cloud_without_backup_service_says_so(snapshots: World) -> None:
    world = snapshots
    world.emu.backup_service_up = False
    vs_class(world, "backups", type="backup")
    take_snapshot(world, "b", "src", "backups")
    wait_for(lambda: bool((vs(world, "b").get("status") or {}).get("error")), 15, "error")
    assert (
        "parameters.type: backup, but this cloud runs no cinder-backup service"
        == vs(world, "b")["status"]["error"]["message"]
    )
