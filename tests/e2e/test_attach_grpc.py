"""The node agent over a real unix socket, driven the way kubelet drives a CSI node plugin.

``cinder-attach serve`` runs as its own process in a fake world (fake rbd/iscsiadm/udevadm and fake
filesystem tools on PATH, fake sysfs and /dev); the test is the CO: Identity calls, NodeGetInfo,
NodeGetCapabilities, then NodeStage → NodePublish → NodeGetVolumeStats → NodeExpandVolume →
NodeUnpublish → NodeUnstage for rbd and iscsi, concurrency and error status codes. At the end nothing may
be left (mapping, session, mount, stash, key file) and no planted secret may appear in the server's log or
in any argv the fakes recorded (CHAP passwords are written into the node record files, not argv).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from attach import csi_stubs
from provisioner.csi_contract import IscsiPath, IscsiTarget, RbdTarget, encode
from tests.fakes.world import FakeWorld

pb2, pb2_grpc = csi_stubs.load()

CEPHX_KEY = "AQBe2ePlantedCephxKeyForGrpc=="
CHAP_USER, CHAP_PASSWORD = "e2euser", "E2ePlantedChapPassword"
IQN, PORTAL = "iqn.2010-10.org.openstack:volume-e2e", "10.0.0.7:3260"
TRIGGER_AFTER = 1.0


class Agent:
    """A running ``cinder-attach serve`` and stubs connected to it."""

    def __init__(self, world: FakeWorld, sock_dir: Path) -> None:
        self.world = world
        self.socket = sock_dir / "csi.sock"
        self.log_path = world.root / "server.log"
        self._log = open(self.log_path, "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "attach.cli", "--udev-trigger-after", str(TRIGGER_AFTER),
             "--map-timeout", "5", "serve", "--endpoint", f"unix://{self.socket}"],
            env=world.env, stdout=self._log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        self.channel = grpc.insecure_channel(f"unix://{self.socket}")
        grpc.channel_ready_future(self.channel).result(timeout=30)
        self.identity = pb2_grpc.IdentityStub(self.channel)
        self.node = pb2_grpc.NodeStub(self.channel)

    def stop(self) -> None:
        self.channel.close()
        self.proc.terminate()
        self.proc.wait(10)
        self._log.close()

    def log_text(self) -> str:
        return self.log_path.read_text()


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Agent]:
    world = FakeWorld(tmp_path_factory.mktemp("grpc-world"))
    world.rbd(images={"volumes/vol-rbd": 64 << 20, "volumes/vol-busy": 64 << 20, "volumes/vol-blk": 64 << 20},
              key=CEPHX_KEY)  # fmt: skip
    world.iscsi(
        targets={IQN: {"portal": PORTAL, "chap": {"user": CHAP_USER, "password": CHAP_PASSWORD},
                       "luns": {"0": {"wwid": "naa.6001", "size": 64 << 20, "appear": "login"}}}}
    )  # fmt: skip
    sock_dir = Path(tempfile.mkdtemp(prefix="csi", dir="/tmp"))  # unix socket paths must stay short
    running = Agent(world, sock_dir)
    yield running
    running.stop()
    world.cleanup()
    shutil.rmtree(sock_dir, ignore_errors=True)


def mount_cap(fs_type: str = "ext4", mode: int = 1) -> Any:
    return pb2.VolumeCapability(
        mount=pb2.VolumeCapability.MountVolume(fs_type=fs_type, mount_flags=["noatime"]),
        access_mode=pb2.VolumeCapability.AccessMode(mode=mode),
    )


def block_cap() -> Any:
    return pb2.VolumeCapability(
        block=pb2.VolumeCapability.BlockVolume(), access_mode=pb2.VolumeCapability.AccessMode(mode=1)
    )


def rbd_context(image: str) -> dict[str, str]:
    return encode(RbdTarget(monitors=("10.0.0.1:6789",), pool="volumes", image=image, user="cinder"))


def iscsi_context() -> dict[str, str]:
    return encode(
        IscsiTarget(paths=(IscsiPath(portal=PORTAL, iqn=IQN, lun=0),), chap_session=True, wwid="naa.6001")
    )


def code_of(call: Any) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as err:
        call()
    return err.value.code()


def test_identity(agent: Agent) -> None:
    """GetPluginInfo names the driver; Probe is ready; the plugin offers online expansion."""
    info = agent.identity.GetPluginInfo(pb2.GetPluginInfoRequest())
    probe = agent.identity.Probe(pb2.ProbeRequest())
    caps = agent.identity.GetPluginCapabilities(pb2.GetPluginCapabilitiesRequest())
    assert ("cinder.netvol.io", True) == (info.name, probe.ready.value)
    assert [pb2.PluginCapability.VolumeExpansion.ONLINE] == [
        c.volume_expansion.type for c in caps.capabilities
    ]


def test_node_get_info_and_capabilities(agent: Agent) -> None:
    """NodeGetInfo returns the configured node id; capabilities are stage/unstage, stats, expand."""
    info = agent.node.NodeGetInfo(pb2.NodeGetInfoRequest())
    caps = agent.node.NodeGetCapabilities(pb2.NodeGetCapabilitiesRequest())
    rpc = pb2.NodeServiceCapability.RPC
    assert "node-1" == info.node_id
    assert {rpc.STAGE_UNSTAGE_VOLUME, rpc.GET_VOLUME_STATS, rpc.EXPAND_VOLUME} == {
        c.rpc.type for c in caps.capabilities
    }


def _lifecycle(agent: Agent, volume_id: str, context: dict[str, str], secrets: dict[str, str]) -> None:
    root = agent.world.root
    staging = str(root / "kubelet" / "staging" / volume_id)
    target = str(root / "kubelet" / "pods" / volume_id / "mount")
    agent.node.NodeStageVolume(
        pb2.NodeStageVolumeRequest(
            volume_id=volume_id, staging_target_path=staging, volume_capability=mount_cap(),
            secrets=secrets, volume_context=context,
        )
    )  # fmt: skip
    agent.node.NodePublishVolume(
        pb2.NodePublishVolumeRequest(
            volume_id=volume_id, staging_target_path=staging, target_path=target,
            volume_capability=mount_cap(),
            volume_context=context,
        )
    )  # fmt: skip
    assert {staging, target} == set(agent.world.mounts_under(root / "kubelet"))
    stats = agent.node.NodeGetVolumeStats(
        pb2.NodeGetVolumeStatsRequest(volume_id=volume_id, volume_path=target)
    )
    units = {u.unit: u for u in stats.usage}
    assert {pb2.VolumeUsage.BYTES, pb2.VolumeUsage.INODES} == set(units)
    assert 0 < units[pb2.VolumeUsage.BYTES].used <= units[pb2.VolumeUsage.BYTES].total
    expanded = agent.node.NodeExpandVolume(
        pb2.NodeExpandVolumeRequest(
            volume_id=volume_id, volume_path=target, capacity_range=pb2.CapacityRange(required_bytes=64 << 20)
        )
    )
    assert 64 << 20 == expanded.capacity_bytes
    too_big = pb2.NodeExpandVolumeRequest(
        volume_id=volume_id, volume_path=target, capacity_range=pb2.CapacityRange(required_bytes=1 << 40)
    )
    assert grpc.StatusCode.OUT_OF_RANGE == code_of(lambda: agent.node.NodeExpandVolume(too_big))
    unpublish = pb2.NodeUnpublishVolumeRequest(volume_id=volume_id, target_path=target)
    agent.node.NodeUnpublishVolume(unpublish)
    agent.node.NodeUnpublishVolume(unpublish)  # idempotent
    unstage = pb2.NodeUnstageVolumeRequest(volume_id=volume_id, staging_target_path=staging)
    agent.node.NodeUnstageVolume(unstage)
    agent.node.NodeUnstageVolume(unstage)  # idempotent
    assert [] == agent.world.mounts_under(root / "kubelet")
    assert not Path(target).exists()


def test_rbd_stage_publish_unpublish_unstage(agent: Agent) -> None:
    """The full rbd lifecycle leaves no mapping, mount, stash or key file."""
    _lifecycle(agent, "vol-rbd", rbd_context("vol-rbd"), {"key": CEPHX_KEY})
    assert ({}, [], []) == (agent.world.rbd_mappings(), agent.world.stash_files(), agent.world.key_files())


def test_iscsi_stage_publish_unpublish_unstage(agent: Agent) -> None:
    """The full iscsi (CHAP) lifecycle leaves no session, record, mount or stash."""
    secrets = {"node.session.auth.username": CHAP_USER, "node.session.auth.password": CHAP_PASSWORD}
    _lifecycle(agent, "vol-iscsi", iscsi_context(), secrets)
    assert ([], {}, []) == (
        agent.world.iscsi_sessions(),
        agent.world.state()["iscsi"]["records"],
        agent.world.stash_files(),
    )


def test_block_volume_lifecycle(agent: Agent) -> None:
    """Block mode: stage maps only, publish binds the device to a file, stats report the device size."""
    root = agent.world.root
    staging, target = str(root / "blk" / "staging"), str(root / "blk" / "pod" / "dev")
    ctx = rbd_context("vol-blk")
    agent.node.NodeStageVolume(
        pb2.NodeStageVolumeRequest(volume_id="vol-blk", staging_target_path=staging,
                                   volume_capability=block_cap(),
                                   secrets={"key": CEPHX_KEY}, volume_context=ctx)
    )  # fmt: skip
    agent.node.NodePublishVolume(
        pb2.NodePublishVolumeRequest(volume_id="vol-blk", staging_target_path=staging, target_path=target,
                                     volume_capability=block_cap(), volume_context=ctx)
    )  # fmt: skip
    stats = agent.node.NodeGetVolumeStats(
        pb2.NodeGetVolumeStatsRequest(volume_id="vol-blk", volume_path=target)
    )
    assert [(pb2.VolumeUsage.BYTES, 64 << 20)] == [(u.unit, u.total) for u in stats.usage]
    agent.node.NodeUnpublishVolume(pb2.NodeUnpublishVolumeRequest(volume_id="vol-blk", target_path=target))
    agent.node.NodeUnstageVolume(
        pb2.NodeUnstageVolumeRequest(volume_id="vol-blk", staging_target_path=staging)
    )
    assert {} == agent.world.rbd_mappings()


def test_concurrent_operation_on_one_volume_is_aborted(agent: Agent) -> None:
    """While a stage waits out the udev hang, a second stage/unstage of that volume gets ABORTED."""
    agent.world.rbd(noudev=False, udev="reorder")
    staging = str(agent.world.root / "busy" / "staging")
    request = pb2.NodeStageVolumeRequest(
        volume_id="vol-busy", staging_target_path=staging, volume_capability=mount_cap(),
        secrets={"key": CEPHX_KEY}, volume_context=rbd_context("vol-busy"),
    )  # fmt: skip
    first: dict[str, Any] = {}

    def stage() -> None:
        started = time.monotonic()
        agent.node.NodeStageVolume(request)
        first["seconds"] = time.monotonic() - started

    try:
        worker = threading.Thread(target=stage)
        worker.start()
        deadline = time.monotonic() + 10
        while not [a for a in agent.world.calls("rbd") if a[:2] == ["device", "map"] and "vol-busy" in a[-1]]:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert grpc.StatusCode.ABORTED == code_of(lambda: agent.node.NodeStageVolume(request))
        unstage = pb2.NodeUnstageVolumeRequest(volume_id="vol-busy", staging_target_path=staging)
        assert grpc.StatusCode.ABORTED == code_of(lambda: agent.node.NodeUnstageVolume(unstage))
        worker.join(15)
        assert first["seconds"] < TRIGGER_AFTER + 1.0
        agent.node.NodeUnstageVolume(unstage)
    finally:
        agent.world.rbd(noudev=True, udev="ok")
    assert {} == agent.world.rbd_mappings()


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("no volume id", grpc.StatusCode.INVALID_ARGUMENT),
        ("no staging path", grpc.StatusCode.INVALID_ARGUMENT),
        ("no capability", grpc.StatusCode.INVALID_ARGUMENT),
        ("multi-writer filesystem", grpc.StatusCode.INVALID_ARGUMENT),
        ("bad context", grpc.StatusCode.INVALID_ARGUMENT),
        ("wrong cephx key", grpc.StatusCode.PERMISSION_DENIED),
        ("missing image", grpc.StatusCode.NOT_FOUND),
    ],
)
def test_stage_status_codes(agent: Agent, name: str, expected: grpc.StatusCode) -> None:
    """NodeStageVolume answers malformed or impossible requests with the spec's status codes."""
    req: dict[str, Any] = {
        "volume_id": "vol-err",
        "staging_target_path": str(agent.world.root / "err"),
        "volume_capability": mount_cap(),
        "secrets": {"key": CEPHX_KEY},
        "volume_context": rbd_context("vol-rbd"),
    }
    if name == "no volume id":
        req["volume_id"] = ""
    elif name == "no staging path":
        req["staging_target_path"] = ""
    elif name == "no capability":
        del req["volume_capability"]
    elif name == "multi-writer filesystem":
        req["volume_capability"] = mount_cap(mode=pb2.VolumeCapability.AccessMode.MULTI_NODE_MULTI_WRITER)
    elif name == "bad context":
        req["volume_context"] = {"type": "nfs"}
    elif name == "wrong cephx key":
        req["secrets"] = {"key": "AQBwrongkey=="}
    elif name == "missing image":
        req["volume_context"] = rbd_context("no-such-image")
    assert expected == code_of(lambda: agent.node.NodeStageVolume(pb2.NodeStageVolumeRequest(**req)))
    agent.node.NodeUnstageVolume(
        pb2.NodeUnstageVolumeRequest(volume_id="vol-err", staging_target_path=str(agent.world.root / "err"))
    )


def test_other_status_codes(agent: Agent) -> None:
    """Stats of a missing path → NOT_FOUND; publish of an unstaged volume → FAILED_PRECONDITION;
    unstage/unpublish of unknown volumes succeed; expand of an unstaged volume → NOT_FOUND."""
    root = agent.world.root
    stats = pb2.NodeGetVolumeStatsRequest(volume_id="ghost", volume_path=str(root / "nowhere"))
    publish = pb2.NodePublishVolumeRequest(
        volume_id="ghost", staging_target_path=str(root / "gs"), target_path=str(root / "gt"),
        volume_capability=mount_cap(),
    )  # fmt: skip
    expand = pb2.NodeExpandVolumeRequest(volume_id="ghost", volume_path=str(root / "gv"))
    assert (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.NOT_FOUND) == (
        code_of(lambda: agent.node.NodeGetVolumeStats(stats)),
        code_of(lambda: agent.node.NodePublishVolume(publish)),
        code_of(lambda: agent.node.NodeExpandVolume(expand)),
    )
    agent.node.NodeUnstageVolume(
        pb2.NodeUnstageVolumeRequest(volume_id="ghost", staging_target_path=str(root / "gs"))
    )
    agent.node.NodeUnpublishVolume(
        pb2.NodeUnpublishVolumeRequest(volume_id="ghost", target_path=str(root / "gt"))
    )


def test_zz_nothing_left_and_no_secret_anywhere(agent: Agent) -> None:
    """After all tests: no mapping/session/mount/stash/key file; no secret in the log or any argv."""
    world = agent.world
    assert ({}, [], [], [], []) == (
        world.rbd_mappings(),
        world.iscsi_sessions(),
        world.mounts_under(world.root),
        world.stash_files(),
        world.key_files(),
    )
    log = agent.log_text()
    assert '"event": "csi_node_stage"' in log
    for secret in (CEPHX_KEY, CHAP_PASSWORD, "AQBwrongkey=="):
        assert secret not in log
    leaks = [e for e in world.argv_log() if any(s in " ".join(e["argv"]) for s in (CEPHX_KEY, CHAP_PASSWORD))]
    assert [] == leaks  # CHAP passwords go into open-iscsi's record files, never argv
