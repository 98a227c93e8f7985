"""The ``iscsi-tgt`` backend: file-backed volumes exported through a real tgtd by Cinder's own TgtAdm.

Why: ``file_driver`` only *describes* an iSCSI export; this backend makes one. The data path stays the
file driver's (a sparse file per volume), and the export is Cinder's unmodified target helper
``cinder.volume.targets.tgt.TgtAdm`` — the one the LVM driver uses — with the file as its backing store:
``create_export`` (the volume manager calls it when an attachment is updated with a connector) generates
the per-volume CHAP account, writes the target's persistence file and runs ``tgt-admin --update``;
``initialize_connection`` answers from ``provider_location`` / ``provider_auth``; ``remove_export``
(attachment deleted) runs ``tgt-admin --delete``.

Two adjustments let it run here, neither in Cinder's code path:

* ``file_tgt_bin_dir`` (written by ``tgt.start_tgtd``) is put first on ``PATH``: its ``tgt-admin`` /
  ``tgtadm`` wrappers pin every call to *our* tgtd (its control port) and *our* targets.conf, so nothing
  machine-wide (``/etc/tgt``, the default control socket) is touched;
* Cinder runs those commands through oslo.privsep's ``sys_admin`` context, which would start a privileged
  helper with ``sudo cinder-rootwrap``; this process is already root, so the context runs them in-process
  (``set_client_mode(False)``, what oslo.privsep offers for exactly that).

Two additions make the target production-like where TgtAdm is not:

* **Initiator ACLs** (``InitiatorAclTgtAdm``). TgtAdm's persistence file names no initiator, so
  ``tgt-admin`` binds the target to ``ALL`` and any initiator with the CHAP secret gets in. Cinder's LIO
  helper instead admits only the initiators of the volume's connections (``initialize_connection`` adds the
  connector's ``initiator`` to the target's ACL, ``terminate_connection`` removes it); this helper does the
  same on tgtd: a live ``tgtadm --op bind|unbind --mode target --initiator-name`` plus a record of the
  names (``file_tgt_acl_dir``, one file per volume) that is written into the persistence file before every
  ``tgt-admin --update``, so a re-export, ``ensure_export`` (Cinder restart; the same path, not tested) or
  the forced update of an online extend recreate the target with the same ACL. tgtd admits an initiator
  whose *name or address* is listed and ``tgt-admin`` binds ``ALL`` addresses when a target lists none (both
  measured), so the file also lists the address ``0.0.0.0/32``, which no peer has: the names alone decide,
  and a target with no connection left admits nobody. The connector's ``ip`` is deliberately not bound:
  with tgtd's "or" it would admit every initiator on that host.
* **Discovery CHAP** (``file_discovery_chap_username`` / ``_password``, the file driver's options): the
  account is created on tgtd and bound to discovery sessions (``tgtadm --mode account --op bind`` without
  ``--tid``) at ``do_setup``, and the connection info carries ``discovery_auth_*`` as the NetApp or XtremIO
  drivers' does. tgtd then refuses a SendTargets discovery without those credentials; the targets it lists
  are filtered by the ACL above.

cinder-backup's own connector (this host) still gets the file driver's ``local`` connection, no target.
Imported only inside the Cinder subprocess (it imports ``cinder``).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from cinder import exception
from cinder import utils as cinder_utils
from cinder.volume.targets.tgt import TgtAdm
from oslo_concurrency import lockutils
from oslo_concurrency import processutils as putils
from oslo_config import cfg
from oslo_log import log as logging

from provisioner.testworld.real_cinder.file_driver import BACKUP_INITIATOR, FileVolumeDriver

LOG = logging.getLogger(__name__)

tgt_driver_opts = [
    cfg.StrOpt(
        "file_tgt_bin_dir",
        default="",
        help="Directory with tgt-admin/tgtadm wrappers for the test tgtd; put first on PATH.",
    ),
    cfg.StrOpt(
        "file_tgt_acl_dir",
        default="",
        help="Directory of the initiator ACL records (one file per volume; default: <volumes_dir>-acl).",
    ),
]

#: An initiator address no TCP peer has: listing it stops tgt-admin from binding ALL (see the docstring).
DENY_ADDRESS = "0.0.0.0/32"
_ADDRESS = re.compile(r"ALL|[0-9.]+(/[0-9]+)?")  # tgt-admin's own test tells addresses from names
_ACL_LINE = re.compile(r"^\s*initiator-(name|address)\s.*$\n?", flags=re.MULTILINE)


def _is_own_host(connector: Any) -> bool:
    """cinder-backup in this process (recognised by its initiator, as the file driver does)."""
    return bool((connector or {}).get("initiator") == BACKUP_INITIATOR)


def _tgtadm(*args: str) -> tuple[str, str]:
    """``tgtadm`` through the wrapper on PATH (pinned to the test daemon); never carries a secret here."""
    out, err = putils.execute("tgtadm", "--lld", "iscsi", *args)
    return str(out), str(err)


class InitiatorAclTgtAdm(TgtAdm):  # type: ignore[misc]  # cinder ships no type information
    """Cinder's TgtAdm with LIO's access model: a target admits only its connections' initiators."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        acl_dir = self.configuration.safe_get("file_tgt_acl_dir") or f"{self.volumes_dir.rstrip('/')}-acl"
        self._acl_dir = Path(acl_dir)

    # -- the record: one initiator name per line, in <acl dir>/<volume name> --------------------------
    def _acl_file(self, vol_name: str) -> Path:
        return self._acl_dir / vol_name

    def initiators(self, vol_name: str) -> list[str]:
        try:
            return self._acl_file(vol_name).read_text().split()
        except FileNotFoundError:
            return []

    def _record(self, vol_name: str, names: list[str]) -> None:
        if names:
            self._acl_dir.mkdir(parents=True, exist_ok=True)
            cinder_utils.robust_file_write(str(self._acl_dir), vol_name, "".join(f"{n}\n" for n in names))
        else:
            self._acl_file(vol_name).unlink(missing_ok=True)

    def _write_acl_into_persistence_file(self, vol_name: str) -> None:
        """Replace the ACL lines of ``<volumes_dir>/<vol_name>`` with the record (and the deny address)."""
        path = Path(self.volumes_dir) / vol_name
        try:
            conf = path.read_text()
        except FileNotFoundError:
            return
        lines = "".join(f"    initiator-name {n}\n" for n in self.initiators(vol_name))
        lines += f"    initiator-address {DENY_ADDRESS}\n"
        conf = _ACL_LINE.sub("", conf).replace("</target>", lines + "</target>", 1)
        cinder_utils.robust_file_write(self.volumes_dir, vol_name, conf)

    # -- every tgt-admin --update (create, ensure, re-export, extend) sees the record -------------------
    def _do_tgt_update(self, name: str, force: bool = False) -> None:
        self._write_acl_into_persistence_file(name.split(":", 1)[1])
        if force:
            self._unbind_names(name)
        super()._do_tgt_update(name, force)

    def _unbind_names(self, iqn: str) -> None:
        """Take the initiator names off a live target before tgt-admin force-deletes it: with a session
        logged in, tgt-admin unbinds every ACL entry with ``-I`` (addresses only), fails on a name with
        "this access control rule does not exist", and the target stays (measured). The names come back
        from the persistence file when tgt-admin re-creates the target."""
        tid = self._get_target(iqn)
        for entry in self.acl(iqn) if tid is not None else []:
            if not _ADDRESS.fullmatch(entry):
                _tgtadm("--op", "unbind", "--mode", "target", "--tid", tid, "-Q", entry)

    # -- connections: the live ACL follows the connectors ----------------------------------------------
    def _live_bind(self, iqn: str, initiator: str, *, bind: bool) -> None:
        tid = self._get_target(iqn)
        if tid is None:
            raise exception.NotFound(f"no tgtd target {iqn}")
        if (initiator in self.acl(iqn)) != bind:
            _tgtadm("--op", "bind" if bind else "unbind", "--mode", "target", "--tid", tid, "-Q", initiator)

    def acl(self, iqn: str) -> list[str]:
        """The target's live ACL entries (``ACL information`` of ``tgtadm --op show --mode target``)."""
        out, _ = _tgtadm("--op", "show", "--mode", "target")
        for block in re.split(r"^(?=Target \d+: )", out, flags=re.MULTILINE):
            if block.startswith("Target ") and block.splitlines()[0].split(": ", 1)[1] == iqn:
                acl = block.partition("ACL information:\n")[2]  # the last section of a target
                return [line.strip() for line in acl.splitlines() if line.strip()]
        return []

    def initialize_connection(self, volume: Any, connector: dict[str, Any]) -> dict[str, Any]:
        initiator = connector["initiator"]
        iqn = volume["provider_location"].split(" ")[1]
        with lockutils.lock(f"tgt-acl-{volume['name']}"):
            names = self.initiators(volume["name"])
            if initiator not in names:
                self._record(volume["name"], [*names, initiator])
                self._write_acl_into_persistence_file(volume["name"])
            try:
                self._live_bind(iqn, initiator, bind=True)
            except (putils.ProcessExecutionError, exception.NotFound) as e:
                LOG.error("Failed to add initiator %s to the ACL of %s: %s", initiator, iqn, e)
                raise exception.ISCSITargetAttachFailed(volume_id=volume["id"]) from e
        info: dict[str, Any] = super().initialize_connection(volume, connector)
        return info

    def terminate_connection(self, volume: Any, connector: dict[str, Any], **kwargs: Any) -> None:
        if not volume["provider_location"]:
            return
        initiator = connector["initiator"]
        iqn = volume["provider_location"].split(" ")[1]
        with lockutils.lock(f"tgt-acl-{volume['name']}"):
            self._record(volume["name"], [n for n in self.initiators(volume["name"]) if n != initiator])
            self._write_acl_into_persistence_file(volume["name"])
            try:
                self._live_bind(iqn, initiator, bind=False)
            except exception.NotFound:
                pass  # the target is gone already: nothing admits the initiator
            except putils.ProcessExecutionError as e:
                LOG.error("Failed to remove initiator %s from the ACL of %s: %s", initiator, iqn, e)
                raise exception.ISCSITargetDetachFailed(volume_id=volume["id"]) from e

    def remove_iscsi_target(self, tid: Any, lun: Any, vol_id: str, vol_name: str, **kwargs: Any) -> None:
        # attachment_delete has unbound the name already (terminate_connection); Cinder also calls
        # remove_export without it (initialize_connection failed), and TgtAdm deletes with --force
        self._unbind_names(f"{self.iscsi_target_prefix}{vol_name}")
        super().remove_iscsi_target(tid, lun, vol_id, vol_name, **kwargs)
        self._record(vol_name, [])


class TgtFileVolumeDriver(FileVolumeDriver):
    """File volumes, exported as iSCSI LUNs by Cinder's TgtAdm through a real tgtd."""

    VERSION = "1.0.0"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.configuration.append_config_values(tgt_driver_opts)
        self._type = "iscsi"
        self.target_driver = InitiatorAclTgtAdm(configuration=self.configuration, executor=self._execute)

    def do_setup(self, context: Any) -> None:
        super().do_setup(context)
        import cinder.privsep

        bin_dir = self.configuration.file_tgt_bin_dir
        if bin_dir and bin_dir not in os.environ.get("PATH", "").split(os.pathsep):
            os.environ["PATH"] = os.pathsep.join([bin_dir, os.environ.get("PATH", "")])
        if os.geteuid() == 0:
            cinder.privsep.sys_admin_pctxt.set_client_mode(False)
        self._bind_discovery_account()
        LOG.info("iscsi-tgt backend exports through tgt-admin in %s", bin_dir or "PATH")

    def _bind_discovery_account(self) -> None:
        """Discovery CHAP on tgtd: the configured account, bound to discovery sessions (no ``--tid``)."""
        user = self.configuration.file_discovery_chap_username
        if not user:
            return
        accounts, _ = _tgtadm("--op", "show", "--mode", "account")
        if user not in accounts.split():
            # tgtadm takes the secret only in argv; processutils masks "--password=" in what it logs
            _tgtadm(
                "--op", "new", "--mode", "account", f"--user={user}",
                f"--password={self.configuration.file_discovery_chap_password}",
            )  # fmt: skip
        system, _ = _tgtadm("--op", "show", "--mode", "sys")
        if user not in system.partition("Account information:")[2].partition("iSNS:")[0].split():
            _tgtadm("--op", "bind", "--mode", "account", f"--user={user}")

    # -- exports: Cinder's TgtAdm --------------------------------------------------------------------
    def ensure_export(self, context: Any, volume: Any) -> None:
        if volume.provider_location:
            self.target_driver.ensure_export(context, volume, self.local_path(volume))

    # Cinder lets create_export return the model update (the file driver has none to return).
    def create_export(self, context: Any, volume: Any, connector: Any) -> dict[str, str] | None:  # type: ignore[override]
        if _is_own_host(connector):
            return None
        info = self.target_driver.create_export(context, volume, self.local_path(volume))
        return {"provider_location": info["location"], "provider_auth": info["auth"]}

    def remove_export(self, context: Any, volume: Any) -> None:
        if volume.provider_location:
            self.target_driver.remove_export(context, volume)

    def validate_connector(self, connector: dict[str, Any]) -> None:
        if not _is_own_host(connector):
            self.target_driver.validate_connector(connector)

    def initialize_connection(self, volume: Any, connector: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        if _is_own_host(connector):
            return super().initialize_connection(volume, connector, **kwargs)
        info: dict[str, Any] = self.target_driver.initialize_connection(volume, connector)
        conf = self.configuration
        if conf.file_discovery_chap_username:
            info["data"]["discovery_auth_method"] = "CHAP"
            info["data"]["discovery_auth_username"] = conf.file_discovery_chap_username
            info["data"]["discovery_auth_password"] = conf.file_discovery_chap_password
        return info

    # Cinder reads a bool from terminate_connection (shared export); the file driver has none to give.
    def terminate_connection(self, volume: Any, connector: Any, **kwargs: Any) -> bool:  # type: ignore[override]
        """The LVM driver's rule: another attachment from the same initiator keeps the ACL entry; the
        answer ("other attachments share this export") tells the manager not to remove the target."""
        if _is_own_host(connector):
            return False
        attachments = volume.volume_attachment or []
        same = [
            a
            for a in attachments
            if a.connector and self.target_driver.are_same_connector(a.connector, connector)
        ]
        if volume.multiattach and len(same) > 1:
            return True
        self.target_driver.terminate_connection(volume, connector, **kwargs)
        return len(attachments) > 1

    def extend_volume(self, volume: Any, new_size: int) -> None:
        super().extend_volume(volume, new_size)
        self.target_driver.extend_target(volume)
