"""``real_cinder.tgt`` on its own: a real tgtd starts, serves a CHAP target, and leaves nothing behind.

The Cinder-backed round trip is in ``test_real_iscsi.py``; these tests pin the parts it relies on: the
wrappers reach only our daemon, tgtd stops even with targets exported, the initiator gets credentials
through its environment (never argv), a missing package is named, and the two tgtd facts the
``iscsi-tgt`` backend is built on: initiator names restrict a target only when an address is listed too
(tgtd admits a name *or* an address; tgt-admin binds ALL when none is listed), and an account bound
without ``--tid`` makes tgtd demand discovery CHAP.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path

import pytest

from provisioner.testworld.real_cinder import tgt
from tests.e2e.ceph_world import require

_GIB = 1024**3
_INITIATOR = "iqn.2024-01.io.netvol:target-test"
_IQN = "iqn.2010-10.org.openstack:volume-target-test"
_OTHER_INITIATOR = "iqn.2024-01.io.netvol:someone-else"


def _alive(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "State:\tZ" not in status


def _listening(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


@pytest.mark.cinder_real
def test_tgtd_serves_a_chap_target_and_leaves_nothing_behind(tmp_path: Path) -> None:
    """A target made with the wrappers takes its CHAP account only; stopping removes daemon, port, sockets."""
    require(tgt.missing_tools(), "the real iSCSI target")
    backing = tmp_path / "lun.img"
    with backing.open("wb") as f:
        f.truncate(3 * _GIB)
    chap = tgt.Chap(username="target-test-user", password="target-test-pass-0123")
    with tgt.start_tgtd(tmp_path / "tgt") as handle:
        control = tgt.CONTROL_SOCKET_DIR / f"socket.{handle.control_port}"
        sockets = [control, control.with_name(control.name + ".lock")]
        assert all(s.exists() for s in sockets)
        assert _listening(handle.host, handle.port)
        # the way Cinder's TgtAdm makes a target: a persistence file in targets_dir + tgt-admin --update
        (handle.targets_dir / "volume-target-test").write_text(
            f"<target {_IQN}>\n    backing-store {backing}\n    driver iscsi\n"
            f"    incominguser {chap.username} {chap.password}\n</target>\n"
        )
        update = subprocess.run(
            [str(handle.bin_dir / "tgt-admin"), "--update", _IQN], capture_output=True, text=True, check=False
        )
        assert 0 == update.returncode, update.stderr
        assert [_IQN] == handle.target_names()
        assert [chap.username] == handle.accounts()

        size, result = tgt.read_capacity(handle.portal, _IQN, 1, initiator=_INITIATOR, chap=chap)
        assert (0, 3 * _GIB) == (result.returncode, size), result.stderr
        wrong = tgt.Chap(username=chap.username, password="not-the-password-0")
        size, result = tgt.read_capacity(handle.portal, _IQN, 1, initiator=_INITIATOR, chap=wrong)
        assert (None, True) == (size, result.auth_failed)
        size, result = tgt.read_capacity(handle.portal, _IQN, 1, initiator=_INITIATOR, chap=None)
        assert (None, True) == (size, result.auth_failed)
        pid = handle.pid
        stopping = time.monotonic()
    # stopped with the target still exported (tgtd refuses "delete system" then, so the targets go first;
    # a SIGKILL fallback would take the 10 s deadline): no process, no portal, no control socket files
    assert time.monotonic() - stopping < 5
    assert not _alive(pid)
    assert not _listening(handle.host, handle.port)
    assert [] == [s for s in sockets if s.exists()]


@pytest.mark.cinder_real
def test_two_daemons_do_not_meet(tmp_path: Path) -> None:
    """Each tgtd has its own control port and portal; one's wrappers never see the other's targets."""
    require(tgt.missing_tools(), "the real iSCSI target")
    backing = tmp_path / "lun.img"
    backing.write_bytes(b"\0" * 1024 * 1024)
    with tgt.start_tgtd(tmp_path / "a") as a, tgt.start_tgtd(tmp_path / "b") as b:
        assert a.control_port != b.control_port
        assert a.port != b.port
        (a.targets_dir / "only-a").write_text(
            f"<target {_IQN}>\n    backing-store {backing}\n    driver iscsi\n</target>\n"
        )
        done = subprocess.run(
            [str(a.bin_dir / "tgt-admin"), "--update", _IQN], capture_output=True, check=False
        )
        assert 0 == done.returncode
        assert [_IQN] == a.target_names()
        assert [] == b.target_names()


def _export(handle: tgt.TgtHandle, backing: Path, *lines: str) -> None:
    """A persistence file with ``lines`` in the target block, applied with tgt-admin --update."""
    body = "".join(f"    {line}\n" for line in lines)
    (handle.targets_dir / "volume-target-test").write_text(
        f"<target {_IQN}>\n    backing-store {backing}\n    driver iscsi\n{body}</target>\n"
    )
    update = subprocess.run(
        [str(handle.bin_dir / "tgt-admin"), "--update", _IQN], capture_output=True, text=True, check=False
    )
    assert 0 == update.returncode, update.stdout + update.stderr


@pytest.mark.cinder_real
def test_initiator_names_restrict_a_target_only_with_an_address_listed(tmp_path: Path) -> None:
    """initiator-name + the deny address admits only that name (login and SendTargets); the name alone
    admits everyone, because tgt-admin then binds ALL and tgtd admits a listed name *or* address."""
    require(tgt.missing_tools(), "the real iSCSI target")
    backing = tmp_path / "lun.img"
    backing.write_bytes(b"\0" * 1024 * 1024)
    with tgt.start_tgtd(tmp_path / "tgt") as handle:
        _export(handle, backing, f"initiator-name {_INITIATOR}", "initiator-address 0.0.0.0/32")
        assert sorted([_INITIATOR, "0.0.0.0/32"]) == sorted(handle.acl(_IQN))
        size, result = tgt.read_capacity(handle.portal, _IQN, 1, initiator=_INITIATOR, chap=None)
        assert (0, 1024 * 1024) == (result.returncode, size), result.stderr
        size, result = tgt.read_capacity(handle.portal, _IQN, 1, initiator=_OTHER_INITIATOR, chap=None)
        assert (None, True) == (size, result.target_not_found), result.stderr
        found, result = tgt.send_targets(handle.portal, initiator=_INITIATOR, chap=None)
        assert [(_IQN, handle.portal)] == found, result.stderr
        found, result = tgt.send_targets(handle.portal, initiator=_OTHER_INITIATOR, chap=None)
        assert [] == found, result.stderr  # the ACL filters SendTargets too

        (handle.targets_dir / "volume-target-test").unlink()
        subprocess.run([str(handle.bin_dir / "tgt-admin"), "--delete", _IQN], check=True, capture_output=True)
        _export(handle, backing, f"initiator-name {_INITIATOR}")
        assert sorted(["ALL", _INITIATOR]) == sorted(handle.acl(_IQN))
        size, result = tgt.read_capacity(handle.portal, _IQN, 1, initiator=_OTHER_INITIATOR, chap=None)
        assert (0, 1024 * 1024) == (result.returncode, size), result.stderr


@pytest.mark.cinder_real
def test_an_account_bound_to_discovery_makes_tgtd_demand_discovery_chap(tmp_path: Path) -> None:
    """Without a discovery account SendTargets is open; once one is bound (no --tid) only its credentials
    discover; they are not the target's session credentials, and the session's are not the discovery's."""
    require(tgt.missing_tools(), "the real iSCSI target")
    backing = tmp_path / "lun.img"
    backing.write_bytes(b"\0" * 1024 * 1024)
    session = tgt.Chap(username="session-user", password="session-pass-0123")
    discovery = tgt.Chap(username="discovery-user", password="discovery-pass-0123")
    with tgt.start_tgtd(tmp_path / "tgt") as handle:
        _export(handle, backing, f"incominguser {session.username} {session.password}")
        found, result = tgt.send_targets(handle.portal, initiator=_INITIATOR, chap=None)
        assert [(_IQN, handle.portal)] == found, result.stderr
        assert [] == handle.discovery_accounts()

        for args in (
            (
                "--op",
                "new",
                "--mode",
                "account",
                "--user",
                discovery.username,
                "--password",
                discovery.password,
            ),
            ("--op", "bind", "--mode", "account", "--user", discovery.username),
        ):
            done = handle.tgtadm("--lld", "iscsi", *args)
            assert 0 == done.returncode, done.stderr
        assert [discovery.username] == handle.discovery_accounts()

        found, result = tgt.send_targets(handle.portal, initiator=_INITIATOR, chap=discovery)
        assert [(_IQN, handle.portal)] == found, result.stderr
        wrong = tgt.Chap(username=discovery.username, password="not-the-password-0")
        for chap in (wrong, session, None):
            found, result = tgt.send_targets(handle.portal, initiator=_INITIATOR, chap=chap)
            assert (None, True) == (found, result.auth_failed), (chap, result.stderr)
        size, result = tgt.read_capacity(handle.portal, _IQN, 1, initiator=_INITIATOR, chap=discovery)
        assert (None, True) == (size, result.auth_failed)
        size, result = tgt.read_capacity(handle.portal, _IQN, 1, initiator=_INITIATOR, chap=session)
        assert (0, 1024 * 1024) == (result.returncode, size), result.stderr


def test_missing_packages_are_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the executables, start_tgtd fails naming the Debian packages; nothing is started."""
    monkeypatch.setenv("PATH", str(tmp_path))
    assert [
        "tgtd",
        "tgtadm",
        "tgt-admin",
        "iscsi-readcapacity16",
        "iscsi-inq",
        "iscsi-ls",
        "iscsi-perf",
    ] == tgt.missing_tools()
    with (
        pytest.raises(tgt.TgtError, match="install the Debian packages tgt libiscsi-bin"),
        tgt.start_tgtd(tmp_path),
    ):
        pass
    assert not (tmp_path / "tgtd.log").exists()


def test_initiator_gets_chap_through_its_environment_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """read_capacity passes CHAP in LIBISCSI_CHAP_* only: never in argv, the URL or its result."""
    record = tmp_path / "record"
    tool = tmp_path / "iscsi-readcapacity16"
    tool.write_text(
        "#!/bin/sh\n"
        f'printf "%s\\n" "$@" > {record}.argv\n'
        f'printf "%s\\n%s\\n" "$LIBISCSI_CHAP_USERNAME" "$LIBISCSI_CHAP_PASSWORD" > {record}.env\n'
        'echo "Total size:1073741824"\n'
    )
    tool.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("LIBISCSI_CHAP_PASSWORD", "inherited-must-not-leak")
    chap = tgt.Chap(username="env-user", password="env-password-123")
    size, result = tgt.read_capacity("127.0.0.1:3260", _IQN, 1, initiator=_INITIATOR, chap=chap)
    assert 1 * _GIB == size
    argv = Path(f"{record}.argv").read_text().splitlines()
    assert ["-i", _INITIATOR, f"iscsi://127.0.0.1:3260/{_IQN}/1"] == argv
    assert ["env-user", "env-password-123"] == Path(f"{record}.env").read_text().splitlines()
    assert "env-password-123" not in repr(chap) + repr(result)
    # no credentials: the inherited variables are dropped, not passed on
    tgt.read_capacity("127.0.0.1:3260", _IQN, 1, initiator=_INITIATOR, chap=None)
    assert ["", ""] == Path(f"{record}.env").read_text().splitlines()
