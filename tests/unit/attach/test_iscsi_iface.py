"""Pure parts of ``attach.iscsi_iface``: session tree and iface record parsing, iface naming, name checks."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from attach.errors import InvalidRequest
from attach.iscsi_iface import (
    Session,
    check_names,
    iface_for,
    ifaces_of,
    parse_iface_record,
    parse_session_tree,
    session_keys,
    session_matches,
)
from provisioner.csi_contract import IscsiPath, IscsiTarget

# As open-iscsi prints it: the second session to the same portal follows a blank line, no portal lines.
TREE = """Target: iqn.2010-10.org.openstack:volume-1 (non-flash)
\tCurrent Portal: 10.0.0.7:3260,1
\tPersistent Portal: 10.0.0.5:3260,1
\t\t**********
\t\tInterface:
\t\t**********
\t\tIface Name: default
\t\tIface Transport: tcp
\t\tIface Initiatorname: iqn.1993-08.org.debian:01:abc
\t\tIface IPaddress: 10.0.0.2
\t\tIface HWaddress: <empty>
\t\tIface Netdev: <empty>
\t\tSID: 3
\t\tiSCSI Connection State: LOGGED IN
\t\tiSCSI Session State: LOGGED_IN
\t\tInternal iscsid Session State: NO CHANGE

\t\t**********
\t\tInterface:
\t\t**********
\t\tIface Name: cinder-0123abcd
\t\tIface Transport: tcp
\t\tIface Initiatorname: iqn.2024-01.io.netvol:provisioner
\t\tIface IPaddress: 10.0.0.2
\t\tIface HWaddress: <empty>
\t\tIface Netdev: <empty>
\t\tSID: 4
\t\tiSCSI Connection State: LOGGED IN
Target: iqn.x:y
\tCurrent Portal: [fd00::5]:3260,1
\tPersistent Portal: [fd00::5]:3260,1
\t\t**********
\t\tInterface:
\t\t**********
\t\tIface Name: <empty>
\t\tIface Transport: tcp
\t\tIface Initiatorname: <empty>
\t\tIface IPaddress: [fd00::2]
\t\tSID: 12
"""


def test_parse_session_tree() -> None:
    """Persistent portal, iface and initiator per session; a portal carries over; <empty> → defaults."""
    assert [
        Session(
            sid="3",
            portal="10.0.0.5:3260",
            iqn="iqn.2010-10.org.openstack:volume-1",
            iface="default",
            initiator="iqn.1993-08.org.debian:01:abc",
        ),
        Session(
            sid="4",
            portal="10.0.0.5:3260",
            iqn="iqn.2010-10.org.openstack:volume-1",
            iface="cinder-0123abcd",
            initiator="iqn.2024-01.io.netvol:provisioner",
        ),
        Session(sid="12", portal="[fd00::5]:3260", iqn="iqn.x:y", iface="default", initiator=""),
    ] == parse_session_tree(TREE)


_name = st.from_regex(r"\A[a-z][a-z0-9.:-]{0,20}\Z")
_portal = st.sampled_from(["10.0.0.5:3260", "10.0.0.6:3261", "[fd00::5]:3260"])


@given(
    st.lists(
        st.tuples(_name.map(lambda n: "iqn." + n), _portal, _name, st.one_of(st.just(""), _name)),
        max_size=6,
    )
)
def test_parse_session_tree_round_trip(rows: list[tuple[str, str, str, str]]) -> None:
    """Whatever sessions open-iscsi prints (grouped by target and portal) parse back to the same set."""
    sessions = [
        Session(sid=str(i + 1), portal=p, iqn=q, iface=f, initiator=n) for i, (q, p, f, n) in enumerate(rows)
    ]
    lines, last = [], ("", "")
    for s in sorted(sessions, key=lambda s: (s.iqn, s.portal, int(s.sid))):
        if s.iqn != last[0]:
            lines.append(f"Target: {s.iqn} (non-flash)")
            last = (s.iqn, "")
        if s.portal != last[1]:
            lines += [f"\tCurrent Portal: {s.portal},1", f"\tPersistent Portal: {s.portal},1"]
            last = (s.iqn, s.portal)
        else:
            lines.append("")
        lines += ["\t\t**********", "\t\tInterface:", "\t\t**********", f"\t\tIface Name: {s.iface}"]
        lines += [f"\t\tIface Initiatorname: {s.initiator or '<empty>'}", f"\t\tSID: {s.sid}"]
    expected = sorted(sessions, key=lambda s: int(s.sid))
    assert expected == sorted(parse_session_tree("\n".join(lines)), key=lambda s: int(s.sid))


def test_parse_iface_record() -> None:
    """`iscsiadm -m iface -I X` settings; <empty> → "", comments and non-iface lines skipped."""
    text = (
        "# BEGIN RECORD 2.1.9\n"
        "iface.iscsi_ifacename = iface0\n"
        "iface.net_ifacename = eth1\n"
        "iface.hwaddress = <empty>\n"
        "iface.transport_name = tcp\n"
        "# END RECORD\n"
    )
    assert {
        "iface.iscsi_ifacename": "iface0",
        "iface.net_ifacename": "eth1",
        "iface.hwaddress": "",
        "iface.transport_name": "tcp",
    } == parse_iface_record(text)


def _target(initiator: str = "", base: str = "default", portal: str = "10.0.0.5") -> IscsiTarget:
    return IscsiTarget(
        paths=(IscsiPath(portal=portal, iqn="iqn.t:1", lun=1),),
        initiator_name=initiator,
        iscsi_interface=base,
    )


def test_iface_naming() -> None:
    """No initiator → the PV's iface; otherwise cinder-<hash of base+initiator>, stable and distinct."""
    a = iface_for(_target("iqn.2024-01.a:b"))
    assert ("iface0", a, 15) == (
        iface_for(_target(base="iface0")),
        iface_for(_target("iqn.2024-01.a:b")),
        len(a),
    )
    assert 3 == len(
        {a, iface_for(_target("iqn.2024-01.a:c")), iface_for(_target("iqn.2024-01.a:b", "iface0"))}
    )


def test_session_keys_and_ifaces_of_skip_invalid_targets() -> None:
    """Keys carry the normalized portal and the iface; a target with an unusable name contributes nothing."""
    good, bad = _target("iqn.2024-01.a:b"), _target("not an iqn")
    name = iface_for(good)
    assert ({("10.0.0.5:3260", "iqn.t:1", name)}, {name}) == (
        session_keys([good, bad]),
        ifaces_of([good, bad]),
    )


@pytest.mark.parametrize(
    ("session", "initiator", "expected"),
    [
        (Session(sid="1", portal="p:1", iqn="q", iface="i", initiator="iqn.A:b"), "iqn.a:B", True),
        (Session(sid="1", portal="p:1", iqn="q", iface="i", initiator="iqn.other"), "iqn.a:b", False),
        (Session(sid="1", portal="p:1", iqn="q", iface="default", initiator="iqn.a:b"), "iqn.a:b", False),
        (Session(sid="1", portal="p:1", iqn="q", iface="i", initiator="iqn.any"), "", True),
        (Session(sid="1", portal="p:2", iqn="q", iface="i", initiator="iqn.a:b"), "iqn.a:b", False),
    ],
)
def test_session_matches(session: Session, initiator: str, expected: bool) -> None:
    """Portal, IQN and iface must be equal; the initiator too (case-insensitively) when one is required."""
    assert expected == session_matches(session, portal="p:1", iqn="q", iface="i", initiator=initiator)


@pytest.mark.parametrize(
    ("initiator", "base", "valid"),
    [
        ("iqn.2024-01.io.netvol:provisioner", "default", True),
        ("eui.02004567A425678D", "bnx2i.00:10:18:aa:bb:cc", True),
        ("naa.52004567BA64678D", "iface_0", True),
        ("", "default", True),
        ("provisioner", "default", False),
        ("iqn.a:b c", "default", False),
        ("iqn.a:b\niface.hwaddress = x", "default", False),
        ("", "../etc", False),
        ("", "", False),
        ("", "x" * 65, False),
    ],
)
def test_check_names(initiator: str, base: str, valid: bool) -> None:
    """Initiators must be iqn./eui./naa. names without whitespace; iface names safe file names ≤ 64."""
    assert valid == _accepted(_target(initiator, base))


def _accepted(target: IscsiTarget) -> bool:
    try:
        check_names(target)
    except InvalidRequest:
        return False
    return True
