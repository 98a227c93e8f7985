"""A node for the real-Ceph data-integrity tests: the node agent over gRPC, ``rbd`` = the rbd-fuse stand-in.

``CephNode`` runs ``cinder-attach serve`` (the way kubelet drives it: NodeStage / NodePublish /
NodeExpandVolume over its unix socket) in a fake node world whose ``rbd`` is ``tests/fakes/realbin/rbd``:
``rbd-fuse`` exposes the real image, a loop device makes it a block device, a follower process gives the
loop device the image's new size after a Cinder extend.  mkfs, mount, resize2fs and xfs_growfs are the
real ones.  ``leftovers()`` lists what a stage could leave behind (mounts under the node, loop devices
over the stand-in's FUSE files, rbd-fuse and follower processes, stash records); ``stop()`` reaps it
after a failed test.  The helpers write files with known checksums and read a staged volume's size and
filesystem UUID.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.ceph_world import require
from tests.e2e.test_attach_grpc import Agent, mount_cap, pb2
from tests.fakes.world import FakeWorld, can_use_loop_devices

REALBIN = Path(__file__).resolve().parent.parent / "fakes" / "realbin"
#: What ``leftovers()`` answers when nothing is left.
NOTHING_LEFT: dict[str, list[str]] = {"mounts": [], "loops": [], "processes": [], "stash": []}


def node_parts_missing(fs_types: tuple[str, ...] = ("ext4",)) -> list[str]:
    """What this machine lacks for the stand-in node (tools, /dev/fuse, loop devices)."""
    tools = ["rbd-fuse", "fusermount3", "losetup", "blkid", "findmnt"]
    for fs_type in fs_types:
        tools += ["mkfs.xfs", "xfs_growfs"] if fs_type == "xfs" else [f"mkfs.{fs_type}", "resize2fs"]
    missing = [t for t in tools if not shutil.which(t)]
    if not os.path.exists("/dev/fuse"):
        missing.append("/dev/fuse")
    if not can_use_loop_devices():
        missing.append("root + /dev/loop-control")
    return missing


class CephNode:
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
        self.rpc_seconds: dict[str, list[float]] = {}

    def _timed(self, rpc: str, call: Any, request: Any) -> Any:
        started = time.monotonic()
        answer = call(request)
        self.rpc_seconds.setdefault(rpc, []).append(time.monotonic() - started)
        return answer

    def staging(self, volume_id: str) -> Path:
        return self.fake.root / "kubelet" / "staging" / volume_id

    def target(self, volume_id: str) -> Path:
        return self.fake.root / "kubelet" / "pods" / volume_id / "mount"

    def stage(self, pv: dict[str, Any], fs_type: str = "ext4") -> Path:
        csi = pv["spec"]["csi"]
        staging = self.staging(csi["volumeHandle"])
        self._timed("NodeStage", self.agent.node.NodeStageVolume, pb2.NodeStageVolumeRequest(
            volume_id=csi["volumeHandle"], staging_target_path=str(staging),
            volume_capability=mount_cap(fs_type), secrets={}, volume_context=csi["volumeAttributes"],
        ))  # fmt: skip
        return staging

    def publish(self, pv: dict[str, Any], fs_type: str = "ext4") -> Path:
        csi = pv["spec"]["csi"]
        volume_id = csi["volumeHandle"]
        self.agent.node.NodePublishVolume(
            pb2.NodePublishVolumeRequest(
                volume_id=volume_id, staging_target_path=str(self.staging(volume_id)),
                target_path=str(self.target(volume_id)), volume_capability=mount_cap(fs_type),
                volume_context=csi["volumeAttributes"],
            )
        )  # fmt: skip
        return self.target(volume_id)

    def unpublish(self, pv: dict[str, Any]) -> None:
        volume_id = pv["spec"]["csi"]["volumeHandle"]
        self.agent.node.NodeUnpublishVolume(
            pb2.NodeUnpublishVolumeRequest(volume_id=volume_id, target_path=str(self.target(volume_id)))
        )

    def expand(self, pv: dict[str, Any], required_bytes: int) -> int:
        """NodeExpandVolume as the kubelet sends it for a published volume; the capacity answered."""
        volume_id = pv["spec"]["csi"]["volumeHandle"]
        answer = self._timed("NodeExpand", self.agent.node.NodeExpandVolume, pb2.NodeExpandVolumeRequest(
            volume_id=volume_id, volume_path=str(self.target(volume_id)),
            staging_target_path=str(self.staging(volume_id)),
            capacity_range=pb2.CapacityRange(required_bytes=required_bytes),
        ))  # fmt: skip
        return int(answer.capacity_bytes)

    def unstage(self, pv: dict[str, Any]) -> None:
        volume_id = pv["spec"]["csi"]["volumeHandle"]
        self._timed("NodeUnstage", self.agent.node.NodeUnstageVolume, pb2.NodeUnstageVolumeRequest(
            volume_id=volume_id, staging_target_path=str(self.staging(volume_id))
        ))  # fmt: skip

    def timings(self) -> dict[str, str]:
        """Seconds per RPC and per tool the agent ran (``rbd device map``: start to mapped), as
        ``"mean (max) xN"``, from this node's calls and the agent's log."""
        samples = {name: list(values) for name, values in self.rpc_seconds.items()}
        started: dict[str, datetime] = {}
        for line in self.agent.log_path.read_text().splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            argv, event = entry.get("argv") or [], entry.get("event")
            if event == "command_started" and argv[1:3] == ["device", "map"]:
                started[argv[-1]] = datetime.fromisoformat(entry["timestamp"])
            elif event == "rbd_mapped" and entry.get("image") in started:
                seconds = (
                    datetime.fromisoformat(entry["timestamp"]) - started.pop(entry["image"])
                ).total_seconds()
                samples.setdefault("rbd device map", []).append(seconds)
            elif event == "command" and argv and "seconds" in entry:
                tool = " ".join(argv[:3]) if argv[0] == "rbd" else argv[0]
                samples.setdefault(tool, []).append(float(entry["seconds"]))
        return {
            name: f"{sum(v) / len(v):.3f} ({max(v):.3f}) x{len(v)}"
            for name, v in sorted(samples.items())
            if v
        }

    def rbd_calls(self) -> list[list[str]]:
        """What the agent ran as ``rbd`` (the stand-in's own size followers are not rbd calls)."""
        path = self.standin / "argv.log"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []

    def device_bytes(self, staging: Path) -> int:
        """The size of the block device mounted at ``staging`` (the loop device over the image)."""
        out = subprocess.run(["blockdev", "--getsize64", mounted_source(staging)], capture_output=True,
                             text=True, check=True)  # fmt: skip
        return int(out.stdout)

    def leftovers(self) -> dict[str, list[str]]:
        """Mounts under the node, loop devices over our FUSE files, rbd-fuse / follower processes, stash."""
        mounts = Path("/proc/self/mountinfo").read_text().splitlines()
        loops = subprocess.run(["losetup", "-a"], capture_output=True, text=True, check=True).stdout
        procs = []
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
                alive = Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
            except OSError:
                continue
            if (
                alive
                and str(self.standin) in cmdline
                and ("rbd-fuse" in cmdline or "--standin-follow" in cmdline)
            ):
                procs.append(cmdline)
        return {
            "mounts": [m for m in mounts if str(self.fake.root) in m],
            "loops": [line for line in loops.splitlines() if str(self.standin) in line],
            "processes": procs,
            "stash": [str(p) for p in self.fake.stash_files()],
        }

    def stop(self) -> None:
        self.agent.stop()
        self._reap_standin()
        self.fake.cleanup()
        shutil.rmtree(self.sock_dir, ignore_errors=True)

    def _reap_standin(self) -> None:
        """After a failed test (a volume still staged): unmount what is mounted under the node, detach the
        stand-in's loops, stop its followers and rbd-fuse processes, so no run leaves anything behind."""
        left = self.leftovers()
        for cmdline in left["processes"]:
            if "--standin-follow" in cmdline:
                subprocess.run(["pkill", "-f", "-x", cmdline.strip()], capture_output=True, check=False)
        for line in sorted(left["mounts"], key=lambda m: -len(m.split()[4])):  # deepest first
            mount_point = line.split()[4]
            if "rbd-standin" not in mount_point:
                subprocess.run(["umount", "-l", mount_point], capture_output=True, check=False)
        for line in left["loops"]:
            subprocess.run(["losetup", "-d", line.split(":", 1)[0]], capture_output=True, check=False)
        for line in self.leftovers()["mounts"]:
            subprocess.run(["umount", "-l", line.split()[4]], capture_output=True, check=False)
        for cmdline in left["processes"]:
            if "--standin-follow" not in cmdline:
                subprocess.run(["pkill", "-f", "-x", cmdline.strip()], capture_output=True, check=False)


@pytest.fixture
def ceph_node(tmp_path: Path) -> Iterator[CephNode]:
    """The stand-in node (skips, or fails under CI, when the machine lacks its parts)."""
    require(node_parts_missing(("ext4", "xfs")), "the rbd-fuse + loop stand-in for rbd map")
    running = CephNode(tmp_path / "node")
    yield running
    print(f"\nstand-in node timings, seconds mean (max) xN: {running.timings()}")
    running.stop()


def sample_files(seed: int) -> dict[str, bytes]:
    """Reproducible files of several sizes (4 KiB … 24 MiB), some in subdirectories."""
    rng = random.Random(seed)  # noqa: S311 - reproducible test data, not secrets
    sizes = {"a.bin": 4096, "b/c.bin": 3 << 20, "b/d/e.txt": 17, "big.bin": 24 << 20}
    return {name: rng.randbytes(size) for name, size in sizes.items()}


def write_files(root: Path, files: dict[str, bytes]) -> dict[str, str]:
    """Write ``files`` under ``root``, sync; their sha256 as read back."""
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    os.sync()
    return checksums(root, list(files))


def digests(files: dict[str, bytes]) -> dict[str, str]:
    return {n: hashlib.sha256(d).hexdigest() for n, d in files.items()}


def checksums(root: Path, names: list[str]) -> dict[str, str]:
    """sha256 of each file under ``root`` ("missing" for a file that is not there)."""
    return {
        n: hashlib.sha256((root / n).read_bytes()).hexdigest() if (root / n).is_file() else "missing"
        for n in names
    }


def mounted_source(path: Path) -> str:
    out = subprocess.run(["findmnt", "-no", "SOURCE", str(path)], capture_output=True, text=True, check=True)
    return out.stdout.strip()


def fs_uuid(staging: Path) -> str:
    """The UUID of the filesystem mounted at ``staging`` (blkid of its device)."""
    out = subprocess.run(
        ["blkid", "-o", "value", "-s", "UUID", mounted_source(staging)],
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip()


def fs_bytes(path: Path) -> int:
    """The size of the filesystem mounted at ``path`` (statvfs blocks times fragment size)."""
    st = os.statvfs(path)
    return st.f_blocks * st.f_frsize
