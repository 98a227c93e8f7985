"""iSCSI logins with the PV's ``initiatorName`` through a dedicated iface, against a target ACL.

The fake target admits only the initiators in its ``acl``; the node's own initiator (what the ``default``
iface logs in as) is not among them, exactly like a Cinder export made for the provisioner's connector.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from attach.errors import AuthFailed, FinalAttachError, InvalidRequest, RetryableAttachError
from attach.iscsi_iface import iface_for
from attach.node import StageRequest
from provisioner.csi_contract import IscsiPath, IscsiTarget, encode
from tests.fakes.world import FakeWorld

IQN = "iqn.2010-10.org.openstack:volume-1"
PORTAL = "10.0.0.5:3260"
INITIATOR = "iqn.2024-01.io.netvol:provisioner"
OTHER_INITIATOR = "iqn.2024-01.io.netvol:other-cloud"
HOST_INITIATOR = "iqn.1993-08.org.debian:01:fakehost"


def lun(**kw: Any) -> dict[str, Any]:
    return {"wwid": "naa.600140512345678", "size": 64 << 20, "appear": "login"} | kw


@pytest.fixture
def world(tmp_path: Path) -> Iterator[FakeWorld]:
    w = FakeWorld(tmp_path)
    w.iscsi(
        host_initiator=HOST_INITIATOR,
        targets={IQN: {"portal": PORTAL, "acl": [INITIATOR], "luns": {"1": lun(), "2": lun()}}},
    )
    yield w
    w.cleanup()


def target(lun_no: int = 1, **kw: Any) -> IscsiTarget:
    values: dict[str, Any] = {"initiator_name": INITIATOR} | kw
    return IscsiTarget(paths=(IscsiPath(portal=PORTAL, iqn=IQN, lun=lun_no),), **values)


def request(world: FakeWorld, volume_id: str = "vol-1", *, lun_no: int = 1, **kw: Any) -> StageRequest:
    return StageRequest(
        volume_id=volume_id,
        staging_path=str(world.root / "staging" / volume_id),
        attributes=encode(target(lun_no, **kw)),
        secrets={},
        fs_type="ext4",
    )


def sessions(world: FakeWorld) -> list[tuple[str, str]]:
    return sorted((s["iface"], s["initiator"]) for s in world.iscsi_sessions())


def iface_calls(world: FakeWorld, op: str) -> list[list[str]]:
    return [a for a in world.calls("iscsiadm") if a[:2] == ["-m", "iface"] and op in a]


def test_host_default_initiator_is_refused_by_the_acl(world: FakeWorld) -> None:
    """Without initiatorName the login goes out as the host's initiator and the ACL refuses it (24)."""
    with pytest.raises(AuthFailed, match="exit 24"):
        world.ops().stage(request(world, initiator_name=""))
    assert [] == world.iscsi_sessions()


def test_login_with_the_pv_initiator_passes_the_acl(world: FakeWorld) -> None:
    """initiatorName → a dedicated iface with that initiator; login, record and session all use it."""
    name = iface_for(target())
    record = world.ops().stage(request(world))
    assert str(world.dev / "sda") == record.device
    assert [(name, INITIATOR)] == sessions(world)
    assert {
        "iface.iscsi_ifacename": name,
        "iface.transport_name": "tcp",
        "iface.initiatorname": INITIATOR,
    } == (world.iscsi_ifaces()[name])
    assert [f"{IQN}|{PORTAL}|{name}"] == list(world.state()["iscsi"]["records"])
    node_calls = [a for a in world.calls("iscsiadm") if a[:2] == ["-m", "node"]]
    assert [] == [a for a in node_calls if a[6:8] != ["--interface", name]]


def test_two_volumes_share_session_and_iface_until_the_last_unstage(world: FakeWorld) -> None:
    """Same target + initiator: one login, one session, one iface; both go only with the last volume."""
    ops = world.ops()
    one, two = request(world, "vol-1"), request(world, "vol-2", lun_no=2)
    ops.stage(one)
    ops.stage(two)
    name = iface_for(target())
    assert (1, 1, [(name, INITIATOR)]) == (
        len([a for a in world.calls("iscsiadm") if "--login" in a]),
        len(iface_calls(world, "update")),
        sessions(world),
    )
    ops.unstage("vol-1", one.staging_path)
    assert ([(name, INITIATOR)], [name], []) == (
        sessions(world),
        list(world.iscsi_ifaces()),
        [a for a in world.calls("iscsiadm") if "--logout" in a],
    )
    ops.unstage("vol-2", two.staging_path)
    assert ([], {}, {}, []) == (
        world.iscsi_sessions(),
        world.iscsi_ifaces(),
        world.state()["iscsi"]["records"],
        world.stash_files(),
    )


def test_session_of_another_initiator_is_not_reused_nor_logged_out(world: FakeWorld) -> None:
    """A session to the same portal+IQN as the host's initiator is neither reused nor touched by unstage."""
    world.iscsi(
        host_initiator=HOST_INITIATOR,
        targets={
            IQN: {"portal": PORTAL, "acl": [INITIATOR, HOST_INITIATOR], "luns": {"1": lun(), "2": lun()}}
        },
    )
    ops = world.ops()
    host_volume = request(world, "vol-host", lun_no=2, initiator_name="")
    mine = request(world, "vol-1")
    ops.stage(host_volume)
    ops.stage(mine)
    name = iface_for(target())
    assert sorted([("default", HOST_INITIATOR), (name, INITIATOR)]) == sessions(world)
    ops.unstage("vol-1", mine.staging_path)
    assert ([("default", HOST_INITIATOR)], {}) == (sessions(world), world.iscsi_ifaces())
    ops.unstage("vol-host", host_volume.staging_path)
    assert [] == world.iscsi_sessions()


def test_different_initiators_get_their_own_iface_and_session(world: FakeWorld) -> None:
    """Two initiators on one target → two ifaces and sessions; unstaging one leaves the other intact."""
    world.iscsi(
        targets={
            IQN: {"portal": PORTAL, "acl": [INITIATOR, OTHER_INITIATOR], "luns": {"1": lun(), "2": lun()}}
        }
    )
    ops = world.ops()
    one, two = request(world, "vol-1"), request(world, "vol-2", lun_no=2, initiator_name=OTHER_INITIATOR)
    ops.stage(one)
    ops.stage(two)
    mine, other = iface_for(target()), iface_for(target(initiator_name=OTHER_INITIATOR))
    assert sorted([(mine, INITIATOR), (other, OTHER_INITIATOR)]) == sessions(world)
    ops.unstage("vol-1", one.staging_path)
    assert ([(other, OTHER_INITIATOR)], [other]) == (sessions(world), list(world.iscsi_ifaces()))
    ops.unstage("vol-2", two.staging_path)
    assert ([], {}) == (world.iscsi_sessions(), world.iscsi_ifaces())


@pytest.mark.parametrize(
    ("base", "configured", "copied"),
    [
        ("iface0", {"net_ifacename": "eth1"}, {"iface.net_ifacename": "eth1", "iface.transport_name": "tcp"}),
        (
            "bnx2i.00:10:18:aa:bb:cc",
            {"transport_name": "bnx2i", "hwaddress": "00:10:18:aa:bb:cc", "ipaddress": "10.0.0.9"},
            {
                "iface.transport_name": "bnx2i",
                "iface.hwaddress": "00:10:18:aa:bb:cc",
                "iface.ipaddress": "10.0.0.9",
            },
        ),
        ("iser", None, {"iface.transport_name": "iser"}),
    ],
)
def test_base_iface_binding_is_copied_to_the_dedicated_iface(
    world: FakeWorld, base: str, configured: dict[str, str] | None, copied: dict[str, str]
) -> None:
    """A non-default iscsiInterface lends transport and binding to the dedicated iface and stays untouched."""
    if configured is not None:
        world.add_iscsi_iface(base, **configured)
    before = world.iscsi_ifaces()
    ops = world.ops()
    req = request(world, iscsi_interface=base)
    ops.stage(req)
    name = iface_for(target(iscsi_interface=base))
    expected = {"iface.iscsi_ifacename": name, "iface.initiatorname": INITIATOR} | copied
    assert (expected, [(name, INITIATOR)]) == (world.iscsi_ifaces()[name], sessions(world))
    assert [] == [a for a in world.calls("iscsiadm") if a[:4] == ["-m", "iface", "-I", base] and "--op" in a]
    ops.unstage("vol-1", req.staging_path)
    assert before == world.iscsi_ifaces()


def test_non_default_iscsi_interface_without_initiator_is_used_as_is(world: FakeWorld) -> None:
    """No initiatorName: every node command names the PV's iscsiInterface; no iface is created or deleted."""
    world.iscsi(targets={IQN: {"portal": PORTAL, "luns": {"1": lun()}}})
    world.add_iscsi_iface("iface0", net_ifacename="eth1")
    ops = world.ops()
    req = request(world, initiator_name="", iscsi_interface="iface0")
    ops.stage(req)
    node_calls = [a for a in world.calls("iscsiadm") if a[:2] == ["-m", "node"]]
    assert ([], [("iface0", HOST_INITIATOR)]) == (
        [a for a in node_calls if a[6:8] != ["--interface", "iface0"]],
        sessions(world),
    )
    ops.unstage("vol-1", req.staging_path)
    assert ([], ["iface0"], []) == (
        world.iscsi_sessions(),
        list(world.iscsi_ifaces()),
        [a for a in world.calls("iscsiadm") if a[:2] == ["-m", "iface"]],
    )


def test_missing_base_iface_is_final_before_any_login(world: FakeWorld) -> None:
    """An iscsiInterface the node does not have is a final error; nothing is created or logged in."""
    with pytest.raises(FinalAttachError, match="iscsiInterface nosuch does not exist"):
        world.ops().stage(request(world, iscsi_interface="nosuch"))
    assert ([], {}, []) == (
        world.iscsi_sessions(),
        world.iscsi_ifaces(),
        [a for a in world.calls("iscsiadm") if a[:2] == ["-m", "node"]],
    )


@pytest.mark.parametrize(
    ("kw", "what"),
    [
        ({"initiator_name": "iqn.2024-01.x:y\niface.hwaddress = 00:11"}, "initiatorName"),
        ({"initiator_name": "provisioner"}, "initiatorName"),
        ({"iscsi_interface": "../../etc/passwd"}, "iscsiInterface"),
    ],
)
def test_unusable_names_are_refused_before_anything_is_stashed(
    world: FakeWorld, kw: dict[str, Any], what: str
) -> None:
    """An initiator or iface name iscsiadm would write into its config unsafely is an invalid request."""
    with pytest.raises(InvalidRequest, match=what):
        world.ops().stage(request(world, **kw))
    assert ([], []) == (world.stash_files(), world.calls("iscsiadm"))


def test_stale_initiator_in_an_existing_iface_is_corrected(world: FakeWorld) -> None:
    """An existing dedicated iface whose initiator was changed is updated before login (no new iface)."""
    name = iface_for(target())
    world.add_iscsi_iface(name, initiatorname="iqn.2000-01.stale:name")
    world.ops().stage(request(world))
    assert (
        [],
        [["-m", "iface", "-I", name, "--op", "update", "-n", "iface.initiatorname", "-v", INITIATOR]],
    ) == (
        iface_calls(world, "new"),
        iface_calls(world, "update"),
    )
    assert [(name, INITIATOR)] == sessions(world)


def test_iface_delete_failure_does_not_fail_unstage(world: FakeWorld) -> None:
    """A failing iface delete only warns: the volume is unstaged and its stash is gone."""
    ops = world.ops()
    req = request(world)
    ops.stage(req)
    world.set(fail={"iscsiadm:iface_delete": [15]})
    with capture_logs() as logs:
        ops.unstage("vol-1", req.staging_path)
    assert ([], [], ["iscsi_iface_delete_failed"]) == (
        world.iscsi_sessions(),
        world.stash_files(),
        [e["event"] for e in logs if e["log_level"] == "warning"],
    )


def test_unstage_after_a_crash_before_login_cleans_up(world: FakeWorld) -> None:
    """A stage that died at login left a stash: unstage finds no session and still removes the iface."""
    ops = world.ops()
    world.set(fail={"iscsiadm:login": [8]})
    req = request(world)
    with pytest.raises(RetryableAttachError, match="exit 8"):
        ops.stage(req)
    assert [iface_for(target())] == list(world.iscsi_ifaces())
    ops.unstage("vol-1", req.staging_path)
    assert ([], {}, {}) == (world.stash_files(), world.iscsi_ifaces(), world.state()["iscsi"]["records"])


def test_cli_stage_and_unstage_with_initiator(world: FakeWorld) -> None:
    """`cinder-attach stage` with an initiatorName context logs in past the ACL; unstage removes it all."""
    ctx, sec = world.root / "ctx.json", world.root / "sec.json"
    ctx.write_text(json.dumps(encode(target())))
    sec.write_text("{}")
    staging = str(world.root / "staging")
    stage = world.run_cli(
        "stage", "--volume-context", str(ctx), "--secrets", str(sec),
        "--staging-path", staging, "--volume-id", "vol-1", "--fs-type", "ext4",
    )  # fmt: skip
    assert (0, "", [(iface_for(target()), INITIATOR)]) == (stage.returncode, stage.stdout, sessions(world))
    unstage = world.run_cli("unstage", "--volume-id", "vol-1", "--staging-path", staging)
    assert (0, [], {}, []) == (
        unstage.returncode,
        world.iscsi_sessions(),
        world.iscsi_ifaces(),
        world.mounts_under(world.root),
    )


def test_rescan_uses_the_session_of_the_dedicated_iface(world: FakeWorld) -> None:
    """Expand rescans the session that belongs to the volume's iface, not another one to the same target."""
    world.iscsi(
        targets={
            IQN: {"portal": PORTAL, "acl": [INITIATOR, HOST_INITIATOR], "luns": {"1": lun(), "2": lun()}}
        }
    )
    ops = world.ops()
    ops.stage(request(world, "vol-host", lun_no=2, initiator_name=""))
    req = request(world)
    ops.stage(req)
    mine = next(s["sid"] for s in world.iscsi_sessions() if s["initiator"] == INITIATOR)
    ops.expand(volume_id="vol-1", volume_path=req.staging_path)
    assert [["-m", "session", "-r", mine, "--rescan"]] == [a for a in world.calls("iscsiadm") if "-r" in a]


def test_concurrent_stages_with_one_initiator_create_one_iface_and_one_session(world: FakeWorld) -> None:
    """Two volumes staged at once through one agent: the iface is made once and the session is shared."""
    ops = world.ops()
    requests = [request(world, "vol-1"), request(world, "vol-2", lun_no=2)]
    errors: list[BaseException] = []

    def stage(req: StageRequest) -> None:
        try:
            ops.stage(req)
        except BaseException as e:  # reported below; a thread must not swallow it
            errors.append(e)

    threads = [threading.Thread(target=stage, args=(r,)) for r in requests]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    name = iface_for(target())
    assert ([], [(name, INITIATOR)], 1, 2) == (
        errors,
        sessions(world),
        len(iface_calls(world, "new")),
        len(world.stash_files()),
    )
