"""Hostile NodeStage / NodeUnstage requests against a real ``cinder-attach serve`` over its unix socket.

The agent runs as its own process in a fake world (fake rbd / iscsiadm / udevadm / mount tools on PATH,
each recording its full argv). Every hostile request must be answered with the exact status code, a
one-line message naming the field (no traceback, no secret), and nothing may have run: no tool was
started at all, no stash file written. Then ownership (the stash decides what unstage may touch), and the
proof that CHAP session and discovery secrets never appear in any process's argv.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from attach import csi_stubs
from provisioner.csi_contract import IscsiPath, IscsiTarget, RbdTarget, encode
from tests.fakes.world import FakeWorld

pb2, pb2_grpc = csi_stubs.load()

KEY = "AQBPlantedCephxKeyForBadInput000000000=="
IQN, PORTAL = "iqn.2010-10.org.openstack:volume-bad", "10.0.0.9:3260"
USER, PASSWORD = "chapuser", "PlantedSessionSecret77"
DUSER, DPASSWORD = "discuser", "PlantedDiscoverySecret77"
SECRETS = (KEY, PASSWORD, DPASSWORD)
INVALID, PRECONDITION = grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION


class Agent:
    def __init__(self, world: FakeWorld, sock_dir: Path) -> None:
        self.world = world
        self.log_path = world.root / "server.log"
        self._log = open(self.log_path, "w")  # noqa: SIM115 - closed in stop()
        socket = sock_dir / "csi.sock"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "attach.cli", "serve", "--endpoint", f"unix://{socket}"],
            env=world.env, stdout=self._log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        self.channel = grpc.insecure_channel(f"unix://{socket}")
        grpc.channel_ready_future(self.channel).result(timeout=30)
        self.node = pb2_grpc.NodeStub(self.channel)

    def stop(self) -> None:
        self.channel.close()
        self.proc.terminate()
        self.proc.wait(10)
        self._log.close()


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Agent]:
    world = FakeWorld(tmp_path_factory.mktemp("badinput-node"))
    world.rbd(images={"volumes/img1": 64 << 20, "volumes/img2": 64 << 20}, key=KEY)
    world.iscsi(
        targets={
            IQN: {
                "portal": PORTAL,
                "chap": {"user": USER, "password": PASSWORD},
                "discovery_chap": {"user": DUSER, "password": DPASSWORD},
                "luns": {"0": {"wwid": "naa.6001", "size": 64 << 20, "appear": "login"}},
            }
        }
    )
    sock_dir = Path(tempfile.mkdtemp(prefix="csi", dir="/tmp"))
    running = Agent(world, sock_dir)
    yield running
    running.stop()
    world.cleanup()
    shutil.rmtree(sock_dir, ignore_errors=True)


def cap(fs_type: str = "ext4", flags: tuple[str, ...] = ("noatime",)) -> Any:
    return pb2.VolumeCapability(
        mount=pb2.VolumeCapability.MountVolume(fs_type=fs_type, mount_flags=list(flags)),
        access_mode=pb2.VolumeCapability.AccessMode(mode=1),
    )


def rbd_ctx(**kw: Any) -> dict[str, str]:
    values: dict[str, Any] = {
        "monitors": ("10.0.0.1:6789",),
        "pool": "volumes",
        "image": "img1",
        "user": "cinder",
    }
    values.update(kw)
    return encode(RbdTarget(**values))


def iscsi_ctx(*paths: tuple[str, str, int], **kw: Any) -> dict[str, str]:
    chosen = paths or ((PORTAL, IQN, 0),)
    return encode(IscsiTarget(paths=tuple(IscsiPath(portal=p, iqn=q, lun=n) for p, q, n in chosen), **kw))


CHAP_SECRETS = {
    "node.session.auth.username": USER,
    "node.session.auth.password": PASSWORD,
    "discovery.sendtargets.auth.username": DUSER,
    "discovery.sendtargets.auth.password": DPASSWORD,
}


def stage_request(agent: Agent, **kw: Any) -> Any:
    values: dict[str, Any] = {
        "volume_id": "vol-bad",
        "staging_target_path": str(agent.world.root / "staging" / "vol-bad"),
        "volume_capability": cap(),
        "secrets": {"key": KEY},
        "volume_context": rbd_ctx(),
    }
    values.update(kw)
    return pb2.NodeStageVolumeRequest(**values)


def failure(call: Callable[[], Any]) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as err:
        call()
    return err.value


Mutation = Callable[[Agent], dict[str, Any]]


def root_of(a: Agent) -> str:
    return str(a.world.root)


HOSTILE: list[tuple[str, Mutation, str]] = [
    # request identity and paths
    ("volume id too long", lambda a: {"volume_id": "v" * 4000}, "volume_id"),
    ("volume id with slash", lambda a: {"volume_id": "../vol"}, "volume_id"),
    ("volume id option", lambda a: {"volume_id": "--vol"}, "volume_id"),
    ("volume id space", lambda a: {"volume_id": "vol 1"}, "volume_id"),
    ("volume id NUL", lambda a: {"volume_id": "vol\x00"}, "volume_id"),
    ("staging relative", lambda a: {"staging_target_path": "staging/x"}, "staging_target_path"),
    (
        "staging dotdot",
        lambda a: {"staging_target_path": root_of(a) + "/staging/../../etc"},
        "staging_target_path",
    ),
    ("staging NUL", lambda a: {"staging_target_path": root_of(a) + "/staging/x\x00y"}, "staging_target_path"),
    (
        "staging 5000 chars",
        lambda a: {"staging_target_path": root_of(a) + "/" + "d/" * 2500},
        "staging_target_path",
    ),
    (
        "staging long component",
        lambda a: {"staging_target_path": root_of(a) + "/" + "n" * 300},
        "staging_target_path",
    ),
    (
        "staging outside kubelet dir",
        lambda a: {"staging_target_path": "/etc/cron.d/x"},
        "staging_target_path",
    ),
    ("staging is kubelet dir", lambda a: {"staging_target_path": root_of(a)}, "staging_target_path"),
    ("staging double slash", lambda a: {"staging_target_path": root_of(a) + "//x"}, "staging_target_path"),
    ("staging trailing slash", lambda a: {"staging_target_path": root_of(a) + "/x/"}, "staging_target_path"),
    ("staging newline", lambda a: {"staging_target_path": root_of(a) + "/x\n/y"}, "staging_target_path"),
    # rbd volume context
    ("pool --id=admin", lambda a: {"volume_context": rbd_ctx(pool="--id=admin")}, "pool"),
    ("pool slash", lambda a: {"volume_context": rbd_ctx(pool="a/b")}, "pool"),
    ("pool space", lambda a: {"volume_context": rbd_ctx(pool="vol umes")}, "pool"),
    ("image option", lambda a: {"volume_context": rbd_ctx(image="--keyring=/etc/ceph/k")}, "image"),
    ("image snapshot", lambda a: {"volume_context": rbd_ctx(image="img1@snap")}, "image"),
    ("image dotdot", lambda a: {"volume_context": rbd_ctx(image="..img1")}, "image"),
    ("namespace option", lambda a: {"volume_context": rbd_ctx(rados_namespace="-n")}, "radosNamespace"),
    ("user --id", lambda a: {"volume_context": rbd_ctx(user="--id")}, "user"),
    (
        "user --keyring",
        lambda a: {"volume_context": rbd_ctx(user="--keyring=/etc/ceph/ceph.client.admin.keyring")},
        "user",
    ),
    ("monitor option", lambda a: {"volume_context": rbd_ctx(monitors=("--keyring=/x",))}, "monitors[0]"),
    ("monitor -m", lambda a: {"volume_context": rbd_ctx(monitors=("10.0.0.1:6789", "-m"))}, "monitors[1]"),
    ("monitor without port", lambda a: {"volume_context": rbd_ctx(monitors=("10.0.0.1",))}, "monitors[0]"),
    ("monitor bad v6", lambda a: {"volume_context": rbd_ctx(monitors=("[fd00::zz]:6789",))}, "monitors[0]"),
    ("cephx key with newline", lambda a: {"secrets": {"key": KEY + "\n--x"}}, "secrets.key"),
    ("cephx key option", lambda a: {"secrets": {"key": "--key=" + KEY}}, "secrets.key"),
    # iscsi volume context
    ("iqn dash", lambda a: {"volume_context": iscsi_ctx((PORTAL, "-" + IQN, 0))}, "iqns[0]"),
    (
        "iqn dotdot",
        lambda a: {"volume_context": iscsi_ctx((PORTAL, "iqn.2010-10.org.openstack:../../x", 0))},
        "iqns[0]",
    ),
    ("iqn space", lambda a: {"volume_context": iscsi_ctx((PORTAL, "iqn.2010-10.org.x:a b", 0))}, "iqns[0]"),
    (
        "portal --interface",
        lambda a: {"volume_context": iscsi_ctx(("--interface=evil", IQN, 0))},
        "portals[0]",
    ),
    ("portal -p", lambda a: {"volume_context": iscsi_ctx(("-p", IQN, 0))}, "portals[0]"),
    ("portal port 0", lambda a: {"volume_context": iscsi_ctx(("10.0.0.9:0", IQN, 0))}, "portals[0]"),
    ("lun too big", lambda a: {"volume_context": iscsi_ctx((PORTAL, IQN, 20000))}, "luns[0]"),
    (
        "second path iqn",
        lambda a: {"volume_context": iscsi_ctx((PORTAL, IQN, 0), ("10.0.0.8:3260", "--x", 0))},
        "iqns[1]",
    ),
    (
        "initiator dash",
        lambda a: {"volume_context": iscsi_ctx(initiator_name="-iqn.2024-01.x:y")},
        "initiatorName",
    ),
    (
        "iface option",
        lambda a: {"volume_context": iscsi_ctx(iscsi_interface="--op=delete")},
        "iscsiInterface",
    ),
    (
        "chap password newline",
        lambda a: {
            "volume_context": iscsi_ctx(chap_session=True),
            "secrets": CHAP_SECRETS | {"node.session.auth.password": PASSWORD + "\nnode.startup = automatic"},
        },
        "secrets.node.session.auth.password",
    ),
    (
        "chap password space",
        lambda a: {
            "volume_context": iscsi_ctx(chap_session=True),
            "secrets": CHAP_SECRETS | {"node.session.auth.password": PASSWORD + " x"},
        },
        "secrets.node.session.auth.password",
    ),
    (
        "chap user option",
        lambda a: {
            "volume_context": iscsi_ctx(chap_session=True),
            "secrets": CHAP_SECRETS | {"node.session.auth.username": "--op=delete"},
        },
        "secrets.node.session.auth.username",
    ),
    (
        "discovery password newline",
        lambda a: {
            "volume_context": iscsi_ctx(chap_discovery=True),
            "secrets": CHAP_SECRETS | {"discovery.sendtargets.auth.password": DPASSWORD + "\r\n"},
        },
        "secrets.discovery.sendtargets.auth.password",
    ),
    (
        "chap secret missing",
        lambda a: {"volume_context": iscsi_ctx(chap_session=True), "secrets": {}},
        "secrets.node.session.auth.password",
    ),
    # filesystem
    ("fs type option", lambda a: {"volume_capability": cap(fs_type="ext4 -O ^has_journal")}, "fs_type"),
    ("fs type unknown", lambda a: {"volume_capability": cap(fs_type="ntfs")}, "fs_type"),
    ("mount flag loop", lambda a: {"volume_capability": cap(flags=("loop",))}, "mount_flags[0]"),
    ("mount flag bind", lambda a: {"volume_capability": cap(flags=("noatime", "--bind"))}, "mount_flags[1]"),
    ("mount flag comma", lambda a: {"volume_capability": cap(flags=("noatime,loop",))}, "mount_flags[0]"),
    ("mount flag context", lambda a: {"volume_capability": cap(flags=('context="x"',))}, "mount_flags[0]"),
]


@pytest.mark.parametrize(("name", "mutation", "field"), HOSTILE, ids=[h[0] for h in HOSTILE])
def test_hostile_stage_is_refused_before_anything_runs(
    agent: Agent, name: str, mutation: Mutation, field: str
) -> None:
    """INVALID_ARGUMENT, one line naming the field, no secret; no tool started, nothing stashed."""
    before = len(agent.world.argv_log())
    error = failure(lambda: agent.node.NodeStageVolume(stage_request(agent, **mutation(agent)), timeout=30))
    details = error.details() or ""
    assert INVALID == error.code(), details
    assert f"{field}:" in details
    assert ("\n" in details, "Traceback" in details) == (False, False)
    assert not any(s in details for s in SECRETS)
    assert [] == agent.world.argv_log()[before:]
    assert [] == agent.world.stash_files()


@pytest.mark.parametrize(
    ("name", "request_kw", "field"),
    [
        ("volume id too long", {"volume_id": "v" * 4000}, "volume_id"),
        ("relative path", {"staging_target_path": "x"}, "staging_target_path"),
        ("NUL in path", {"staging_target_path": "/var/lib/kubelet/x\x00"}, "staging_target_path"),
        ("outside kubelet dir", {"staging_target_path": "/etc"}, "staging_target_path"),
    ],
)
def test_hostile_unstage_is_refused(agent: Agent, name: str, request_kw: dict[str, str], field: str) -> None:
    """Unstage validates id and path the same way, before touching anything."""
    values = {"volume_id": "vol-x", "staging_target_path": str(agent.world.root / "staging" / "vol-x")}
    values.update(request_kw)
    before = len(agent.world.argv_log())
    error = failure(lambda: agent.node.NodeUnstageVolume(pb2.NodeUnstageVolumeRequest(**values), timeout=30))
    assert (INVALID, True) == (error.code(), (error.details() or "").startswith(f"{field}: "))
    assert [] == agent.world.argv_log()[before:]


def test_ownership_the_stash_decides(agent: Agent) -> None:
    """A second path, a used path or image, an unknown id and a wrong path never touch vol-a's mount."""
    world = agent.world
    p1, p2 = str(world.root / "own" / "p1"), str(world.root / "own" / "p2")
    node = agent.node
    node.NodeStageVolume(stage_request(agent, volume_id="vol-a", staging_target_path=p1), timeout=60)
    assert [p1] == world.mounts_under(world.root / "own")
    maps_before = [c for c in world.calls("rbd") if c[:2] == ["device", "map"]]
    refused = [
        failure(
            lambda: node.NodeStageVolume(stage_request(agent, volume_id="vol-a", staging_target_path=p2))
        ),
        failure(
            lambda: node.NodeStageVolume(stage_request(agent, volume_id="vol-b", staging_target_path=p1))
        ),
        failure(
            lambda: node.NodeStageVolume(
                stage_request(agent, volume_id="vol-b", staging_target_path=p2, volume_context=rbd_ctx())
            )
        ),
        failure(
            lambda: node.NodeUnstageVolume(
                pb2.NodeUnstageVolumeRequest(volume_id="vol-a", staging_target_path=p2)
            )
        ),
    ]
    assert [PRECONDITION] * 4 == [e.code() for e in refused]
    assert ["another staging path", "used by volume vol-a", "same device", "another staging path"] == [
        next(
            w
            for w in ("another staging path", "used by volume vol-a", "same device")
            if w in (e.details() or "")
        )
        for e in refused
    ]
    # unstage of an id the stash does not know, given vol-a's path: success, and vol-a stays mounted
    node.NodeUnstageVolume(
        pb2.NodeUnstageVolumeRequest(volume_id="ghost", staging_target_path=p1), timeout=30
    )
    assert [p1] == world.mounts_under(world.root / "own")
    assert maps_before == [c for c in world.calls("rbd") if c[:2] == ["device", "map"]]
    assert 1 == len(world.rbd_mappings())
    assert [] == [c for c in world.calls("umount") if c[-1] == p1]
    node.NodeUnstageVolume(
        pb2.NodeUnstageVolumeRequest(volume_id="vol-a", staging_target_path=p1), timeout=60
    )
    assert ({}, [], []) == (world.rbd_mappings(), world.mounts_under(world.root / "own"), world.stash_files())


def test_chap_session_and_discovery_secrets_never_in_any_argv(agent: Agent) -> None:
    """Stage iSCSI with session + discovery CHAP over gRPC: login works, yet no process ever had a secret in
    its argv; the secrets sit in 0600 record files; the server log, stash and error-free reply hold none."""
    world = agent.world
    staging = str(world.root / "chap" / "vol-chap")
    request = stage_request(
        agent,
        volume_id="vol-chap",
        staging_target_path=staging,
        volume_context=iscsi_ctx(chap_session=True, chap_discovery=True),
        secrets=CHAP_SECRETS,
    )
    agent.node.NodeStageVolume(request, timeout=60)
    assert 1 == len(world.iscsi_sessions())
    stash = "".join(p.read_text() for p in world.stash_files())
    records = sorted(world.iscsi_root.glob("nodes/*/*/*")) + sorted(
        world.iscsi_root.glob("send_targets/*/st_config")
    )
    contents = "".join(p.read_text() for p in records)
    modes = {oct(p.stat().st_mode & 0o777) for p in records}
    agent.node.NodeUnstageVolume(
        pb2.NodeUnstageVolumeRequest(volume_id="vol-chap", staging_target_path=staging)
    )
    argv_text = [json.dumps(e) for e in world.argv_log()]
    assert any("discoverydb" in line for line in argv_text)
    assert any("--login" in line for line in argv_text)
    assert [] == [line for line in argv_text if PASSWORD in line or DPASSWORD in line]
    assert (True, True, {"0o600"}) == (PASSWORD in contents, DPASSWORD in contents, modes)
    assert (False, False) == (PASSWORD in stash, DPASSWORD in stash)
    log = agent.log_path.read_text()
    assert not any(s in log for s in SECRETS)
    assert ([], []) == (world.iscsi_sessions(), world.stash_files())
