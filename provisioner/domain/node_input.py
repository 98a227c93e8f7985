"""The one validation layer for every value that reaches a node command (``rbd``, ``iscsiadm``, ``mount``).

Connection info comes from whichever Cinder driver exported a volume, and a PV can be written by anyone
with PV rights; both end up as argv of privileged commands on every node. So the controller (mapping /
``render``: refuse before any PV exists) and the node agent (again at stage time) check each value
against the same strict grammar here. Each validator returns the value unchanged when it is acceptable
(so ``validator(validator(x)) == validator(x)``) and otherwise raises ``InvalidInput`` naming the field.

Rules shared by all of them: no value starts with ``-`` (it could be read as an option), none contains
whitespace, a NUL byte or ``..`` (paths, record file names, config lines), lengths are bounded by what
the tools accept. Messages never quote the refused value: it may be a secret, thousands of characters
long or contain newlines, and an error must stay one line.

Pure: no I/O. The kubelet directory check is lexical (``posixpath``); the agent adds a ``realpath``
check against symlinks where it touches the file system.
"""

from __future__ import annotations

import ipaddress
import posixpath
import re
from collections.abc import Iterable
from typing import Final

from provisioner.domain.errors import InvalidInput

MAX_LUN: Final = 16383  # SAM flat addressing
MAX_ISCSI_NAME: Final = 223  # RFC 3720 3.2.6.1: at most 223 bytes
#: open-iscsi keeps CHAP user names and secrets in AUTH_STR_MAX_LEN (256) byte buffers, NUL included.
MAX_CHAP: Final = 255
MAX_PATH: Final = 4096  # PATH_MAX
MAX_PATH_COMPONENT: Final = 255  # NAME_MAX
MAX_VOLUME_ID: Final = 128  # the CSI spec's recommended maximum for a volume id
MAX_MONITORS: Final = 32
MAX_MOUNT_FLAGS: Final = 32
FS_TYPES: Final = frozenset({"ext2", "ext3", "ext4", "xfs"})

#: Mount options that only tune the filesystem or the mount's semantics (no device, no file, no user
#: namespace): bare flags, and ``name=value`` options whose values match ``_OPTION_VALUE``.
MOUNT_FLAGS: Final = frozenset(
    {
        "defaults", "ro", "rw", "sync", "async", "dirsync", "atime", "noatime", "diratime",
        "nodiratime", "relatime", "norelatime", "strictatime", "nostrictatime", "lazytime",
        "nolazytime", "dev", "nodev", "exec", "noexec", "suid", "nosuid", "discard", "nodiscard",
        "barrier", "nobarrier", "acl", "noacl", "user_xattr", "nouser_xattr", "_netdev", "nouuid",
        "inode64", "inode32", "largeio", "nolargeio", "quota", "noquota", "usrquota", "grpquota",
        "prjquota", "uquota", "gquota", "pquota", "norecovery", "delalloc", "nodelalloc",
        "auto_da_alloc", "noauto_da_alloc", "journal_checksum", "nojournal_checksum", "dax",
        "wsync", "attr2", "noattr2", "swalloc", "ikeep", "noikeep", "grpid", "nogrpid",
        "bsdgroups", "sysvgroups", "block_validity", "noblock_validity", "init_itable",
        "noinit_itable",
    }
)  # fmt: skip
MOUNT_OPTIONS_WITH_VALUE: Final = frozenset(
    {
        "data", "errors", "commit", "stripe", "logbufs", "logbsize", "allocsize", "sunit", "swidth",
        "inode_readahead_blks", "max_batch_time", "min_batch_time", "journal_ioprio", "barrier",
        "init_itable", "dax", "resuid", "resgid",
    }
)  # fmt: skip

_LABEL: Final = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOSTNAME: Final = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")
_PORT: Final = r"[1-9][0-9]{0,4}"
_HOST_PORT: Final = re.compile(
    r"(?:\[(?P<v6>[0-9A-Fa-f:.]+(?:%[A-Za-z0-9_.-]{1,15})?)\]|(?P<host>[^:\[\]]+))"
    rf"(?::(?P<port>{_PORT}))?"
)
# Ceph names: what Cinder and ceph tooling create in practice; no separators of an image spec (/ @).
_CEPH_NAME: Final = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
_CEPH_USER: Final = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}")
_CEPHX_KEY: Final = re.compile(r"[A-Za-z0-9+/]{4,1024}={0,2}")
_IQN: Final = re.compile(
    rf"iqn\.[0-9]{{4}}-(?:0[1-9]|1[0-2])\.{_LABEL}(?:\.{_LABEL})*(?::[A-Za-z0-9_.:-]+)?", re.ASCII
)
_EUI: Final = re.compile(r"eui\.[0-9A-Fa-f]{16}")
_NAA: Final = re.compile(r"naa\.(?:[0-9A-Fa-f]{16}|[0-9A-Fa-f]{32})")
_IFACE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}")
_CHAP: Final = re.compile(rf"[\x21-\x7e]{{1,{MAX_CHAP}}}")
_VOLUME_ID: Final = re.compile(rf"[A-Za-z0-9][A-Za-z0-9_.-]{{0,{MAX_VOLUME_ID - 1}}}")
_WWID: Final = re.compile(r"[\x21-\x7e][\x20-\x7e]{0,255}")
_OPTION_NAME: Final = re.compile(r"[a-z_][a-z0-9_]{0,31}")
_OPTION_VALUE: Final = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:+-]{0,63}")


def _text(value: object, field: str, *, allow_empty: bool = False) -> str:
    if not isinstance(value, str):
        raise InvalidInput(field, "must be a string")
    if not value and not allow_empty:
        raise InvalidInput(field, "must not be empty")
    if "\x00" in value:
        raise InvalidInput(field, "must not contain a NUL byte")
    if value.startswith("-"):
        raise InvalidInput(field, "must not start with '-'")
    if ".." in value:
        raise InvalidInput(field, "must not contain '..'")
    return value


def _grammar(value: str, field: str, pattern: re.Pattern[str], what: str, limit: int) -> str:
    if len(value) > limit:
        raise InvalidInput(field, f"must be at most {limit} characters")
    if not pattern.fullmatch(value):
        raise InvalidInput(field, f"must be {what}")
    return value


# --- rbd ------------------------------------------------------------------------------------------------


def pool(value: object, *, field: str = "pool") -> str:
    """A Ceph pool name: letters, digits, ``_ . -``, not starting with ``-`` or ``.``, at most 128."""
    text = _text(value, field)
    return _grammar(text, field, _CEPH_NAME, "a Ceph pool name (letters, digits, '_', '.', '-')", 128)


def rados_namespace(value: object, *, field: str = "radosNamespace") -> str:
    """A RADOS namespace: empty (the default namespace) or a name like a pool's."""
    text = _text(value, field, allow_empty=True)
    if not text:
        return text
    return _grammar(text, field, _CEPH_NAME, "a RADOS namespace (letters, digits, '_', '.', '-')", 128)


def image(value: object, *, field: str = "image") -> str:
    """An RBD image name (no ``/`` or ``@``: they separate pool, namespace and snapshot)."""
    text = _text(value, field)
    return _grammar(text, field, _CEPH_NAME, "an RBD image name (letters, digits, '_', '.', '-')", 255)


def cephx_user(value: object, *, field: str = "user") -> str:
    """A cephx id as ``rbd --id`` takes it (without ``client.``); at most 64 characters."""
    text = _text(value, field)
    return _grammar(text, field, _CEPH_USER, "a cephx user id (letters, digits, '_', '.', '-')", 64)


def cephx_key(value: object, *, field: str = "key") -> str:
    """A cephx secret (base64); it goes into a 0600 key file, never argv. Never echoed."""
    if not isinstance(value, str) or not _CEPHX_KEY.fullmatch(value):
        raise InvalidInput(field, "must be a base64 cephx key (4-1024 characters)")
    return value


def _host_port(value: object, field: str, *, port_required: bool) -> str:
    text = _text(value, field)
    if len(text) > 300:
        raise InvalidInput(field, "must be at most 300 characters")
    shape = "'host:port' or '[IPv6]:port'" if port_required else "'host[:port]' or '[IPv6][:port]'"
    match = _HOST_PORT.fullmatch(text)
    if match is None or (port_required and match["port"] is None):
        raise InvalidInput(field, f"must be {shape}")
    if match["port"] is not None and int(match["port"]) > 65535:
        raise InvalidInput(field, "port must be between 1 and 65535")
    if match["v6"] is not None:
        try:
            ipaddress.IPv6Address(match["v6"])
        except ValueError:
            raise InvalidInput(field, "is not a valid IPv6 address in brackets") from None
    elif len(match["host"]) > 253 or not _HOSTNAME.fullmatch(match["host"]):
        raise InvalidInput(field, f"must be {shape} with a host name or IPv4 address")
    return text


def monitor(value: object, *, field: str = "monitors") -> str:
    """One Ceph monitor, ``host:port`` or ``[v6]:port``."""
    return _host_port(value, field, port_required=True)


def monitors(values: Iterable[object], *, field: str = "monitors") -> tuple[str, ...]:
    """One to 32 monitors (each validated; the field names the index)."""
    items = list(values)
    if not items:
        raise InvalidInput(field, "must list at least one monitor")
    if len(items) > MAX_MONITORS:
        raise InvalidInput(field, f"must list at most {MAX_MONITORS} monitors")
    return tuple(monitor(m, field=f"{field}[{i}]") for i, m in enumerate(items))


# --- iscsi ----------------------------------------------------------------------------------------------


def portal(value: object, *, field: str = "portal") -> str:
    """An iSCSI portal, ``host[:port]`` or ``[v6][:port]`` (3260 when the port is absent)."""
    return _host_port(value, field, port_required=False)


def iscsi_name(value: object, *, field: str = "iqn") -> str:
    """An iSCSI name: ``iqn.YYYY-MM.reversed.domain[:suffix]``, ``eui.<16 hex>`` or ``naa.<16|32 hex>``."""
    text = _text(value, field)
    if len(text) > MAX_ISCSI_NAME:
        raise InvalidInput(field, f"must be at most {MAX_ISCSI_NAME} bytes")
    if not (_IQN.fullmatch(text) or _EUI.fullmatch(text) or _NAA.fullmatch(text)):
        raise InvalidInput(field, "must be an iSCSI name (iqn.YYYY-MM.domain[:id], eui.<hex>, naa.<hex>)")
    return text


def lun(value: object, *, field: str = "lun") -> int:
    """A LUN, 0-16383 (an int; decimal strings are accepted without sign, spaces or leading zeros)."""
    if isinstance(value, str) and re.fullmatch(r"0|[1-9][0-9]{0,4}", value):
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInput(field, "must be an integer")
    if not 0 <= value <= MAX_LUN:
        raise InvalidInput(field, f"must be between 0 and {MAX_LUN}")
    return value


def iscsi_interface(value: object, *, field: str = "iscsiInterface") -> str:
    """An open-iscsi iface name (a file name under /etc/iscsi/ifaces, at most 64 characters)."""
    text = _text(value, field)
    return _grammar(text, field, _IFACE, "an iface name (letters, digits, '.', '_', ':', '-')", 64)


def chap_user(value: object, *, field: str = "chap username") -> str:
    """A CHAP user name: 1-255 printable ASCII characters, no whitespace, not starting with ``-``."""
    return _chap(value, field)


def chap_secret(value: object, *, field: str = "chap password") -> str:
    """A CHAP secret, same grammar as the user name; never echoed (the message names only the field)."""
    return _chap(value, field)


def _chap(value: object, field: str) -> str:
    if not isinstance(value, str) or not _CHAP.fullmatch(value) or value.startswith("-") or ".." in value:
        raise InvalidInput(
            field,
            f"must be 1-{MAX_CHAP} printable ASCII characters without whitespace or '..', "
            "not starting with '-'",
        )
    return value


def wwid(value: object, *, field: str = "wwid") -> str:
    """A SCSI WWID as sysfs shows it (only compared, never passed to a command): printable, bounded."""
    text = _text(value, field, allow_empty=True)
    if text and not _WWID.fullmatch(text):
        raise InvalidInput(field, "must be at most 256 printable ASCII characters")
    return text


# --- filesystem -----------------------------------------------------------------------------------------


def fs_type(value: object, *, field: str = "fsType") -> str:
    """Empty (the agent's default) or one of the filesystems the agent can create and grow."""
    if value == "":
        return ""
    if not isinstance(value, str) or value not in FS_TYPES:
        raise InvalidInput(field, f"must be one of {', '.join(sorted(FS_TYPES))}")
    return value


def mount_flag(value: object, *, field: str = "mount_flags") -> str:
    """One mount option from the allow-list: a bare flag, or ``name=value`` with a plain value."""
    text = _text(value, field)
    name, sep, option_value = text.partition("=")
    if not _OPTION_NAME.fullmatch(name):
        raise InvalidInput(field, "must be a mount option name (lower-case letters, digits, '_')")
    if not sep:
        if name not in MOUNT_FLAGS:
            raise InvalidInput(field, f"option {name} is not an allowed mount option")
        return text
    if name not in MOUNT_OPTIONS_WITH_VALUE:
        raise InvalidInput(field, f"option {name} does not take a value here")
    if not _OPTION_VALUE.fullmatch(option_value):
        raise InvalidInput(field, f"the value of {name} must be letters, digits, '_', '.', ':', '+', '-'")
    return text


def mount_flags(values: Iterable[object], *, field: str = "mount_flags") -> tuple[str, ...]:
    """At most 32 allowed mount options; the field names the index."""
    items = list(values)
    if len(items) > MAX_MOUNT_FLAGS:
        raise InvalidInput(field, f"must list at most {MAX_MOUNT_FLAGS} options")
    return tuple(mount_flag(v, field=f"{field}[{i}]") for i, v in enumerate(items))


# --- CSI request identity -------------------------------------------------------------------------------


def volume_id(value: object, *, field: str = "volume_id") -> str:
    """A CSI volume id: letters, digits, ``_ . -``, starting with a letter or digit, at most 128."""
    text = _text(value, field)
    return _grammar(text, field, _VOLUME_ID, "letters, digits, '_', '.', '-'", MAX_VOLUME_ID)


def node_path(value: object, *, field: str, root: str) -> str:
    """An absolute, normalised path strictly under ``root`` (the kubelet directory), bounded in length.

    Lexical only: no ``.``/``..`` components, no ``//``, no trailing ``/``, no NUL or control characters,
    at most 4096 characters and 255 per component.
    """
    if not isinstance(value, str) or not value:
        raise InvalidInput(field, "must be a non-empty string")
    if len(value) > MAX_PATH:
        raise InvalidInput(field, f"must be at most {MAX_PATH} characters")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        raise InvalidInput(field, "must not contain NUL or control characters")
    if not value.startswith("/"):
        raise InvalidInput(field, "must be an absolute path")
    parts = value.split("/")[1:]
    if ".." in parts:
        raise InvalidInput(field, "must not contain '..'")
    if posixpath.normpath(value) != value or value.startswith("//"):
        raise InvalidInput(field, "must be a normalised path (no '.', '//' or trailing '/')")
    if any(len(p.encode()) > MAX_PATH_COMPONENT for p in parts):
        raise InvalidInput(field, f"path components must be at most {MAX_PATH_COMPONENT} bytes")
    base = posixpath.normpath(root)
    prefix = base if base.endswith("/") else base + "/"
    if value == base or not value.startswith(prefix):
        raise InvalidInput(field, f"must be under the kubelet directory {base}")
    return value
