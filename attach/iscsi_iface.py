"""Logging in to iSCSI with the PV's initiator name: dedicated ``iscsiadm`` iface records.

Cinder exports a volume to the initiator named in the provisioner's connector, and the target's ACL admits
only that initiator. The node's own ``/etc/iscsi/initiatorname.iscsi`` is a different name, so a login
through the ``default`` iface is refused. open-iscsi carries a per-login initiator name only in an *iface*
record (``iface.initiatorname``), so when a PV has ``initiatorName`` every login, logout, session lookup and
node record of that volume goes through a dedicated iface named after the base iface (``iscsiInterface``)
and the initiator, ``cinder-<sha256(base, initiator)[:8]>``: volumes with the same initiator and base share
it and their sessions; the transport, hardware address, netdev and IP address are copied from the base.

It is used *always* when the PV names an initiator, even if it equals the host's default: the agent runs
in a container and cannot trust its view of the host's initiator file, and a dedicated iface makes the
login identity explicit (sessions are matched by iface **and** initiator name, from
``iscsiadm -m session -P 1``). An iface is deleted only when no other staged volume still maps to it; an
admin-managed base iface is never modified or deleted. The name is derived from the stashed volume
attributes, so unstage finds it without extra state.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol

import structlog

from attach.errors import AttachError, FinalAttachError, InvalidRequest, RetryableAttachError
from attach.runner import Result
from attach.stash import Locks
from provisioner.csi_contract import IscsiTarget

log = structlog.get_logger(__name__)

DEFAULT_IFACE = "default"
IFACE_PREFIX = "cinder-"
#: Settings copied from the base iface (in this order: the transport first, the binding after it).
COPIED_SETTINGS = ("iface.transport_name", "iface.hwaddress", "iface.net_ifacename", "iface.ipaddress")
INITIATOR_SETTING = "iface.initiatorname"
EMPTY = "<empty>"  # how iscsiadm prints an unset value

# RFC 3720 names (iqn./eui./naa.), at most 223 bytes; no whitespace — the value ends up in a config file.
_INITIATOR = re.compile(r"^(iqn\.|eui\.|naa\.)[^\s]{1,219}$", re.IGNORECASE)
# iface names become file names under /etc/iscsi/ifaces (ISCSI_MAX_IFACE_LEN = 65 with the NUL).
_IFACE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$")

Fail = Callable[[Result, str], AttachError]


class Adm(Protocol):
    """``Iscsi._adm``: run iscsiadm with ``args``, retrying node database errors unless told not to."""

    def __call__(self, args: list[str], *, retry_db_errors: bool = True) -> Result: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class Session:
    """One iSCSI session: ``iscsiadm -m session`` line, plus the iface and initiator from ``-P 1``."""

    sid: str
    portal: str
    iqn: str
    iface: str = DEFAULT_IFACE
    initiator: str = ""


def check_names(target: IscsiTarget) -> None:
    """Refuse an initiator or iface name iscsiadm would store unsafely (before anything is stashed)."""
    if not _IFACE.match(target.iscsi_interface):
        raise InvalidRequest(f"iscsiInterface {target.iscsi_interface!r} is not a valid iface name")
    if target.initiator_name and not _INITIATOR.match(target.initiator_name):
        raise InvalidRequest(
            f"initiatorName {target.initiator_name!r} is not an iqn./eui./naa. name without whitespace"
        )


def iface_for(target: IscsiTarget) -> str:
    """The iface every iscsiadm command for ``target`` names: dedicated when the PV has an initiator."""
    if not target.initiator_name:
        return target.iscsi_interface
    seed = f"{target.iscsi_interface}\n{target.initiator_name}".encode()
    return IFACE_PREFIX + hashlib.sha256(seed).hexdigest()[:8]


def session_matches(session: Session, *, portal: str, iqn: str, iface: str, initiator: str) -> bool:
    """Same portal + IQN through the same iface, and (when one is required) the same initiator name."""
    if (session.portal, session.iqn, session.iface) != (portal, iqn, iface):
        return False
    return not initiator or session.initiator.casefold() == initiator.casefold()


def parse_iface_record(text: str) -> dict[str, str]:
    """``iscsiadm -m iface -I NAME`` → {setting: value}; ``<empty>`` becomes ``""``, comments are skipped."""
    settings = {}
    for line in text.splitlines():
        name, sep, value = line.strip().partition(" = ")
        if sep and name.startswith("iface."):
            value = value.strip()
            settings[name] = "" if value == EMPTY else value
    return settings


def parse_session_tree(text: str) -> list[Session]:
    """Parse ``iscsiadm -m session -P 1``.

    A ``Target:`` line opens a target, ``Persistent Portal:`` sets the portal (printed only when it changes:
    further sessions to the same portal follow after a blank line), ``Iface Name:`` opens a session and
    ``SID:`` closes it. The persistent portal is what node records and ``-m session`` show.
    """
    sessions = []
    iqn = portal = ""
    current: dict[str, str] = {}
    for raw in text.splitlines():
        key, sep, value = raw.strip().partition(":")
        if not sep:
            continue
        value = value.strip()
        if key == "Target":
            iqn, portal, current = (value.split() or [""])[0], "", {}
        elif key == "Persistent Portal":
            portal = value.rsplit(",", 1)[0]
        elif key == "Iface Name":
            current = {"iface": "" if value == EMPTY else value}
        elif key == "Iface Initiatorname":
            current["initiator"] = "" if value == EMPTY else value
        elif key == "SID" and iqn and portal:
            sessions.append(
                Session(
                    sid=value,
                    portal=portal,
                    iqn=iqn,
                    iface=current.get("iface") or DEFAULT_IFACE,
                    initiator=current.get("initiator", ""),
                )
            )
            current = {}
    return sessions


class IfaceRecords:
    """Create, update and remove the dedicated iface records (serialized per iface name)."""

    def __init__(self, *, adm: Adm, fail: Fail, locks: Locks) -> None:
        self._adm = adm
        self._fail = fail
        self._locks = locks

    def _show(self, name: str) -> Result:
        # A missing iface is exit 6 (node database error): not worth the database-error retries.
        return self._adm(["-m", "iface", "-I", name], retry_db_errors=False)

    def _desired(self, target: IscsiTarget) -> dict[str, str]:
        base = target.iscsi_interface
        copied: Mapping[str, str] = {}
        if base != DEFAULT_IFACE:
            shown = self._adm(["-m", "iface", "-I", base])  # it should exist: database errors are retried
            if shown.returncode != 0:
                raise FinalAttachError(
                    f"iscsiInterface {base} does not exist on this node "
                    f"(iscsiadm -m iface -I {base}: exit {shown.returncode})"
                )
            copied = parse_iface_record(shown.stdout)
        desired = {k: copied[k] for k in COPIED_SETTINGS if copied.get(k)}
        desired.setdefault("iface.transport_name", "tcp")
        desired[INITIATOR_SETTING] = target.initiator_name
        return desired

    def ensure(self, target: IscsiTarget) -> str:
        """Make sure the iface for ``target`` exists with the right settings; return its name."""
        name = iface_for(target)
        if not target.initiator_name:
            return name  # the admin's iface (or default), used as it is
        desired = self._desired(target)
        with self._locks.target(f"iface:{name}"):
            shown = self._show(name)
            if shown.returncode != 0:
                new = self._adm(["-m", "iface", "-I", name, "--op", "new"])
                if new.returncode not in (0, 15):  # 15: a session already runs through it
                    raise self._fail(new, f"create iface {name}")
                shown = self._show(name)
                if shown.returncode != 0:
                    raise RetryableAttachError(f"iface {name} was created but cannot be read")
                log.info("iscsi_iface_created", iface=name, base=target.iscsi_interface)
            current = parse_iface_record(shown.stdout)
            for setting, value in desired.items():
                if current.get(setting, "") == value:
                    continue
                update = self._adm(["-m", "iface", "-I", name, "--op", "update", "-n", setting, "-v", value])
                if update.returncode != 0:
                    raise self._fail(update, f"update iface {name} {setting}")
            log.info("iscsi_iface_ready", iface=name, initiator=target.initiator_name)
        return name

    def release(self, target: IscsiTarget, *, others: Callable[[], Iterable[IscsiTarget]]) -> None:
        """Delete the dedicated iface unless another staged volume maps to it; failures only warn.

        ``others`` is read under the iface lock: a stage stashes its volume before it takes that lock.
        """
        if not target.initiator_name:
            return
        name = iface_for(target)
        with self._locks.target(f"iface:{name}"):
            if name in ifaces_of(others()):
                log.info("iscsi_iface_kept_in_use", iface=name)
                return
            gone = self._adm(["-m", "iface", "-I", name, "--op", "delete"])
            if gone.returncode == 0:
                log.info("iscsi_iface_deleted", iface=name)
            else:  # a leftover iface file is harmless; an unstage that never finishes is not
                log.warning(
                    "iscsi_iface_delete_failed", iface=name, code=gone.returncode, error=gone.stderr.strip()
                )


def normalize_portal(portal: str) -> str:
    """``ip`` → ``ip:3260``; a portal with a port stays as it is."""
    return portal if re.search(r":\d+$", portal) else f"{portal}:3260"


def session_keys(targets: Iterable[IscsiTarget]) -> set[tuple[str, str, str]]:
    """(normalized portal, iqn, iface) of every path — what decides whether a logout affects a volume."""
    keys: set[tuple[str, str, str]] = set()
    for target in targets:
        iface = _valid_iface(target)
        if iface:
            keys.update((normalize_portal(p.portal), p.iqn, iface) for p in target.paths)
    return keys


def ifaces_of(targets: Iterable[IscsiTarget]) -> set[str]:
    """Iface names the given (stashed) targets use; targets with invalid names use none."""
    return {name for name in map(_valid_iface, targets) if name}


def _valid_iface(target: IscsiTarget) -> str:
    try:
        check_names(target)
    except InvalidRequest:
        return ""  # such a volume was refused before it was stashed or logged in
    return iface_for(target)
