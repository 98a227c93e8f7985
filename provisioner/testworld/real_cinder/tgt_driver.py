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

cinder-backup's own connector (this host) still gets the file driver's ``local`` connection, no target.
Imported only inside the Cinder subprocess (it imports ``cinder``).
"""

from __future__ import annotations

import os
from typing import Any

from oslo_config import cfg
from oslo_log import log as logging
from oslo_utils import importutils

from provisioner.testworld.real_cinder.file_driver import BACKUP_INITIATOR, FileVolumeDriver

LOG = logging.getLogger(__name__)

tgt_driver_opts = [
    cfg.StrOpt(
        "file_tgt_bin_dir",
        default="",
        help="Directory with tgt-admin/tgtadm wrappers for the test tgtd; put first on PATH.",
    ),
]


def _is_own_host(connector: Any) -> bool:
    """cinder-backup in this process (recognised by its initiator, as the file driver does)."""
    return bool((connector or {}).get("initiator") == BACKUP_INITIATOR)


class TgtFileVolumeDriver(FileVolumeDriver):
    """File volumes, exported as iSCSI LUNs by Cinder's TgtAdm through a real tgtd."""

    VERSION = "1.0.0"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.configuration.append_config_values(tgt_driver_opts)
        self._type = "iscsi"
        helper = self.configuration.safe_get("target_helper") or "tgtadm"
        self.target_driver = importutils.import_object(
            self.target_mapping[helper], configuration=self.configuration, executor=self._execute
        )

    def do_setup(self, context: Any) -> None:
        super().do_setup(context)
        import cinder.privsep

        bin_dir = self.configuration.file_tgt_bin_dir
        if bin_dir and bin_dir not in os.environ.get("PATH", "").split(os.pathsep):
            os.environ["PATH"] = os.pathsep.join([bin_dir, os.environ.get("PATH", "")])
        if os.geteuid() == 0:
            cinder.privsep.sys_admin_pctxt.set_client_mode(False)
        LOG.info("iscsi-tgt backend exports through tgt-admin in %s", bin_dir or "PATH")

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
        return info

    def terminate_connection(self, volume: Any, connector: Any, **kwargs: Any) -> None:
        if not _is_own_host(connector):
            self.target_driver.terminate_connection(volume, connector, **kwargs)

    def extend_volume(self, volume: Any, new_size: int) -> None:
        super().extend_volume(volume, new_size)
        self.target_driver.extend_target(volume)
