"""Logging in to iSCSI targets with ``iscsiadm`` and finding the LUN through sysfs.

Node records are (re)written on every stage — CHAP settings in particular, because a stale record from an
earlier volume would otherwise log in with old credentials. An existing session is reused; login exit 15
("session exists") is success. The LUN is found via sysfs under the session (udev and by-path links may
never appear), with SCSI host rescans at configured times and a WWID check when the PV carries one.
``iscsiadm`` is serialized per portal+IQN, and a target is logged out only when no other staged volume on
this node still uses it through the same iface. Every node command names its iface (``--interface``): the
PV's ``iscsiInterface``, or the dedicated iface carrying the PV's initiator name (``iscsi_iface``), so a
login, a reused session and a logout always belong to the same initiator. CHAP passwords (session and
discovery) never travel in argv: they are written straight into the record files of open-iscsi's node
database (``iscsi_db``, 0600, atomic); only the method and the user name go through ``--op update``.
Discovery (when the PV asks for discovery CHAP) runs *before* the node record is prepared, because a
sendtargets discovery rewrites the records it finds with the defaults.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import structlog

from attach.devices import Devices
from attach.errors import (
    AttachError,
    AuthFailed,
    FinalAttachError,
    InvalidRequest,
    RetryableAttachError,
    WrongDevice,
)
from attach.iscsi_db import NodeDb
from attach.iscsi_iface import (
    IfaceRecords,
    Session,
    check_names,
    iface_for,
    normalize_portal,
    parse_session_tree,
    session_keys,
    session_matches,
)
from attach.runner import Result, Runner
from attach.settings import Settings
from attach.stash import Locks
from provisioner.csi_contract import (
    SECRET_DISCOVERY_PASSWORD,
    SECRET_DISCOVERY_USER,
    SECRET_SESSION_PASSWORD,
    SECRET_SESSION_USER,
    IscsiPath,
    IscsiTarget,
)

log = structlog.get_logger(__name__)

#: iscsiadm exit codes (open-iscsi ``iscsi_err.h``) → (meaning, retrying can help).
EXIT_CODES: dict[int, tuple[str, bool]] = {
    2: ("no session", True),
    4: ("transport error", True),
    5: ("login failure", True),
    6: ("node database error", True),
    8: ("timeout", True),
    15: ("session already exists", True),
    19: ("fatal login error", False),
    20: ("cannot reach iscsid", True),
    21: ("no records found", True),
    24: ("authorization failed", False),
    255: ("not found", True),
}
EXIT_NO_SESSION = 2
EXIT_DB_ERROR = 6
EXIT_SESSION_EXISTS = 15
EXIT_NO_RECORDS = 21
EXIT_AUTH_FAILED = 24
EXIT_FATAL_LOGIN = 19
EXIT_OLD_NOT_FOUND = 255

_SESSION_LINE = re.compile(r"^\S+:\s+\[(\d+)\]\s+(\S+?),\d+\s+(\S+)")


@dataclass(frozen=True, slots=True, kw_only=True)
class IscsiAttachment:
    """The device to use, the SCSI disks behind it and the multipath device when there is one."""

    device: str
    scsi_devices: tuple[str, ...]
    multipath_device: str = ""


def error_for(result: Result, what: str) -> AttachError:
    """Map an iscsiadm exit code to a retryable or final error."""
    meaning, retryable = EXIT_CODES.get(result.returncode, ("unexpected error", True))
    text = f"iscsiadm {what}: {meaning} (exit {result.returncode}) {result.stderr.strip()}".strip()
    if result.returncode == EXIT_AUTH_FAILED:
        return AuthFailed(text)
    if not retryable:
        return FinalAttachError(text)
    return RetryableAttachError(text)


def parse_sessions(text: str) -> list[Session]:
    """Parse flat ``iscsiadm -m session`` output (no iface data: the agent itself reads ``-P 1``)."""
    sessions = []
    for line in text.splitlines():
        m = _SESSION_LINE.match(line.strip())
        if m:
            sessions.append(Session(sid=m.group(1), portal=m.group(2), iqn=m.group(3)))
    return sessions


def normalize_wwid(wwid: str) -> str:
    """Compare WWIDs without the ``naa.``/``0x`` prefixes, case and whitespace."""
    w = wwid.strip().lower()
    for prefix in ("naa.", "t10.", "eui.", "0x"):
        if w.startswith(prefix):
            w = w[len(prefix) :]
    return w


class Iscsi:
    """iSCSI login/logout and LUN discovery."""

    def __init__(
        self,
        *,
        runner: Runner,
        settings: Settings,
        locks: Locks,
        devices: Devices,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._runner = runner
        self._settings = settings
        self._locks = locks
        self._devices = devices
        self._clock = clock
        self._sleep = sleep
        self._ifaces = IfaceRecords(adm=self._adm, fail=error_for, locks=locks)
        self._db = NodeDb(settings.iscsi_root)

    # --- iscsiadm --------------------------------------------------------------------------------------

    def _adm(self, args: list[str], *, secrets: tuple[str, ...] = (), retry_db_errors: bool = True) -> Result:
        """Run iscsiadm; a node database error (6) is retried a few times right away."""
        result = self._runner.run(["iscsiadm", *args], secrets=secrets)
        for _ in range(3 if retry_db_errors else 0):
            if result.returncode != EXIT_DB_ERROR:
                break
            self._sleep(self._settings.poll_interval)
            result = self._runner.run(["iscsiadm", *args], secrets=secrets)
        return result

    @staticmethod
    def _node(path: IscsiPath, iface: str) -> list[str]:
        return ["-m", "node", "-T", path.iqn, "-p", normalize_portal(path.portal), "--interface", iface]

    def _update(self, path: IscsiPath, iface: str, name: str, value: str) -> None:
        """A non-secret node record setting through ``iscsiadm --op update`` (values are validated)."""
        result = self._adm([*self._node(path, iface), "--op", "update", "-n", name, "-v", value])
        if result.returncode != 0:
            raise error_for(result, f"update {name}")

    def sessions(self) -> list[Session]:
        """Current sessions with their iface and initiator name (``iscsiadm -m session -P 1``)."""
        result = self._adm(["-m", "session", "-P", "1"])
        if result.returncode in (EXIT_NO_RECORDS, EXIT_NO_SESSION):
            return []
        if result.returncode != 0:
            raise error_for(result, "list sessions")
        return parse_session_tree(result.stdout)

    def _session_for(self, target: IscsiTarget, path: IscsiPath, iface: str) -> Session | None:
        """A session to ``path`` through ``iface`` as the PV's initiator; another initiator's is no use."""
        portal = normalize_portal(path.portal)
        for s in self.sessions():
            if session_matches(s, portal=portal, iqn=path.iqn, iface=iface, initiator=target.initiator_name):
                return s
        return None

    def login(self, target: IscsiTarget, path: IscsiPath, secrets: Mapping[str, str], iface: str) -> Session:
        """Ensure the node record (with fresh CHAP) and a session to ``path`` via ``iface``; return it."""
        with self._locks.target(f"{normalize_portal(path.portal)},{path.iqn}"):
            if target.chap_discovery:
                self._discover_with_chap(path, secrets, iface)
            show = self._adm(self._node(path, iface))
            if show.returncode in (EXIT_NO_RECORDS, EXIT_OLD_NOT_FOUND):
                new = self._adm([*self._node(path, iface), "--op", "new"])
                if new.returncode != 0:
                    raise error_for(new, "create node record")
            elif show.returncode != 0:
                raise error_for(show, "show node record")
            self._update(path, iface, "node.session.scan", "manual")
            if target.chap_session:
                user, password = _pair(secrets, SECRET_SESSION_USER, SECRET_SESSION_PASSWORD)
                self._update(path, iface, "node.session.auth.authmethod", "CHAP")
                self._update(path, iface, "node.session.auth.username", user)
                self._db.set_node_secret(
                    iqn=path.iqn,
                    portal=path.portal,
                    iface=iface,
                    name=SECRET_SESSION_PASSWORD,
                    value=password,
                )
            else:
                self._update(path, iface, "node.session.auth.authmethod", "None")
            session = self._session_for(target, path, iface)
            if session is None:
                result = self._adm([*self._node(path, iface), "--login"])
                if result.returncode not in (0, EXIT_SESSION_EXISTS):
                    who = target.initiator_name or "the host's initiator"
                    raise error_for(result, f"login to {path.iqn} at {path.portal} as {who} via {iface}")
                session = self._session_for(target, path, iface)
                if session is None:
                    raise RetryableAttachError(
                        f"login to {path.iqn} via {iface} reported success but no session"
                    )
            else:
                log.info(
                    "iscsi_session_reused", iqn=path.iqn, portal=path.portal, sid=session.sid, iface=iface
                )
            self._update(path, iface, "node.startup", "manual")
            return session

    def _discover_with_chap(self, path: IscsiPath, secrets: Mapping[str, str], iface: str) -> None:
        user, password = _pair(secrets, SECRET_DISCOVERY_USER, SECRET_DISCOVERY_PASSWORD)
        portal = normalize_portal(path.portal)
        base = ["-m", "discoverydb", "-t", "sendtargets", "-p", portal]
        new = self._adm([*base, "--op", "new"])
        if new.returncode not in (0, EXIT_SESSION_EXISTS):
            raise error_for(new, "create discovery record")
        update = self._adm(
            [
                *base,
                "--op",
                "update",
                "-n",
                "discovery.sendtargets.auth.authmethod",
                "-v",
                "CHAP",
                "-n",
                SECRET_DISCOVERY_USER,
                "-v",
                user,
            ]
        )
        if update.returncode != 0:
            raise error_for(update, "update discovery CHAP")
        self._db.set_discovery_secret(portal=portal, name=SECRET_DISCOVERY_PASSWORD, value=password)
        # through the volume's iface: as its initiator, binding found records to it alone (without -I
        # a sendtargets discovery binds them to every iface in /etc/iscsi/ifaces)
        discover = self._adm([*base, "--interface", iface, "--discover"])
        if discover.returncode != 0:
            raise error_for(discover, f"discovery at {portal}")

    # --- LUN discovery ---------------------------------------------------------------------------------

    def _session_dirs(self, sid: str) -> list[Path]:
        root = self._settings.sysfs_root / "class" / "iscsi_host"
        return sorted(root.glob(f"host*/device/session{sid}"))

    def find_lun(self, sid: str, lun: int) -> str | None:
        """Block device name (``sdX``) of LUN ``lun`` in session ``sid``, from sysfs."""
        for session_dir in self._session_dirs(sid):
            for block in sorted(session_dir.glob("target*/*:*:*:*/block/*")):
                if block.parent.parent.name.rsplit(":", 1)[-1] == str(lun):
                    return block.name
        return None

    def _rescan(self, sid: str, lun: int) -> None:
        for session_dir in self._session_dirs(sid):
            host = session_dir.parent.parent.name  # hostN
            scan = self._settings.sysfs_root / "class" / "scsi_host" / host / "scan"
            try:
                scan.write_text(f"0 0 {lun}")
                log.info("scsi_host_rescan", host=host, lun=lun)
            except OSError as e:
                log.warning("scsi_host_rescan_failed", host=host, error=str(e))

    def wait_lun(self, sid: str, lun: int) -> str:
        """Wait for the LUN to appear, rescanning the SCSI host at the configured times."""
        s = self._settings
        schedule = list(s.iscsi_rescan_at)
        started = self._clock()
        while True:
            name = self.find_lun(sid, lun)
            if name is not None:
                return name
            elapsed = self._clock() - started
            while schedule and elapsed >= schedule[0]:
                schedule.pop(0)
                self._rescan(sid, lun)
            if elapsed >= s.iscsi_lun_timeout:
                raise RetryableAttachError(f"LUN {lun} of session {sid} did not appear within {elapsed:.1f}s")
            self._sleep(s.poll_interval)

    def wwid(self, name: str) -> str:
        path = self._settings.sysfs_root / "block" / name / "device" / "wwid"
        try:
            return path.read_text().strip()
        except FileNotFoundError:
            return ""

    def _multipath_holder(self, names: list[str]) -> str:
        s = self._settings
        deadline = self._clock() + s.multipath_wait
        while True:
            sets = []
            for name in names:
                holders = s.sysfs_root / "block" / name / "holders"
                sets.append({p.name for p in holders.glob("dm-*")})
            common = set.intersection(*sets) if sets else set()
            if common:
                return sorted(common)[0]
            if self._clock() >= deadline:
                return ""
            self._sleep(s.poll_interval)

    # --- attach / detach -------------------------------------------------------------------------------

    def attach(self, target: IscsiTarget, secrets: Mapping[str, str]) -> IscsiAttachment:
        """Log in on every path, find the LUN on each, check the WWID, prefer a multipath device."""
        check_names(target)
        iface = self._ifaces.ensure(target)
        names: list[str] = []
        errors: list[AttachError] = []
        for path in target.paths:
            try:
                session = self.login(target, path, secrets, iface)
                name = self.wait_lun(session.sid, path.lun)
            except (RetryableAttachError, FinalAttachError) as e:
                if len(target.paths) == 1 or isinstance(e, AuthFailed):
                    raise
                log.warning("iscsi_path_failed", iqn=path.iqn, portal=path.portal, error=str(e))
                errors.append(e)
                continue
            if target.wwid:
                found = self.wwid(name)
                if normalize_wwid(found) != normalize_wwid(target.wwid):
                    raise WrongDevice(
                        f"LUN {path.lun} at {path.portal} is {name} with WWID {found or '(none)'}, "
                        f"expected {target.wwid}"
                    )
            names.append(name)
        if not names:
            raise errors[0] if errors else RetryableAttachError("no iSCSI path could be attached")
        dev_root = self._settings.dev_root
        if len(target.paths) > 1:
            holder = self._multipath_holder(names)
            if holder:
                return IscsiAttachment(
                    device=str(dev_root / holder), scsi_devices=tuple(names), multipath_device=holder
                )
            log.warning("iscsi_multipath_missing", devices=names)
        return IscsiAttachment(device=str(dev_root / names[0]), scsi_devices=tuple(names))

    def detach(
        self,
        target: IscsiTarget,
        *,
        scsi_devices: tuple[str, ...],
        multipath_device: str,
        others: Callable[[], Iterable[IscsiTarget]],
    ) -> None:
        """Flush and delete the SCSI disks, log out of sessions and drop the iface no other volume uses.

        ``others`` lists the other staged iSCSI volumes; it is read under each target's lock (a stage
        stashes its volume before it logs in under that lock), so a logout never races a new user.
        """
        dev_root = self._settings.dev_root
        if multipath_device:
            self._runner.run(["multipath", "-f", str(dev_root / multipath_device)]).check()
        for name in scsi_devices:
            self._devices.flush(str(dev_root / name))
            delete = self._settings.sysfs_root / "block" / name / "device" / "delete"
            if delete.exists():
                delete.write_text("1")
        iface = iface_for(target)
        for path in target.paths:
            portal = normalize_portal(path.portal)
            with self._locks.target(f"{portal},{path.iqn}"):
                if (portal, path.iqn, iface) in session_keys(others()):
                    log.info("iscsi_logout_skipped_in_use", iqn=path.iqn, portal=portal, iface=iface)
                    continue
                out = self._adm([*self._node(path, iface), "--logout"])
                if out.returncode not in (0, EXIT_NO_RECORDS, EXIT_NO_SESSION):
                    raise error_for(out, f"logout from {path.iqn}")
                gone = self._adm([*self._node(path, iface), "--op", "delete"])
                if gone.returncode not in (0, EXIT_NO_RECORDS, EXIT_OLD_NOT_FOUND):
                    raise error_for(gone, f"delete node record {path.iqn}")
        self._ifaces.release(target, others=others)

    def rescan_sessions(self, target: IscsiTarget) -> None:
        """Ask each session to rescan its LUNs (after a Cinder extend)."""
        iface = iface_for(target)
        for path in target.paths:
            session = self._session_for(target, path, iface)
            if session is not None:
                result = self._adm(["-m", "session", "-r", session.sid, "--rescan"])
                if result.returncode != 0:
                    raise error_for(result, f"rescan session {session.sid}")


def _pair(secrets: Mapping[str, str], user_key: str, password_key: str) -> tuple[str, str]:
    user, password = secrets.get(user_key, ""), secrets.get(password_key, "")
    if not user or not password:
        raise InvalidRequest(f"CHAP is enabled but the node stage secret lacks {user_key} / {password_key}")
    return user, password
