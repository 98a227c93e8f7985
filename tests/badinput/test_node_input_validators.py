"""Every validator of ``provisioner.domain.node_input``: a table of hostile values, then hypothesis.

Table: each refused value raises ``InvalidInput`` whose ``field`` is the one passed in, whose message is
one line and never quotes the value. Hypothesis: for arbitrary text, a validator either returns the value
unchanged (and then it never starts with ``-``, never holds whitespace, NUL or ``..``, and validates
again to itself) or raises ``InvalidInput`` naming the field.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from provisioner.domain import node_input as v
from provisioner.domain.errors import InvalidInput

ROOT = "/var/lib/kubelet"
SECRETISH = "S3cr3t-Planted"


def path(value: object, *, field: str = "staging_target_path") -> str:
    return v.node_path(value, field=field, root=ROOT)


STRING_VALIDATORS: dict[str, Callable[..., Any]] = {
    "pool": v.pool,
    "radosNamespace": v.rados_namespace,
    "image": v.image,
    "user": v.cephx_user,
    "monitors": v.monitor,
    "portal": v.portal,
    "iqn": v.iscsi_name,
    "iscsiInterface": v.iscsi_interface,
    "chap username": v.chap_user,
    "chap password": v.chap_secret,
    "fsType": v.fs_type,
    "mount_flags": v.mount_flag,
    "volume_id": v.volume_id,
    "staging_target_path": path,
    "key": v.cephx_key,
}

REFUSED: list[tuple[str, object]] = [
    ("pool", "--id=admin"),
    ("pool", "-p"),
    ("pool", "vol/umes"),
    ("pool", "vol umes"),
    ("pool", "vol@snap"),
    ("pool", ""),
    ("pool", ".hidden"),
    ("pool", "a..b"),
    ("pool", "p\x00"),
    ("pool", "p" * 129),
    ("pool", 7),
    ("radosNamespace", "--namespace=x"),
    ("radosNamespace", "ns/x"),
    ("image", "--keyring=/etc/ceph/ceph.client.admin.keyring"),
    ("image", "img@snap"),
    ("image", "../img"),
    ("image", "img\nx"),
    ("image", "i" * 256),
    ("user", "--id"),
    ("user", "--keyring=/etc/ceph/ceph.client.admin.keyring"),
    ("user", "admin user"),
    ("user", "u" * 65),
    ("user", "client/x"),
    ("monitors", "--keyring=/x"),
    ("monitors", "-m"),
    ("monitors", "10.0.0.1"),
    ("monitors", "10.0.0.1:0"),
    ("monitors", "10.0.0.1:65536"),
    ("monitors", "10.0.0.1:06789"),
    ("monitors", "fd00::1:6789"),
    ("monitors", "[fd00::zz]:6789"),
    ("monitors", "[fd00::1]"),
    ("monitors", "mon_1:6789"),
    ("monitors", "mon 1:6789"),
    ("monitors", "10.0.0.1:6789,10.0.0.2:6789"),
    ("monitors", "-mon:6789"),
    ("portal", "--interface=evil"),
    ("portal", "-p"),
    ("portal", "10.0.0.1:3260;reboot"),
    ("portal", "10.0.0.1 :3260"),
    ("portal", "[::1"),
    ("portal", "h:99999"),
    ("portal", "a" * 301),
    ("iqn", "-iqn.2010-10.org.openstack:volume-1"),
    ("iqn", "--targetname=x"),
    ("iqn", "iqn.2010-10.org.openstack:../../etc"),
    ("iqn", "iqn.2010-10.org.openstack:vol/1"),
    ("iqn", "iqn.2010-10.org.openstack:vol 1"),
    ("iqn", "iqn.2010-13.org.openstack:v"),
    ("iqn", "iqn.a:b"),
    ("iqn", "eui.123"),
    ("iqn", "naa.12345678901234567"),
    ("iqn", "iqn.2010-10.org.openstack:" + "x" * 200),
    ("iqn", "iqn.2010-10.org.openstack:v\niface.hwaddress = x"),
    ("iscsiInterface", "--op=delete"),
    ("iscsiInterface", "../default"),
    ("iscsiInterface", "if ace"),
    ("iscsiInterface", "i" * 65),
    ("chap username", "-u"),
    ("chap username", "user name"),
    ("chap username", ""),
    ("chap username", "u" * 256),
    ("chap password", SECRETISH + "\nnode.startup = automatic"),
    ("chap password", SECRETISH + " tail"),
    ("chap password", "-" + SECRETISH),
    ("chap password", SECRETISH + "\x00"),
    ("chap password", SECRETISH + "é"),
    ("chap password", "p" * 256),
    ("fsType", "ext4 -O ^has_journal"),
    ("fsType", "ntfs"),
    ("fsType", "-t"),
    ("fsType", "EXT4"),
    ("mount_flags", "loop"),
    ("mount_flags", "offset=4096"),
    ("mount_flags", "--bind"),
    ("mount_flags", "remount"),
    ("mount_flags", 'context="system_u:object_r:tmp_t:s0"'),
    ("mount_flags", "noatime,loop"),
    ("mount_flags", "errors=remount-ro panic"),
    ("mount_flags", "data=-x"),
    ("mount_flags", "noatime=1"),
    ("mount_flags", "uid=0"),
    ("volume_id", "v" * 129),
    ("volume_id", "-vol"),
    ("volume_id", "vol/1"),
    ("volume_id", "../vol"),
    ("volume_id", "vol 1"),
    ("volume_id", ""),
    ("volume_id", "vol\x00"),
    ("staging_target_path", "relative/path"),
    ("staging_target_path", ROOT + "/pv/../../../etc"),
    ("staging_target_path", ROOT + "/pv/./x"),
    ("staging_target_path", ROOT + "//pv"),
    ("staging_target_path", ROOT + "/pv/"),
    ("staging_target_path", ROOT + "/pv\x00/x"),
    ("staging_target_path", ROOT + "/pv\n/x"),
    ("staging_target_path", ROOT),
    ("staging_target_path", "/var/lib/kubeletx/pv"),
    ("staging_target_path", "/etc/pv"),
    ("staging_target_path", ROOT + "/" + "d/" * 2500 + "x"),
    ("staging_target_path", ROOT + "/" + "n" * 256),
    ("staging_target_path", ""),
    ("key", SECRETISH),
    ("key", "AQB" + "A" * 20 + "==\n"),
    ("key", "--key=AQBAAAAAAAAAAAAAAAAAAA=="),
]


@pytest.mark.parametrize(("field", "value"), REFUSED, ids=[f"{f}:{repr(x)[:30]}" for f, x in REFUSED])
def test_refused(field: str, value: object) -> None:
    """The value is refused naming the field, in one line that does not quote the value."""
    with pytest.raises(InvalidInput) as err:
        STRING_VALIDATORS[field](value, field=field)
    message = str(err.value)
    assert field == err.value.field
    assert message.startswith(f"{field}: ")
    assert "\n" not in message
    # a refused mount option is named when its name is a plain word (not secret, one line, bounded)
    quotable = field == "mount_flags" or value == ROOT
    if isinstance(value, str) and len(value) > 3 and not quotable:
        assert value not in message


ACCEPTED: list[tuple[str, str]] = [
    ("pool", "volumes"),
    ("pool", "ssd_pool.v2-a"),
    ("radosNamespace", ""),
    ("radosNamespace", "tenant-1"),
    ("image", "volume-3f1c2a9e-5b7d-4e2a-9c41-0d8e6f7a1b23"),
    ("user", "cinder"),
    ("user", "client.cinder"),
    ("monitors", "10.0.0.1:6789"),
    ("monitors", "[fd00::1]:3300"),
    ("monitors", "mon-a.ceph.example.com:6789"),
    ("portal", "10.0.0.7:3260"),
    ("portal", "10.0.0.7"),
    ("portal", "[fd00::7]:3260"),
    ("portal", "[fe80::1%eth0]:3260"),
    ("iqn", "iqn.2010-10.org.openstack:volume-3f1c2a9e"),
    ("iqn", "iqn.1993-08.org.debian:01:fakehost"),
    ("iqn", "iqn.2004-04.com.qnap:ts-x:iscsi.vol_1"),
    ("iqn", "eui.02004567A425678D"),
    ("iqn", "naa.52004567BA64678D"),
    ("iqn", "naa.6001405ab34b4d2e8c6e1a8b8c0f2a11"),
    ("iscsiInterface", "default"),
    ("chap username", "cinder-user"),
    ("chap password", "p@ss:W0rd!#~"),
    ("fsType", "ext4"),
    ("fsType", "xfs"),
    ("fsType", ""),
    ("mount_flags", "noatime"),
    ("mount_flags", "errors=remount-ro"),
    ("mount_flags", "data=ordered"),
    ("mount_flags", "commit=30"),
    ("volume_id", "3f1c2a9e-5b7d-4e2a-9c41-0d8e6f7a1b23"),
    ("staging_target_path", ROOT + "/plugins/kubernetes.io/csi/cinder.netvol.io/abc/globalmount"),
    ("key", "AQBcliPlantedKey=="),
]


@pytest.mark.parametrize(("field", "value"), ACCEPTED)
def test_accepted_unchanged(field: str, value: str) -> None:
    """Acceptable values come back exactly as given."""
    assert value == STRING_VALIDATORS[field](value, field=field)


def test_lun() -> None:
    """LUNs: ints 0-16383 and plain decimal strings; never bools, signs, spaces or leading zeros."""
    assert [0, 16383, 5] == [v.lun(0), v.lun(16383), v.lun("5")]
    for bad in (-1, 16384, True, "+1", " 1", "01", "1_0", "0x1", 1.0, None):
        with pytest.raises(InvalidInput) as err:
            v.lun(bad, field="luns[0]")
        assert "luns[0]" == err.value.field


def test_lists_name_the_index() -> None:
    """monitors / mount_flags lists name the offending element's index, and are bounded."""
    with pytest.raises(InvalidInput) as err:
        v.monitors(["10.0.0.1:6789", "--keyring=/x"])
    assert "monitors[1]" == err.value.field
    with pytest.raises(InvalidInput) as err:
        v.mount_flags(["noatime", "loop"])
    assert "mount_flags[1]" == err.value.field
    too_many = (lambda: v.monitors([]), lambda: v.monitors(["m:1"] * 33), lambda: v.mount_flags(["ro"] * 33))
    for call in too_many:
        with pytest.raises(InvalidInput):
            call()


def test_path_under_root_only() -> None:
    """A path must sit strictly under the configured root, whatever the root's spelling."""
    assert "/k/a" == v.node_path("/k/a", field="p", root="/k/")
    with pytest.raises(InvalidInput):
        v.node_path("/kx/a", field="p", root="/k")


def outcome(check: Callable[..., Any], value: object, field: str) -> tuple[Any, InvalidInput | None]:
    """(returned value, None) or (None, the InvalidInput raised)."""
    try:
        return check(value, field=field), None
    except InvalidInput as e:
        return None, e


@settings(max_examples=300, deadline=None)
@given(field=st.sampled_from(sorted(STRING_VALIDATORS)), value=st.text(max_size=80))
def test_fuzz_string_validators(field: str, value: str) -> None:
    """Accepted → unchanged, idempotent, no leading '-', no whitespace/NUL/'..'; refused → names the field."""
    check = STRING_VALIDATORS[field]
    out, error = outcome(check, value, field)
    if error is not None:
        assert (field, False) == (error.field, "\n" in str(error))
        return
    assert value == out == check(out, field=field)
    assert (False, False, False) == (out.startswith("-"), "\x00" in out, ".." in out)
    assert not any(c.isspace() for c in out)


ALPHABET = st.sampled_from(list("abcXYZ019-._:/@[]%=+ \n\x00"))


@settings(max_examples=300, deadline=None)
@given(field=st.sampled_from(sorted(STRING_VALIDATORS)), value=st.text(ALPHABET, max_size=40))
def test_fuzz_with_hostile_alphabet(field: str, value: str) -> None:
    """The same property over an alphabet of separators and control characters (hits the grammars)."""
    test_fuzz_string_validators.hypothesis.inner_test(field=field, value=value)  # type: ignore[attr-defined]


@settings(max_examples=200, deadline=None)
@given(value=st.one_of(st.integers(-(2**40), 2**40), st.text(max_size=8), st.booleans(), st.none()))
def test_fuzz_lun(value: object) -> None:
    """A LUN is an int in range or InvalidInput naming the field."""
    out, error = outcome(v.lun, value, "lun")
    if error is not None:
        assert "lun" == error.field
        return
    assert isinstance(out, int)
    assert 0 <= out <= v.MAX_LUN
    assert out == v.lun(out)


@settings(max_examples=200, deadline=None)
@given(value=st.text(st.characters(codec="ascii"), max_size=40))
def test_fuzz_wwid(value: str) -> None:
    """WWIDs (only compared, never argv) may hold inner spaces but never a leading '-', NUL or '..'."""
    out, error = outcome(v.wwid, value, "wwid")
    if error is not None:
        assert "wwid" == error.field
        return
    assert value == out
    assert (False, False, False) == (out.startswith(("-", " ")), "\x00" in out, ".." in out)
