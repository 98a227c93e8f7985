"""Bytes survive snapshot → restore, end to end on real Ceph (``cinder_real``).

The controller provisions on real Cinder's RBD driver; the node agent (``cinder-attach serve`` over its
gRPC socket, the way kubelet drives it) stages the PV: its ``rbd device map`` is the real-parts stand-in
``tests/fakes/realbin/rbd`` (``rbd-fuse`` exposes the real image, a loop device makes it a block device),
then real mkfs.ext4 and mount.  Files with known checksums are written, the volume is unstaged, a
VolumeSnapshot is cut through our snapshot controller (an RBD snapshot), a claim is restored from it (an
RBD clone) and staged: the checksums match and the filesystem is the same one (never reformatted).
(A restore into a larger size stages up to the online grow, where resize2fs answers "Permission denied to
resize filesystem" on the FUSE-backed loop device: not covered yet.)  Nothing (mount, loop device, FUSE
mount, rbd-fuse process, stash) is left behind.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.ceph_world import CEPH_TYPE, CephCinder, ceph_world, pv_image, require
from tests.e2e.test_attach_grpc import Agent, mount_cap, pb2
from tests.e2e.test_snapshots import take_snapshot, vs_class, wait_ready
from tests.e2e.world import World, wait_for
from tests.fakes.world import FakeWorld, can_use_loop_devices

pytestmark = pytest.mark.cinder_real

REALBIN = Path(__file__).resolve().parent.parent / "fakes" / "realbin"
SNAP_GROUP = "snapshot.storage.k8s.io"


def _node_parts_missing() -> list[str]:
    missing = [
        t for t in ("rbd-fuse", "fusermount3", "losetup", "mkfs.ext4", "resize2fs") if not shutil.which(t)
    ]
    if not os.path.exists("/dev/fuse"):
        missing.append("/dev/fuse")
    if not can_use_loop_devices():
        missing.append("root + /dev/loop-control")
    return missing


class Node:
    """A node whose ``rbd`` is the rbd-fuse + loop stand-in, with the agent serving CSI on a socket."""

    def __init__(self, root: Path) -> None:
        self.fake = FakeWorld(root, fake_fs=False, loop=True)
        self.standin = root / "rbd-standin"
        env = self.fake.env
        env["PATH"] = os.pathsep.join([env["PATH"].split(os.pathsep)[0], str(REALBIN), env["PATH"]])
        env.update(
            RBD_STANDIN_STATE=str(self.standin),
            RBD_STANDIN_SYSFS=str(self.fake.sysfs),
            RBD_STANDIN_DEV=str(self.fake.dev),
            CINDER_ATTACH_COMMAND_TIMEOUT="120",
        )
        self.sock_dir = Path(tempfile.mkdtemp(prefix="csi", dir="/tmp"))
        self.agent = Agent(self.fake, self.sock_dir)

    def staging(self, volume_id: str) -> Path:
        return self.fake.root / "kubelet" / "staging" / volume_id

    def stage(self, pv: dict[str, Any]) -> Path:
        csi = pv["spec"]["csi"]
        staging = self.staging(csi["volumeHandle"])
        self.agent.node.NodeStageVolume(
            pb2.NodeStageVolumeRequest(
                volume_id=csi["volumeHandle"], staging_target_path=str(staging),
                volume_capability=mount_cap("ext4"), secrets={}, volume_context=csi["volumeAttributes"],
            )
        )  # fmt: skip
        return staging

    def unstage(self, pv: dict[str, Any]) -> None:
        volume_id = pv["spec"]["csi"]["volumeHandle"]
        self.agent.node.NodeUnstageVolume(
            pb2.NodeUnstageVolumeRequest(
                volume_id=volume_id, staging_target_path=str(self.staging(volume_id))
            )
        )

    def rbd_calls(self) -> list[list[str]]:
        path = self.standin / "argv.log"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []

    def leftovers(self) -> dict[str, list[str]]:
        """Mounts under the node, loop devices over our FUSE files, FUSE mounts, rbd-fuse processes."""
        mounts = Path("/proc/self/mountinfo").read_text().splitlines()
        loops = subprocess.run(["losetup", "-a"], capture_output=True, text=True, check=True).stdout
        procs = []
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
                alive = Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
            except OSError:
                continue
            if alive and cmdline.startswith("rbd-fuse") and str(self.standin) in cmdline:
                procs.append(cmdline)
        return {
            "mounts": [m for m in mounts if str(self.fake.root) in m],
            "loops": [line for line in loops.splitlines() if str(self.standin) in line],
            "rbd_fuse": procs,
            "stash": [str(p) for p in self.fake.stash_files()],
        }

    def stop(self) -> None:
        self.agent.stop()
        self.fake.cleanup()
        self._reap_standin()
        shutil.rmtree(self.sock_dir, ignore_errors=True)

    def _reap_standin(self) -> None:
        """After a failed test (a volume still staged): detach the stand-in's loops, unmount its FUSE
        mounts and stop its rbd-fuse processes, so no run leaves anything behind."""
        left = self.leftovers()
        for line in left["loops"]:
            subprocess.run(["losetup", "-d", line.split(":", 1)[0]], capture_output=True, check=False)
        for line in left["mounts"]:
            mount_point = line.split()[4]
            if str(self.standin) in mount_point:
                subprocess.run(["umount", "-l", mount_point], capture_output=True, check=False)
        for cmdline in left["rbd_fuse"]:
            subprocess.run(["pkill", "-f", "-x", cmdline.strip()], capture_output=True, check=False)


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    require(_node_parts_missing(), "the rbd-fuse + loop stand-in for rbd map")
    running = Node(tmp_path / "node")
    yield running
    running.stop()


@pytest.fixture
def world(ceph_cinder: CephCinder) -> Iterator[World]:
    with ceph_world(ceph_cinder) as w:
        yield w


def _files(seed: int) -> dict[str, bytes]:
    rng = random.Random(seed)  # noqa: S311 - reproducible test data, not secrets
    sizes = {"a.bin": 4096, "b/c.bin": 3 << 20, "b/d/e.txt": 17, "big.bin": 24 << 20}
    return {name: rng.randbytes(size) for name, size in sizes.items()}


def _checksums(root: Path, names: list[str]) -> dict[str, str]:
    return {n: hashlib.sha256((root / n).read_bytes()).hexdigest() for n in names}


def _fs_uuid(staging: Path) -> str:
    source = subprocess.run(
        ["findmnt", "-no", "SOURCE", str(staging)], capture_output=True, text=True, check=True
    )
    out = subprocess.run(
        ["blkid", "-o", "value", "-s", "UUID", source.stdout.strip()],
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip()


def test_checksums_survive_snapshot_and_restore(world: World, node: Node, ceph_cinder: CephCinder) -> None:
    """Stage → write → unstage → VolumeSnapshot → restore → stage: the same bytes on the same filesystem."""
    cluster = ceph_cinder.ceph
    world.create_class("ceph", {"type": CEPH_TYPE, "volumeSource": "csi"})
    vs_class(world)
    world.create_pvc("src", "ceph", size="1Gi")
    world.wait_bound("src", timeout=60)
    src_pv = world.pv_of("src")
    assert src_pv is not None

    staging = node.stage(src_pv)
    files = _files(seed=12)
    for name, data in files.items():
        (staging / name).parent.mkdir(parents=True, exist_ok=True)
        (staging / name).write_bytes(data)
    expected = {n: hashlib.sha256(d).hexdigest() for n, d in files.items()}
    assert expected == _checksums(staging, list(files))
    src_uuid = _fs_uuid(staging)
    os.sync()
    node.unstage(src_pv)
    assert {"mounts": [], "loops": [], "rbd_fuse": [], "stash": []} == node.leftovers()
    pool, image = pv_image(src_pv)
    calls = node.rbd_calls()
    assert [["help", "device", "map"], ["device", "map"], ["device", "unmap"]] == [
        c[:3] if c[0] == "help" else c[:2] for c in calls
    ]
    assert f"{pool}/{image}" == node.rbd_calls()[1][-1]
    assert cluster.mon_v1 == node.rbd_calls()[1][node.rbd_calls()[1].index("-m") + 1]
    # the bytes are in Ceph: the image is no longer sparse where we wrote
    assert int(
        json.loads(cluster.rbd("du", "--format", "json", f"{pool}/{image}"))["images"][0]["used_size"]
    ) > (24 << 20)

    take_snapshot(world, "snap", "src")
    wait_ready(world, "snap", timeout=60)
    world.create_pvc(
        "restored",
        "ceph",
        size="1Gi",
        data_source={"kind": "VolumeSnapshot", "name": "snap", "apiGroup": SNAP_GROUP},
    )
    world.wait_bound("restored", timeout=60)
    restored_pv = world.pv_of("restored")
    assert restored_pv is not None
    assert pv_image(restored_pv) != (pool, image)

    restored = node.stage(restored_pv)
    assert expected == _checksums(restored, list(files))
    assert src_uuid == _fs_uuid(restored), "the restored volume was reformatted"
    node.unstage(restored_pv)
    assert {"mounts": [], "loops": [], "rbd_fuse": [], "stash": []} == node.leftovers()

    world.kube.delete("persistentvolumeclaims", "restored", namespace="default")
    wait_for(lambda: world.pv_of("restored") is None and world.pvc("restored") is None, 60, "restored gone")
    world.kube.delete("volumesnapshots", "snap", namespace="default")
    wait_for(lambda: not cluster.snapshots(pool, image), 60, "RBD snapshot gone")
    wait_for(
        lambda: not list(world.cinder.list_snapshots(metadata={"netvol.io/cluster": "e2e"})),
        60,
        "Cinder snapshot gone",
    )
    world.kube.delete("persistentvolumeclaims", "src", namespace="default")
    wait_for(lambda: not cluster.images(pool), 60, "every image gone")
