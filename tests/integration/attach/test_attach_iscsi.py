"""iSCSI stage/unstage against the fake ``iscsiadm`` and its fake SCSI sysfs (reference/node-attach.md)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from attach.errors import (
    AttachError,
    AuthFailed,
    FinalAttachError,
    InvalidRequest,
    RetryableAttachError,
    WrongDevice,
)
from attach.node import StageRequest
from provisioner.csi_contract import IscsiPath, IscsiTarget, encode
from tests.fakes.world import FakeWorld

IQN = "iqn.2010-10.org.openstack:volume-1"
PORTAL = "10.0.0.5:3260"
USER, PASSWORD = "chapuser", "PlantedChapPassw0rd"
DUSER, DPASSWORD = "discuser", "PlantedDiscoveryPassw0rd"
WWID = "naa.600140512345678"


def lun(**kw: Any) -> dict[str, Any]:
    return {"wwid": WWID, "size": 64 << 20, "appear": "login"} | kw


@pytest.fixture
def world(tmp_path: Path) -> Iterator[FakeWorld]:
    w = FakeWorld(tmp_path)
    w.iscsi(
        targets={IQN: {"portal": PORTAL, "chap": None, "luns": {"1": lun(), "2": lun(wwid="naa.6001402")}}}
    )
    yield w
    w.cleanup()


def attrs(*paths: tuple[str, str, int], **kw: Any) -> dict[str, str]:
    chosen = paths or ((PORTAL, IQN, 1),)
    return encode(IscsiTarget(paths=tuple(IscsiPath(portal=p, iqn=q, lun=n) for p, q, n in chosen), **kw))


def request(world: FakeWorld, volume_id: str = "vol-1", **kw: Any) -> StageRequest:
    values: dict[str, Any] = {
        "volume_id": volume_id,
        "staging_path": str(world.root / "staging" / volume_id),
        "attributes": attrs(),
        "secrets": {},
        "fs_type": "ext4",
    }
    values.update(kw)
    return StageRequest(**values)


def test_login_stage_unstage_logs_out_and_deletes_record(world: FakeWorld) -> None:
    """Stage logs in and mounts the LUN; unstage unmounts, deletes the disk, logs out, drops the record."""
    ops = world.ops()
    req = request(world)
    record = ops.stage(req)
    assert str(world.dev / "sda") == record.device
    assert 1 == len(world.iscsi_sessions())
    ops.unstage("vol-1", req.staging_path)
    assert ([], {}, []) == (
        world.iscsi_sessions(),
        world.state()["iscsi"]["records"],
        world.mounts_under(world.root),
    )
    assert [] == world.stash_files()


def test_record_settings_scan_and_startup_manual(world: FakeWorld) -> None:
    """The node record gets node.session.scan=manual and node.startup=manual (automatic hangs boots)."""
    world.ops().stage(request(world))
    settings = record_lines(node_record(world))
    assert ("manual", "manual", "None") == (
        settings["node.session.scan"],
        settings["node.startup"],
        settings["node.session.auth.authmethod"],
    )


def node_record(world: FakeWorld, iqn: str = IQN, portal: str = PORTAL, iface: str = "default") -> Path:
    """The open-iscsi node record file the fake iscsiadm keeps (``--op new`` uses tpgt -1)."""
    ip, _, port = portal.rpartition(":")
    return world.iscsi_root / "nodes" / iqn / f"{ip.strip('[]')},{port},-1" / iface


def record_lines(path: Path) -> dict[str, str]:
    found = {}
    for line in path.read_text().splitlines():
        name, sep, value = line.partition(" = ")
        if sep:
            found[name] = value
    return found


def test_session_chap_password_in_the_record_file_never_in_argv_or_logs(world: FakeWorld) -> None:
    """The CHAP password reaches the node record file (0600) and the login, but no argv and no log event."""
    world.iscsi(
        targets={IQN: {"portal": PORTAL, "chap": {"user": USER, "password": PASSWORD}, "luns": {"1": lun()}}}
    )
    secrets = {"node.session.auth.username": USER, "node.session.auth.password": PASSWORD}
    with capture_logs() as logs:
        ops = world.ops()
        req = request(world, attributes=attrs(chap_session=True), secrets=secrets)
        ops.stage(req)
        record = node_record(world)
        settings, mode = record_lines(record), record.stat().st_mode & 0o777
        ops.unstage("vol-1", req.staging_path)
    assert ("CHAP", USER, PASSWORD, 0o600) == (
        settings["node.session.auth.authmethod"],
        settings["node.session.auth.username"],
        settings["node.session.auth.password"],
        mode,
    )
    assert [] == [e["argv"] for e in world.argv_log() if PASSWORD in " ".join(e["argv"])]
    assert 1 == len([a for a in world.calls("iscsiadm") if "--login" in a])
    assert [] == [e for e in logs if PASSWORD in repr(e)]
    assert (False, []) == (record.exists(), list(record.parent.parent.parent.glob("**/.*.tmp")))


def test_wrong_chap_is_final_auth_failure(world: FakeWorld) -> None:
    """Exit 24 (authorization failure) → AuthFailed, final."""
    world.iscsi(
        targets={IQN: {"portal": PORTAL, "chap": {"user": USER, "password": PASSWORD}, "luns": {"1": lun()}}}
    )
    secrets = {"node.session.auth.username": USER, "node.session.auth.password": "wrong"}
    with pytest.raises(AuthFailed) as err:
        world.ops().stage(request(world, attributes=attrs(chap_session=True), secrets=secrets))
    assert err.value.final


def test_chap_enabled_without_secret_is_invalid(world: FakeWorld) -> None:
    """chapAuthSession without the secret keys is an invalid request, before any login."""
    with pytest.raises(InvalidRequest):
        world.ops().stage(request(world, attributes=attrs(chap_session=True)))
    assert [] == [a for a in world.calls("iscsiadm") if "--login" in a]


def test_discovery_chap_uses_discoverydb(world: FakeWorld) -> None:
    """chapAuthDiscovery → discoverydb update with CHAP, then --discover, then login."""
    world.iscsi(
        targets={
            IQN: {
                "portal": PORTAL,
                "discovery_chap": {"user": DUSER, "password": DPASSWORD},
                "luns": {"1": lun()},
            }
        }
    )
    secrets = {"discovery.sendtargets.auth.username": DUSER, "discovery.sendtargets.auth.password": DPASSWORD}
    with capture_logs() as logs:
        world.ops().stage(request(world, attributes=attrs(chap_discovery=True), secrets=secrets))
    calls = world.calls("iscsiadm")
    discover = [
        "-m",
        "discoverydb",
        "-t",
        "sendtargets",
        "-p",
        PORTAL,
        "--interface",
        "default",
        "--discover",
    ]
    node_new = ["-m", "node", "-T", IQN, "-p", PORTAL, "--interface", "default", "--op", "new"]
    # discovery first: a sendtargets discovery rewrites the node records it finds with the defaults
    assert calls.index(discover) < calls.index(node_new)
    st_config = world.iscsi_root / "send_targets" / "10.0.0.5,3260" / "st_config"
    assert (DPASSWORD, 0o600) == (
        record_lines(st_config)["discovery.sendtargets.auth.password"],
        st_config.stat().st_mode & 0o777,
    )
    assert [] == [e for e in world.argv_log() if DPASSWORD in " ".join(e["argv"])]
    assert [] == [e for e in logs if DPASSWORD in repr(e)]


def test_wrong_discovery_chap_is_auth_failure(world: FakeWorld) -> None:
    """A refused discovery CHAP (24) is final."""
    world.iscsi(
        targets={
            IQN: {
                "portal": PORTAL,
                "discovery_chap": {"user": DUSER, "password": DPASSWORD},
                "luns": {"1": lun()},
            }
        }
    )
    secrets = {"discovery.sendtargets.auth.username": DUSER, "discovery.sendtargets.auth.password": "bad"}
    with pytest.raises(AuthFailed):
        world.ops().stage(request(world, attributes=attrs(chap_discovery=True), secrets=secrets))


def test_existing_session_is_reused_and_logout_waits_for_last_volume(world: FakeWorld) -> None:
    """Two volumes on one target share a session; logout happens only with the last unstage."""
    ops = world.ops()
    one = request(world, "vol-1")
    two = request(world, "vol-2", attributes=attrs((PORTAL, IQN, 2)))
    ops.stage(one)
    ops.stage(two)
    assert 1 == len([a for a in world.calls("iscsiadm") if "--login" in a])
    ops.unstage("vol-1", one.staging_path)
    assert 1 == len(world.iscsi_sessions())
    assert [] == [a for a in world.calls("iscsiadm") if "--logout" in a]
    ops.unstage("vol-2", two.staging_path)
    assert [] == world.iscsi_sessions()


def test_login_exit_15_session_exists_is_success(world: FakeWorld) -> None:
    """Login exit 15 (a concurrent login created the session) counts as logged in."""
    world.set(fail={"iscsiadm:login": [15]})
    record = world.ops().stage(request(world))
    assert str(world.dev / "sda") == record.device


@pytest.mark.parametrize(
    ("code", "error", "final"),
    [
        (4, RetryableAttachError, False),
        (5, RetryableAttachError, False),
        (8, RetryableAttachError, False),
        (20, RetryableAttachError, False),
        (19, FinalAttachError, True),
        (24, AuthFailed, True),
    ],
)
def test_login_exit_codes(world: FakeWorld, code: int, error: type, final: bool) -> None:
    """Each login exit code becomes a retryable or final error as the reference table says."""
    world.set(fail={"iscsiadm:login": [code]})
    with pytest.raises(error) as err:
        world.ops().stage(request(world))
    assert isinstance(err.value, AttachError)
    assert final == err.value.final
    assert f"exit {code}" in str(err.value)


def test_node_db_error_is_retried(world: FakeWorld) -> None:
    """Exit 6 (node database error) on an update is retried right away and then succeeds."""
    world.set(fail={"iscsiadm:update": [6, 6]})
    world.ops().stage(request(world))
    assert 1 == len(world.iscsi_sessions())


def test_show_exit_255_old_not_found_creates_record(world: FakeWorld) -> None:
    """Old iscsiadm's 255 "not found" on show is treated like 21 (no record): create it."""
    world.set(fail={"iscsiadm:show": [255]})
    world.ops().stage(request(world))
    new = [a for a in world.calls("iscsiadm") if "new" in a]
    assert ["-m", "node", "-T", IQN, "-p", PORTAL, "--interface", "default", "--op", "new"] == new[0]


def test_logout_no_session_codes_are_success(world: FakeWorld) -> None:
    """Logout exit 21/2 (no session, e.g. after a reboot) and delete 21 still finish unstage."""
    ops = world.ops()
    req = request(world)
    ops.stage(req)
    world.set(fail={"iscsiadm:logout": [2]})
    ops.unstage("vol-1", req.staging_path)
    assert [] == world.stash_files()


def test_late_lun_is_found_after_it_appears(world: FakeWorld) -> None:
    """A LUN that shows up in sysfs 0.4 s after login is found by polling."""
    world.iscsi(targets={IQN: {"portal": PORTAL, "luns": {"1": lun(appear="delay", delay=0.4)}}})
    record = world.ops().stage(request(world))
    assert str(world.dev / "sda") == record.device


def test_lun_needing_rescan_appears_after_scan_write(world: FakeWorld) -> None:
    """A LUN the kernel only finds on a host rescan appears once we write "0 0 <lun>" to scan."""
    world.iscsi(targets={IQN: {"portal": PORTAL, "luns": {"1": lun(appear="rescan")}}})
    started = time.monotonic()
    record = world.ops().stage(request(world))
    assert str(world.dev / "sda") == record.device
    # the LUN wait itself is bounded by iscsi_lun_timeout (1.5 s); the rest is ~11 fake-tool processes,
    # which take well over a second on a loaded 2-core CI machine
    assert time.monotonic() - started < 3.0
    scans = [p.read_text().split() for p in world.sysfs.glob("class/scsi_host/host*/scan")]
    assert [["0", "0", "1"]] == scans  # found through the rescan we wrote


def test_missing_lun_fails_retryably(world: FakeWorld) -> None:
    """A LUN that never appears fails retryably after the LUN timeout (rescans were attempted)."""
    world.iscsi(targets={IQN: {"portal": PORTAL, "luns": {"1": lun(appear="never")}}})
    with capture_logs() as logs, pytest.raises(RetryableAttachError, match="did not appear"):
        world.ops().stage(request(world))
    assert 2 == len([e for e in logs if e["event"] == "scsi_host_rescan"])


def test_wrong_wwid_is_refused(world: FakeWorld) -> None:
    """A LUN whose WWID differs from the PV's is never formatted or mounted."""
    with pytest.raises(WrongDevice):
        world.ops().stage(request(world, attributes=attrs(wwid="naa.6001405ffffffff")))
    assert ([], []) == (world.calls("mkfs.ext4"), world.calls("mount"))


def test_matching_wwid_with_prefix_differences_is_accepted(world: FakeWorld) -> None:
    """WWIDs compare without naa. prefix and case."""
    record = world.ops().stage(request(world, attributes=attrs(wwid="600140512345678".upper())))
    assert str(world.dev / "sda") == record.device


def test_multipath_uses_dm_device_and_flushes_it(world: FakeWorld) -> None:
    """Several portals → login on each; the common dm holder is the device; unstage runs multipath -f."""
    iqn2, portal2 = IQN + "-b", "10.0.0.6:3260"
    world.iscsi(
        multipath=True,
        targets={
            IQN: {"portal": PORTAL, "luns": {"1": lun(backing="shared")}},
            iqn2: {"portal": portal2, "luns": {"1": lun(backing="shared")}},
        },
    )
    ops = world.ops()
    req = request(world, attributes=attrs((PORTAL, IQN, 1), (portal2, iqn2, 1)))
    record = ops.stage(req)
    assert (str(world.dev / "dm-0"), ("sda", "sdb")) == (record.device, record.scsi_devices)
    ops.unstage("vol-1", req.staging_path)
    assert [["-f", str(world.dev / "dm-0")]] == world.calls("multipath")
    assert [] == world.iscsi_sessions()


def test_multipath_with_one_dead_path_uses_the_other(world: FakeWorld) -> None:
    """A path whose login fails is skipped when another path works."""
    world.iscsi(targets={IQN: {"portal": PORTAL, "luns": {"1": lun()}}})
    req = request(world, attributes=attrs(("10.9.9.9:3260", IQN + "-dead", 1), (PORTAL, IQN, 1)))
    record = world.ops().stage(req)
    assert str(world.dev / "sda") == record.device


def test_ipv4_portal_without_port_gets_3260(world: FakeWorld) -> None:
    """A portal without a port is addressed as ip:3260."""
    world.ops().stage(request(world, attributes=attrs(("10.0.0.5", IQN, 1))))
    assert ["-m", "node", "-T", IQN, "-p", PORTAL, "--interface", "default"] == world.calls("iscsiadm")[0]


def test_stage_after_reboot_logs_in_again(world: FakeWorld) -> None:
    """After a reboot (sessions and mounts gone, stash kept) stage logs in again without mkfs."""
    ops = world.ops()
    req = request(world)
    ops.stage(req)
    import shutil

    shutil.rmtree(world.sysfs)
    world.sysfs.mkdir()
    for node in world.dev.iterdir():
        node.unlink()
    world.mountinfo.write_text("")
    (world.world / "state.json").unlink()
    ops.stage(req)
    assert 2 == len([a for a in world.calls("iscsiadm") if "--login" in a])
    assert 1 == len(world.calls("mkfs.ext4"))


def test_stale_chap_in_existing_record_is_rewritten(world: FakeWorld) -> None:
    """A node record left with old CHAP credentials is updated before login (CHAP re-applied every time)."""
    import json

    world.iscsi(
        targets={IQN: {"portal": PORTAL, "chap": {"user": USER, "password": PASSWORD}, "luns": {"1": lun()}}}
    )
    record = {"iqn": IQN, "portal": PORTAL, "iface": "default", "tpgt": -1}
    (world.world / "state.json").write_text(
        json.dumps({"iscsi": {"records": {f"{IQN}|{PORTAL}|default": record}}})
    )
    path = node_record(world)
    path.parent.mkdir(parents=True)
    path.write_text(
        "# BEGIN RECORD 2.1.9\nnode.name = " + IQN + "\nnode.session.auth.authmethod = CHAP\n"
        "node.session.auth.username = old\nnode.session.auth.password = old\n# END RECORD\n"
    )
    secrets = {"node.session.auth.username": USER, "node.session.auth.password": PASSWORD}
    world.ops().stage(request(world, attributes=attrs(chap_session=True), secrets=secrets))
    assert [] == [a for a in world.calls("iscsiadm") if "new" in a]
    assert 1 == len(world.iscsi_sessions())
    lines = path.read_text().splitlines()
    assert ["node.session.auth.password = " + PASSWORD] == [x for x in lines if "auth.password" in x]
    assert "# END RECORD" == lines[-1]


def test_detach_flushes_and_deletes_the_scsi_disk(world: FakeWorld) -> None:
    """Unstage runs blockdev --flushbufs and writes 1 to the disk's sysfs delete file before logout."""
    ops = world.ops()
    req = request(world, "vol-1")
    two = request(world, "vol-2", attributes=attrs((PORTAL, IQN, 2)))
    ops.stage(req)
    ops.stage(two)
    ops.unstage("vol-1", req.staging_path)
    assert [["--flushbufs", str(world.dev / "sda")]] == world.calls("blockdev")
    assert "1" == (world.sysfs / "block" / "sda" / "device" / "delete").read_text()
    ops.unstage("vol-2", two.staging_path)


def test_iscsiadm_is_serialized_per_target(world: FakeWorld) -> None:
    """While one thread holds a target's lock, another waits for it; a different target does not wait."""
    import threading

    from attach.stash import Locks

    locks = Locks(world.state_dir)
    entered = threading.Event()
    other_target = threading.Event()

    def same() -> None:
        with locks.target(f"{PORTAL},{IQN}"):
            entered.set()

    def different() -> None:
        with locks.target("10.0.0.9:3260,iqn.other"):
            other_target.set()

    with locks.target(f"{PORTAL},{IQN}"):
        t1, t2 = threading.Thread(target=same), threading.Thread(target=different)
        t1.start()
        t2.start()
        assert other_target.wait(5)
        assert not entered.wait(0.2)
    assert entered.wait(5)
    t1.join()
    t2.join()
