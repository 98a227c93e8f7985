"""Bytes survive snapshot → restore, clone and backup → restore, end to end on real Ceph (``cinder_real``).

The controller provisions on real Cinder's RBD driver; the node agent (``cinder-attach serve`` over its
gRPC socket, the way kubelet drives it) stages the PV: its ``rbd device map`` is the real-parts stand-in
``tests/fakes/realbin/rbd`` (``rbd-fuse`` exposes the real image, a loop device makes it a block device),
then real mkfs.ext4 and mount (``tests/e2e/ceph_node.py``).  Files with known checksums are written and
the volume is unstaged; then a copy is made through the product and staged: the checksums match and the
filesystem is the same one (same UUID: never reformatted).  The copies:

* a VolumeSnapshot cut by our snapshot controller (an RBD snapshot), a claim restored from it (an RBD
  clone);
* a clone: a claim whose ``dataSource`` is the source claim (Cinder's RBD clone of the volume);
* a Cinder backup made the backup team's way (``cinder-provisioner snapshot create --backup --wait``: a
  VolumeSnapshot on the backup class, cinder-backup's posix driver writes it as files) and restored with
  ``cinder-provisioner restore --backup ID --to … --wait`` (Cinder creates the volume from the backup).

Restores into a larger size and online expansion, where the filesystem must grow too, are in
``test_real_ceph_grow.py``.  After each test nothing (mount, loop device, FUSE mount, rbd-fuse process,
stash) is left on the node and no image in the pool.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from provisioner.domain import names
from tests.e2e.ceph_node import (
    NOTHING_LEFT,
    CephNode,
    checksums,
    digests,
    fs_uuid,
    sample_files,
    write_files,
)
from tests.e2e.ceph_world import CEPH_TYPE, CephCinder, ceph_world, pv_image, reap_deleted_images
from tests.e2e.test_restore_docs import execute
from tests.e2e.test_snapshots import take_snapshot, vs_class, wait_ready
from tests.e2e.world import World, wait_for

pytestmark = pytest.mark.cinder_real

ROOT = Path(__file__).resolve().parents[2]
SNAP_GROUP = "snapshot.storage.k8s.io"
OURS = {names.META_CLUSTER: "e2e"}


@pytest.fixture
def world(ceph_cinder: CephCinder) -> Iterator[World]:
    with ceph_world(ceph_cinder) as w:
        yield w


def _bound_pv(world: World, claim: str, timeout: float = 60.0) -> dict[str, Any]:
    world.wait_bound(claim, timeout=timeout)
    pv = world.pv_of(claim)
    assert pv is not None
    return pv


def _source_with_files(world: World, node: CephNode) -> tuple[dict[str, Any], dict[str, str], str]:
    """A bound 1Gi claim ``src`` staged, the sample files written, unstaged: (PV, sha256s, fs UUID)."""
    world.create_class("ceph", {"type": CEPH_TYPE, "volumeSource": "csi"})
    world.create_pvc("src", "ceph", size="1Gi")
    src_pv = _bound_pv(world, "src")
    staging = node.stage(src_pv)
    files = sample_files(seed=12)
    expected = digests(files)
    assert expected == write_files(staging, files)
    uuid = fs_uuid(staging)
    node.unstage(src_pv)
    assert NOTHING_LEFT == node.leftovers()
    return src_pv, expected, uuid


def _assert_same_bytes(node: CephNode, pv: dict[str, Any], expected: dict[str, str], uuid: str) -> None:
    """Staged, the copy holds every file with its checksum on the very filesystem written (not remade)."""
    staged = node.stage(pv)
    assert expected == checksums(staged, list(expected))
    assert uuid == fs_uuid(staged), "the copy was reformatted"
    node.unstage(pv)
    assert NOTHING_LEFT == node.leftovers()


def _delete_claim(world: World, claim: str) -> None:
    world.kube.delete("persistentvolumeclaims", claim, namespace="default")
    wait_for(lambda: world.pv_of(claim) is None and world.pvc(claim) is None, 60, f"{claim} gone")


def test_checksums_survive_snapshot_and_restore(
    world: World, ceph_node: CephNode, ceph_cinder: CephCinder
) -> None:
    """Stage → write → unstage → VolumeSnapshot → restore → stage: the same bytes on the same filesystem."""
    cluster, node = ceph_cinder.ceph, ceph_node
    src_pv, expected, src_uuid = _source_with_files(world, node)
    pool, image = pv_image(src_pv)
    calls = node.rbd_calls()
    assert [["help", "device", "map"], ["device", "map"], ["device", "unmap"]] == [
        c[:3] if c[0] == "help" else c[:2] for c in calls
    ]
    assert f"{pool}/{image}" == calls[1][-1]
    assert cluster.mon_v1 == calls[1][calls[1].index("-m") + 1]
    # the bytes are in Ceph: the image is no longer sparse where we wrote
    assert int(
        json.loads(cluster.rbd("du", "--format", "json", f"{pool}/{image}"))["images"][0]["used_size"]
    ) > (24 << 20)

    vs_class(world)
    take_snapshot(world, "snap", "src")
    wait_ready(world, "snap", timeout=60)
    world.create_pvc(
        "restored",
        "ceph",
        size="1Gi",
        data_source={"kind": "VolumeSnapshot", "name": "snap", "apiGroup": SNAP_GROUP},
    )
    restored_pv = _bound_pv(world, "restored")
    assert pv_image(restored_pv) != (pool, image)
    _assert_same_bytes(node, restored_pv, expected, src_uuid)

    _delete_claim(world, "restored")
    world.kube.delete("volumesnapshots", "snap", namespace="default")
    wait_for(lambda: not cluster.snapshots(pool, image), 60, "RBD snapshot gone")
    wait_for(lambda: not list(world.cinder.list_snapshots(metadata=OURS)), 60, "snapshot gone")
    _delete_claim(world, "src")
    wait_for(lambda: not cluster.images(pool), 60, "every image gone")


def test_checksums_survive_a_clone(world: World, ceph_node: CephNode, ceph_cinder: CephCinder) -> None:
    """A claim cloned from the written claim (dataSource PVC) holds the same bytes on the same filesystem."""
    cluster, node = ceph_cinder.ceph, ceph_node
    src_pv, expected, src_uuid = _source_with_files(world, node)
    pool, image = pv_image(src_pv)

    world.create_pvc(
        "clone", "ceph", size="1Gi", data_source={"kind": "PersistentVolumeClaim", "name": "src"}
    )
    clone_pv = _bound_pv(world, "clone")
    c_pool, c_image = pv_image(clone_pv)
    assert (pool, image) != (c_pool, c_image)
    info = cluster.image_info(c_pool, c_image)
    assert info is not None
    assert image == (info.get("parent") or {}).get("image"), "the clone is a child of the source image"
    _assert_same_bytes(node, clone_pv, expected, src_uuid)
    # the clone is writable and its own: what it gets is not in the source
    staged = node.stage(clone_pv)
    (staged / "only-in-clone").write_bytes(b"clone")
    node.unstage(clone_pv)
    staged = node.stage(src_pv)
    assert not (staged / "only-in-clone").exists()
    assert expected == checksums(staged, list(expected))
    node.unstage(src_pv)

    _delete_claim(world, "clone")
    _delete_claim(world, "src")
    wait_for(lambda: cluster.images(pool) == [f"{image}.deleted"], 60, "only the source's leaked image left")
    assert [f"{image}.deleted"] == reap_deleted_images(cluster, pool)  # Cinder 29's clone leak (see there)
    assert [] == cluster.images(pool)
    wait_for(lambda: not world.our_volumes(), 60, "no Cinder volume of ours left")


def _cli_env(world: World, tmp_path: Path) -> dict[str, str]:
    """The backup team's environment: a kubeconfig for the simulator and the provisioner's config."""
    config = tmp_path / "provisioner.yaml"
    config.write_text(yaml.safe_dump({"cluster_id": "e2e", "clouds": {"default": world.cloud}}))
    kubeconfig = world.sim.write_kubeconfig(tmp_path / "kubeconfig")
    return {"KUBECONFIG": str(kubeconfig), "CINDER_PROVISIONER_CONFIG": str(config)}


def _backup_files(ceph_cinder: CephCinder, backup_id: str) -> list[Path]:
    """The files of one backup in cinder-backup's posix store (``backup_posix_path`` of the launcher)."""
    store = Path(ceph_cinder.cinder.log_path).parent / "backups"
    return sorted(p for p in store.rglob(f"*{backup_id}*") if p.is_file())


def _cli(env: dict[str, str], command: str) -> str:
    started = time.monotonic()
    done = execute(command, env)
    print(f"\n{command}: exit {done.returncode} in {time.monotonic() - started:.1f} s")
    assert 0 == done.returncode, f"{command}\n{done.stderr}"
    return done.stdout


def test_checksums_survive_a_backup_and_its_restore(
    world: World, ceph_node: CephNode, ceph_cinder: CephCinder, tmp_path: Path
) -> None:
    """snapshot create --backup --wait → restore --backup ID --wait → stage: same bytes, same filesystem."""
    cluster, node = ceph_cinder.ceph, ceph_node
    src_pv, expected, src_uuid = _source_with_files(world, node)
    pool, image = pv_image(src_pv)
    world.kube.create(
        "volumesnapshotclasses",
        yaml.safe_load((ROOT / "config" / "volumesnapshotclass-cinder-backup.yaml").read_text()),
    )
    env = _cli_env(world, tmp_path)

    _cli(env, "cinder-provisioner snapshot create default/src --name nightly --backup --wait --timeout 180")
    rows = json.loads(_cli(env, "cinder-provisioner snapshots default/src -o json"))
    backups = [r for r in rows if r["kind"] == "backup"]
    assert ["default/nightly"] == [r["volumesnapshot"] for r in backups]
    backup = world.cinder.get_backup(backups[0]["id"])
    assert ("available", 1) == (backup.status, backup.size_gib)
    # the backup is cinder-backup's files in its posix store (chunks, metadata, sha256 file)
    assert len(_backup_files(ceph_cinder, backup.id)) > 2

    _cli(env, f"cinder-provisioner restore --backup {backup.id} --to default/from-backup --wait")
    restored_pv = _bound_pv(world, "from-backup")
    volume = world.cinder.get_volume(restored_pv["metadata"]["annotations"][names.ANN_VOLUME_ID])
    assert backup.id == volume.metadata[names.META_RESTORED_FROM_BACKUP]
    _assert_same_bytes(node, restored_pv, expected, src_uuid)

    _delete_claim(world, "from-backup")
    world.kube.delete("volumesnapshots", "nightly", namespace="default")
    wait_for(lambda: not list(world.cinder.list_backups(metadata=OURS)), 120, "backup gone")
    assert [] == _backup_files(ceph_cinder, backup.id)
    _delete_claim(world, "src")
    # cinder-backup copied the in-use source through a temporary RBD clone: Cinder 29's clone leak again
    wait_for(lambda: cluster.images(pool) == [f"{image}.deleted"], 60, "only the source's leaked image left")
    assert [f"{image}.deleted"] == reap_deleted_images(cluster, pool)
    wait_for(lambda: not world.our_volumes(), 60, "no Cinder volume of ours left")
