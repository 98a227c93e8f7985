"""Real Ceph behind Cinder's own RBD driver: what the PV names is what the cluster holds (``cinder_real``).

The controller provisions through real Cinder 29, whose ``RBDDriver`` creates real images in a real
single-node Ceph; the ``rbd`` CLI then checks that the image the PV names exists in the pool the PV names
with the size the PV says, that the monitors in the PV are the cluster's, and that deleting the claim
removes the image.  VolumeSnapshots are RBD snapshots of that image, restores and clones are RBD
copy-on-write children (and Cinder 29's RBD driver leaks a clone's parent snapshot, shown and cleaned).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from provisioner import csi_contract
from provisioner.domain import names
from tests.e2e.ceph_world import CEPH_TYPE, CephCinder, ceph_world, pv_bytes, pv_image
from tests.e2e.test_snapshots import content_of, take_snapshot, vs_class, wait_ready
from tests.e2e.world import World, wait_for

pytestmark = pytest.mark.cinder_real

SNAP_GROUP = "snapshot.storage.k8s.io"


@pytest.fixture
def world(ceph_cinder: CephCinder) -> Iterator[World]:
    with ceph_world(ceph_cinder) as w:
        yield w


def _bound_pv(world: World, claim: str, timeout: float = 60.0) -> dict[str, Any]:
    world.wait_bound(claim, timeout=timeout)
    pv = world.pv_of(claim)
    assert pv is not None
    return pv


def _settles(read: Callable[[], Any], expected: Any, what: str, timeout: float = 60.0) -> None:
    """Wait until ``read()`` equals ``expected``; on timeout the message shows the last value."""
    deadline = time.monotonic() + timeout
    while (last := read()) != expected:
        assert time.monotonic() < deadline, f"{what}: still {last!r} after {timeout:g}s"
        time.sleep(0.1)


def _our_snapshots(world: World) -> list[str]:
    return [snap.id for snap in world.cinder.list_snapshots(metadata={names.META_CLUSTER: "e2e"})]


def _delete_claim(world: World, claim: str) -> None:
    pv = world.pv_of(claim)
    assert pv is not None
    world.kube.delete("persistentvolumeclaims", claim, namespace="default")
    wait_for(lambda: world.sim.get("persistentvolumes", "", pv["metadata"]["name"]) is None, 60, "PV gone")


@pytest.mark.parametrize("source", ["csi", "in-tree"])
def test_pv_names_the_image_pool_and_size_the_cluster_has(ceph_cinder: CephCinder, source: str) -> None:
    """rbd info finds the PV's image in the PV's pool at the PV's size, monitors match; delete removes it."""
    cluster = ceph_cinder.ceph
    with ceph_world(ceph_cinder) as world:
        world.create_class("ceph", {"type": CEPH_TYPE, "volumeSource": source})
        world.create_pvc("data", "ceph", size="1500Mi")
        pv = _bound_pv(world, "data")
        volume_id = pv["metadata"]["annotations"][names.ANN_VOLUME_ID]
        pool, image = pv_image(pv)
        assert (cluster.pool, f"volume-{volume_id}") == (pool, image)
        info = cluster.image_info(pool, image)
        assert info is not None, f"{pool}/{image} is not in the cluster"
        assert (2 << 30, 2 << 30) == (pv_bytes(pv), info["size"])
        monitors = (
            pv["spec"]["rbd"]["monitors"]
            if source == "in-tree"
            else list(csi_contract.decode(pv["spec"]["csi"]["volumeAttributes"]).monitors)  # type: ignore[union-attr]
        )
        assert [cluster.mon_v1] == monitors
        assert [image] == cluster.images(pool)

        _delete_claim(world, "data")
        wait_for(lambda: cluster.image_info(pool, image) is None, 30, f"{pool}/{image} removed")
        assert [] == cluster.images(pool)
        assert [] == world.our_volumes()


def test_snapshot_restore_and_clone_are_rbd_snapshots_and_children(
    world: World, ceph_cinder: CephCinder
) -> None:
    """A VolumeSnapshot is an RBD snapshot; restore and clone are COW children; deletes reach the pool."""
    cluster = ceph_cinder.ceph
    world.create_class("ceph", {"type": CEPH_TYPE, "volumeSource": "csi"})
    vs_class(world)
    world.create_pvc("src", "ceph", size="1Gi")
    src_pool, src_image = pv_image(_bound_pv(world, "src"))

    take_snapshot(world, "snap", "src")
    wait_ready(world, "snap", timeout=60)
    handle = content_of(world, "snap")["status"]["snapshotHandle"]
    snaps = {s["name"]: s["size"] for s in cluster.snapshots(src_pool, src_image)}
    assert {f"snapshot-{handle}": 1 << 30} == snaps

    world.create_pvc(
        "restored",
        "ceph",
        size="2Gi",
        data_source={"kind": "VolumeSnapshot", "name": "snap", "apiGroup": SNAP_GROUP},
    )
    restored = _bound_pv(world, "restored")
    r_pool, r_image = pv_image(restored)
    info = cluster.image_info(r_pool, r_image)
    assert info is not None
    parent = info.get("parent") or {}
    assert (src_pool, src_image, f"snapshot-{handle}") == (
        parent.get("pool"),
        parent.get("image"),
        parent.get("snapshot"),
    )
    assert (2 << 30, 2 << 30) == (pv_bytes(restored), info["size"])  # restore into a larger size: extended
    assert "snapshot" == csi_contract.decode(restored["spec"]["csi"]["volumeAttributes"]).content_source

    world.create_pvc(
        "clone", "ceph", size="1Gi", data_source={"kind": "PersistentVolumeClaim", "name": "src"}
    )
    clone = _bound_pv(world, "clone")
    c_pool, c_image = pv_image(clone)
    c_info = cluster.image_info(c_pool, c_image)
    assert c_info is not None
    c_parent = c_info.get("parent") or {}
    assert (src_pool, src_image, f"{c_image}.clone_snap") == (
        c_parent.get("pool"),
        c_parent.get("image"),
        c_parent.get("snapshot"),
    )
    assert {src_image, r_image, c_image} == set(cluster.images(src_pool))

    for claim in ("restored", "clone"):
        _delete_claim(world, claim)
    world.kube.delete("volumesnapshots", "snap", namespace="default")
    # Cinder 29's RBD driver removes a deleted clone on its fast path without dropping the source's
    # "<clone>.clone_snap" (only the slow path walks back to the parent), so that snapshot stays ...
    clone_snap = f"{c_image}.clone_snap"
    _settles(
        lambda: [s["name"] for s in cluster.snapshots(src_pool, src_image)], [clone_snap], "source snapshots"
    )
    # Cinder refuses to delete a volume while it still counts a snapshot record: wait for it to go.
    _settles(lambda: _our_snapshots(world), [], "Cinder snapshots")
    _delete_claim(world, "src")
    # ... and deleting the source then keeps it as a "silent" renamed image Cinder no longer knows.
    _settles(lambda: cluster.images(src_pool), [f"{src_image}.deleted"], "images in the pool")
    assert [] == world.our_volumes()
    # Clean the leak (an admin would) so the session's other tests start from an empty pool.
    cluster.rbd("snap", "unprotect", f"{src_pool}/{src_image}.deleted@{clone_snap}")
    cluster.rbd("snap", "rm", f"{src_pool}/{src_image}.deleted@{clone_snap}")
    cluster.rbd("rm", f"{src_pool}/{src_image}.deleted")
    assert [] == cluster.images(src_pool)
