"""Pure helpers of the node agent: redaction, mountinfo, iscsi parsing and exit codes, mkfs, rbd errors."""

from __future__ import annotations

import pytest

from attach.cli import mask_secret_fields
from attach.devices import Probe, mkfs_argv
from attach.errors import AuthFailed, FinalAttachError, InvalidRequest, NotFound, RetryableAttachError
from attach.iscsi import EXIT_CODES, error_for, normalize_wwid, parse_sessions
from attach.mount import parse_mountinfo
from attach.rbd import _map_error, _without_noudev, image_spec
from attach.runner import Result, redact
from provisioner.csi_contract import RbdTarget


def test_redact_longest_secret_first() -> None:
    """Overlapping secrets are masked without leaking a suffix."""
    assert "pw=*** user=***" == redact("pw=abcdef user=abc", ["abc", "abcdef"])


def test_redact_ignores_empty_secrets() -> None:
    """An empty secret does not turn every gap into ***."""
    assert "plain" == redact("plain", ["", ""])


def test_mask_secret_fields_processor() -> None:
    """Log fields named like secrets are masked whatever their value."""
    event = {"event": "x", "password": "p", "cephx_key": "k", "volume_id": "v"}
    assert {"event": "x", "password": "***", "cephx_key": "***", "volume_id": "v"} == mask_secret_fields(
        None, "info", event
    )


def test_parse_mountinfo_with_escapes_and_optional_fields() -> None:
    """Mount points with escaped spaces and optional fields before '-' parse correctly."""
    text = (
        "36 35 98:0 / /mnt/with\\040space rw,noatime master:1 - ext4 /dev/rbd0 rw,errors=continue\n"
        "garbage line\n"
        "37 35 7:1 /sub /mnt/b ro shared:2 master:3 - xfs /dev/loop1 ro\n"
    )
    entries = parse_mountinfo(text)
    assert [("/mnt/with space", "/dev/rbd0", "ext4", "98:0"), ("/mnt/b", "/dev/loop1", "xfs", "7:1")] == [
        (e.mount_point, e.source, e.fs_type, e.major_minor) for e in entries
    ]
    assert ("ro",) == entries[1].options


def test_parse_sessions() -> None:
    """`iscsiadm -m session` lines give sid, portal and iqn (IPv6 brackets kept)."""
    text = (
        "tcp: [3] 10.0.0.5:3260,1 iqn.2010-10.org.openstack:volume-1 (non-flash)\n"
        "tcp: [12] [fd00::5]:3260,1 iqn.x:y (non-flash)\n"
    )
    assert [
        ("3", "10.0.0.5:3260", "iqn.2010-10.org.openstack:volume-1"),
        ("12", "[fd00::5]:3260", "iqn.x:y"),
    ] == [(s.sid, s.portal, s.iqn) for s in parse_sessions(text)]


@pytest.mark.parametrize(
    ("code", "error"),
    [
        (2, RetryableAttachError),
        (4, RetryableAttachError),
        (5, RetryableAttachError),
        (6, RetryableAttachError),
        (8, RetryableAttachError),
        (15, RetryableAttachError),
        (19, FinalAttachError),
        (20, RetryableAttachError),
        (21, RetryableAttachError),
        (24, AuthFailed),
        (255, RetryableAttachError),
        (99, RetryableAttachError),
    ],
)
def test_iscsiadm_exit_code_table(code: int, error: type) -> None:
    """Every iscsiadm exit code of the reference maps to the documented error class."""
    err = error_for(Result(argv=("iscsiadm",), returncode=code, stdout="", stderr="boom"), "login")
    assert error is type(err)
    assert EXIT_CODES.get(code, ("unexpected error", True))[0] in str(err)


def test_normalize_wwid() -> None:
    """WWIDs compare without prefix, case or whitespace."""
    assert normalize_wwid(" naa.600140ABC\n") == normalize_wwid("600140abc")


def test_mkfs_argv() -> None:
    """ext4 is formatted fast (-m0, nodiscard, lazy init); xfs with -K; others refused."""
    assert ["mkfs.ext4", "-q", "-m0", "-E", "nodiscard,lazy_itable_init=1,lazy_journal_init=1", "/dev/x"] == (
        mkfs_argv("ext4", "/dev/x")
    )
    assert ["mkfs.xfs", "-q", "-K", "/dev/x"] == mkfs_argv("xfs", "/dev/x")
    with pytest.raises(InvalidRequest):
        mkfs_argv("ntfs", "/dev/x")


def test_probe_blank() -> None:
    """Only no filesystem AND no partition table counts as blank."""
    assert (True, False, False) == (
        Probe().blank,
        Probe(fs_type="ext4").blank,
        Probe(partition_table="gpt").blank,
    )


def test_image_spec_with_and_without_namespace() -> None:
    """pool/image, or pool/namespace/image."""
    base = {"monitors": ("m:1",), "pool": "p", "image": "i"}
    assert ("p/i", "p/ns/i") == (
        image_spec(RbdTarget(**base)),  # type: ignore[arg-type]
        image_spec(RbdTarget(rados_namespace="ns", **base)),  # type: ignore[arg-type]
    )


def test_without_noudev_keeps_other_options() -> None:
    """Dropping noudev keeps ro; an empty -o disappears."""
    assert ["rbd", "-o", "ro", "x"] == _without_noudev(["rbd", "-o", "noudev,ro", "x"])
    assert ["rbd", "x"] == _without_noudev(["rbd", "-o", "noudev", "x"])


@pytest.mark.parametrize(
    ("rc", "stderr", "error"),
    [
        (13, "rbd: map failed: (13) Permission denied", AuthFailed),
        (2, "rbd: map failed: (2) No such file or directory", NotFound),
        (6, "rbd: map failed: (6) No such device or address", FinalAttachError),
        (110, "rbd: map failed: (110) Connection timed out", RetryableAttachError),
        (108, "rbd: map failed: (108) Cannot send after transport endpoint shutdown", RetryableAttachError),
        (1, "rbd: sysfs write failed", RetryableAttachError),
    ],
)
def test_rbd_map_error_table(rc: int, stderr: str, error: type) -> None:
    """rbd map exit codes / messages → error classes (blocklisted, no image, ENXIO, ETIMEDOUT, 108)."""
    assert error is type(_map_error(("rbd",), rc, stderr, "p/i"))
