"""Filesystems grow with the volume, bytes intact, on real Ceph (``cinder_real``).

The same node as ``test_real_ceph_integrity.py`` (the node agent over gRPC; ``rbd device map`` is the
rbd-fuse + loop stand-in, see ``tests/e2e/ceph_node.py``), for the two ways a volume gets bigger:

* **restore into a larger size**: a 1Gi claim is written, snapshotted, and a 2Gi claim restored from the
  VolumeSnapshot (Cinder creates it from the snapshot and extends the RBD clone; the PV says ``growFs``);
  NodeStage mounts it and grows the filesystem to the 2 GiB device: the same files on the same filesystem;
* **online expansion of a staged volume**: the claim is staged and published, its class allows expansion,
  the claim is resized 1Gi → 2Gi; our controller extends the attached (``in-use``) Cinder volume (allowed
  from microversion 3.42; the RBD image grows), the claim gets ``FileSystemResizePending``; the test plays
  the kubelet: NodeExpandVolume through the agent (the device follows the image as krbd does, the agent
  grows the mounted filesystem), then the kubelet's status writes. The filesystem is 2 GiB and usable (a
  1.5 GiB file fits), the files and the filesystem UUID are unchanged.

Each runs with XFS (``xfs_growfs``) and ext4 (``resize2fs``).  Both grow online, as a node does; ext4's
online resize (``EXT4_IOC_RESIZE_FS``) needs ``CAP_SYS_RESOURCE``, which the node agent's privileged
container has but a sandbox may not (resize2fs then answers "Permission denied to resize filesystem"), so
the ext4 runs skip, saying so, where the capability is missing.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from provisioner.domain import names
from provisioner.flows.expand import ANN_PRE_RESIZE_CAPACITY
from provisioner.testworld import objects
from tests.e2e.ceph_node import (
    NOTHING_LEFT,
    CephNode,
    checksums,
    digests,
    fs_bytes,
    fs_uuid,
    sample_files,
    write_files,
)
from tests.e2e.ceph_world import CEPH_TYPE, CephCinder, ceph_world, pv_bytes, pv_image
from tests.e2e.test_expand import conditions, resize
from tests.e2e.test_snapshots import take_snapshot, vs_class, wait_ready
from tests.e2e.world import World, wait_for

pytestmark = pytest.mark.cinder_real

GIB = 1 << 30
SNAP_GROUP = "snapshot.storage.k8s.io"
OURS = {names.META_CLUSTER: "e2e"}
#: Bit of CAP_SYS_RESOURCE in /proc/self/status CapEff (linux/capability.h).
CAP_SYS_RESOURCE = 24


def _online_grow_blocker(fs_type: str) -> str:
    """Why this machine cannot grow a mounted ``fs_type`` filesystem ("" when it can)."""
    if fs_type not in ("ext2", "ext3", "ext4"):
        return ""
    status = Path("/proc/self/status").read_text()
    effective = int(next(line.split()[1] for line in status.splitlines() if line.startswith("CapEff:")), 16)
    if effective & (1 << CAP_SYS_RESOURCE):
        return ""
    return (
        f"online {fs_type} resize (EXT4_IOC_RESIZE_FS) needs CAP_SYS_RESOURCE, which this machine does not "
        "grant (not in the bounding set): resize2fs answers 'Permission denied to resize filesystem'"
    )


@pytest.fixture(params=["xfs", "ext4"])
def fs_type(request: pytest.FixtureRequest) -> str:
    blocker = _online_grow_blocker(request.param)
    if blocker:
        pytest.skip(blocker)
    return str(request.param)


@pytest.fixture
def world(ceph_cinder: CephCinder) -> Iterator[World]:
    with ceph_world(ceph_cinder) as w:
        yield w


def _expandable_ceph_class(world: World) -> None:
    body = objects.storage_class("ceph", {"type": CEPH_TYPE, "volumeSource": "csi"})
    body["allowVolumeExpansion"] = True
    world.kube.create("storageclasses", body)


def _bound_pv(world: World, claim: str, timeout: float = 60.0) -> dict[str, Any]:
    world.wait_bound(claim, timeout=timeout)
    pv = world.pv_of(claim)
    assert pv is not None
    return pv


def _delete_claim(world: World, claim: str) -> None:
    world.kube.delete("persistentvolumeclaims", claim, namespace="default")
    wait_for(lambda: world.pv_of(claim) is None and world.pvc(claim) is None, 60, f"{claim} gone")


def _image_bytes(ceph_cinder: CephCinder, pv: dict[str, Any]) -> int:
    info = ceph_cinder.ceph.image_info(*pv_image(pv))
    assert info is not None, f"{pv_image(pv)} is not in the cluster"
    return int(info["size"])


def test_restore_into_a_larger_size_grows_the_filesystem(
    fs_type: str, world: World, ceph_node: CephNode, ceph_cinder: CephCinder
) -> None:
    """1Gi written → VolumeSnapshot → 2Gi restore → stage: the filesystem fills 2 GiB, same files and UUID."""
    cluster, node = ceph_cinder.ceph, ceph_node
    world.create_class("ceph", {"type": CEPH_TYPE, "volumeSource": "csi"})
    world.create_pvc("src", "ceph", size="1Gi")
    src_pv = _bound_pv(world, "src")
    staging = node.stage(src_pv, fs_type)
    files = sample_files(seed=7)
    expected = digests(files)
    assert expected == write_files(staging, files)
    src_uuid, src_fs = fs_uuid(staging), fs_bytes(staging)
    assert src_fs <= GIB
    node.unstage(src_pv)

    vs_class(world)
    take_snapshot(world, "snap", "src")
    wait_ready(world, "snap", timeout=60)
    world.create_pvc(
        "bigger",
        "ceph",
        size="2Gi",
        data_source={"kind": "VolumeSnapshot", "name": "snap", "apiGroup": SNAP_GROUP},
    )
    bigger_pv = _bound_pv(world, "bigger")
    assert "true" == bigger_pv["spec"]["csi"]["volumeAttributes"]["growFs"]
    assert (2 * GIB, 2 * GIB) == (pv_bytes(bigger_pv), _image_bytes(ceph_cinder, bigger_pv))

    staged = node.stage(bigger_pv, fs_type)
    assert 2 * GIB == node.device_bytes(staged)
    grown = fs_bytes(staged)
    assert src_fs + (GIB * 9 // 10) < grown <= 2 * GIB, f"the filesystem is {grown} bytes, was {src_fs}"
    assert expected == checksums(staged, list(expected))
    assert src_uuid == fs_uuid(staged), "the restored volume was reformatted"
    node.unstage(bigger_pv)
    assert NOTHING_LEFT == node.leftovers()

    _delete_claim(world, "bigger")
    world.kube.delete("volumesnapshots", "snap", namespace="default")
    wait_for(lambda: not list(world.cinder.list_snapshots(metadata=OURS)), 60, "Cinder snapshot gone")
    _delete_claim(world, "src")
    wait_for(lambda: not cluster.images(cluster.pool), 60, "every image gone")


def _kubelet_finishes_resize(world: World, claim: str, pv_name: str, capacity: str) -> None:
    """What the kubelet writes after NodeExpandVolume succeeded (see tests/e2e/test_expand.py)."""
    pvc = world.pvc(claim)
    assert pvc is not None
    kept = [c for c in pvc["status"].get("conditions") or [] if c["type"] != "FileSystemResizePending"]
    world.kube.patch(
        "persistentvolumeclaims",
        claim,
        {
            "status": {
                "capacity": {"storage": capacity},
                "conditions": kept,
                "allocatedResourceStatuses": None,
            }
        },
        namespace="default",
        subresource="status",
    )
    world.kube.patch(
        "persistentvolumes", pv_name, {"metadata": {"annotations": {ANN_PRE_RESIZE_CAPACITY: None}}}
    )


def test_online_expansion_of_a_staged_volume(
    fs_type: str, world: World, ceph_node: CephNode, ceph_cinder: CephCinder
) -> None:
    """Staged + published 1Gi → resize 2Gi → Cinder extends in use → NodeExpandVolume: 2 GiB, bytes kept."""
    cluster, node = ceph_cinder.ceph, ceph_node
    _expandable_ceph_class(world)
    world.create_pvc("data", "ceph", size="1Gi")
    pv = _bound_pv(world, "data")
    volume_id = pv["metadata"]["annotations"][names.ANN_VOLUME_ID]
    staging = node.stage(pv, fs_type)
    mounted = node.publish(pv, fs_type)
    files = sample_files(seed=3)
    expected = digests(files)
    assert expected == write_files(mounted, files)
    uuid, old_fs = fs_uuid(staging), fs_bytes(mounted)
    assert "in-use" == world.cinder.get_volume(volume_id).status  # exported at provision time

    resize(world, "data", "2Gi")
    wait_for(
        lambda: "FileSystemResizePending" in conditions(world.pvc("data")), 60, "FileSystemResizePending"
    )
    volume = world.cinder.get_volume(volume_id)
    assert (2, "in-use") == (volume.size_gib, volume.status)
    pv = world.pv_of("data") or {}
    assert {"storage": "2Gi"} == pv["spec"]["capacity"]
    assert 2 * GIB == _image_bytes(ceph_cinder, pv)
    # the block device follows the image as krbd's header watch makes it (the stand-in's follower)
    deadline = time.monotonic() + 10
    while node.device_bytes(staging) != 2 * GIB and time.monotonic() < deadline:
        time.sleep(0.1)
    assert 2 * GIB == node.device_bytes(staging)
    assert old_fs == fs_bytes(mounted), "nothing grew the filesystem yet"

    assert 2 * GIB == node.expand(pv, 2 * GIB)
    grown = fs_bytes(mounted)
    assert old_fs + (GIB * 9 // 10) < grown <= 2 * GIB, f"the filesystem is {grown} bytes, was {old_fs}"
    assert fs_bytes(staging) == grown  # one filesystem, seen through both mounts
    _kubelet_finishes_resize(world, "data", pv["metadata"]["name"], "2Gi")
    world.sim.wait_idle()
    pvc = world.pvc("data") or {}
    assert ({"storage": "2Gi"}, []) == (pvc["status"]["capacity"], conditions(pvc))

    # the new space is there to use, and nothing written before moved
    with open(mounted / "fill.bin", "wb") as f:
        os.posix_fallocate(f.fileno(), 0, GIB * 3 // 2)
    (mounted / "fill.bin").unlink()
    assert expected == checksums(mounted, list(expected))
    assert uuid == fs_uuid(staging), "the expanded volume was reformatted"
    node.unpublish(pv)
    node.unstage(pv)
    assert NOTHING_LEFT == node.leftovers()
    # staged again from scratch (a new map): still 2 GiB, still the same files
    staged = node.stage(pv, fs_type)
    assert (grown, expected) == (fs_bytes(staged), checksums(staged, list(expected)))
    node.unstage(pv)

    reasons = [(e["type"], e["reason"]) for e in world.events_for("data")]
    assert [] == [r for t, r in reasons if t == "Warning"]
    _delete_claim(world, "data")
    wait_for(lambda: not cluster.images(cluster.pool), 60, "every image gone")
    wait_for(lambda: not world.our_volumes(), 60, "no Cinder volume of ours left")
