"""A file-backed volume driver for running *real* OpenStack Cinder in tests.

Why: the real-Cinder test tier needs Cinder's own API, scheduler, volume manager, state machine and
attachment bookkeeping, but there is no Ceph or iSCSI target behind it on a CI machine.  This driver
keeps every volume as a sparse file in a directory (snapshots are file copies) and answers
``initialize_connection`` with the connection info a real RBD or iSCSI backend would return, chosen per
backend by ``file_connection_type``.  Everything above the driver is unmodified Cinder.

One exception to the rbd/iscsi answer: when the connector is Cinder's *own* host (the cinder-backup
service in this process attaching a volume to read or write a backup, through os-brick), the answer is a
``local`` connection to the volume's file, which os-brick's LocalConnector opens as it is.  That is how
cinder-backup with the posix (directory) backup driver works here without kernel rbd or iSCSI.

This module imports ``cinder`` and is therefore imported only inside the Cinder subprocess that
``provisioner.testworld.real_cinder.main`` runs (Cinder monkey-patches the process with eventlet).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from cinder import exception
from cinder.volume import driver
from oslo_config import cfg
from oslo_log import log as logging

LOG = logging.getLogger(__name__)
_GIB = 1024**3
_CHUNK = 4 * 1024 * 1024

file_driver_opts = [
    cfg.StrOpt("file_volumes_dir", help="Directory that holds the volume and snapshot files."),
    cfg.StrOpt(
        "file_connection_type",
        default="rbd",
        choices=["rbd", "iscsi"],
        help="driver_volume_type of the connection info this backend returns.",
    ),
    cfg.IntOpt("file_capacity_gb", default=10000, help="Capacity reported to the scheduler."),
    cfg.StrOpt("file_rbd_pool", default="volumes", help="Pool part of the rbd image name."),
    cfg.StrOpt("file_rbd_namespace", default="", help="Optional rados namespace (pool/ns/image)."),
    cfg.ListOpt("file_rbd_hosts", default=["127.0.0.1"], help="Monitor hosts."),
    cfg.ListOpt("file_rbd_ports", default=["6789"], help="Monitor ports (same length as hosts)."),
    cfg.StrOpt("file_rbd_user", default="", help="cephx user; empty means auth_enabled false."),
    cfg.StrOpt(
        "file_rbd_keyring_file",
        default="",
        help="Keyring file whose text is returned as keyring (like the RBD driver's rbd_keyring_conf).",
    ),
    cfg.ListOpt(
        "file_iscsi_portals",
        default=["127.0.0.1:3260"],
        help="Target portals; more than one gives multipath target_portals when the connector asks.",
    ),
    cfg.StrOpt("file_iscsi_iqn_prefix", default="iqn.2010-10.org.openstack:", help="Target IQN prefix."),
    cfg.IntOpt("file_iscsi_lun", default=0, help="target_lun returned for every volume."),
    cfg.StrOpt("file_discovery_chap_username", default="", help="Discovery CHAP user (empty: off)."),
    cfg.StrOpt("file_discovery_chap_password", default="", secret=True, help="Discovery CHAP secret."),
]


def _copy_sparse(src: Path, dst: Path, size_bytes: int) -> None:
    """Copy only the data extents of ``src`` so that empty test volumes stay cheap, then size ``dst``."""
    with src.open("rb") as fin, dst.open("wb") as fout:
        fd = fin.fileno()
        end = os.fstat(fd).st_size
        offset = 0
        while offset < end:
            try:
                offset = os.lseek(fd, offset, os.SEEK_DATA)
            except OSError:  # ENXIO: no more data after offset
                break
            hole = os.lseek(fd, offset, os.SEEK_HOLE)
            fin.seek(offset)
            fout.seek(offset)
            remaining = hole - offset
            while remaining > 0:
                block = fin.read(min(_CHUNK, remaining))
                if not block:
                    break
                fout.write(block)
                remaining -= len(block)
            offset = hole
        fout.truncate(max(size_bytes, end))


#: The initiator of cinder-backup's own connector (``main._local_connector_properties``): its attachments
#: get a ``local`` connection to the volume's file. Keyed on this, not on the host name, because the
#: provisioner's default connector host is this machine's name too.
BACKUP_INITIATOR = "iqn.2024-01.io.netvol:cinder-backup"


class FileVolumeDriver(driver.VolumeDriver):  # type: ignore[misc]  # cinder ships no type information
    """Volumes are sparse files; connection info looks like an RBD or iSCSI backend's."""

    VERSION = "1.0.0"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.configuration.append_config_values(file_driver_opts)
        self.backend_name = self.configuration.safe_get("volume_backend_name") or "file"
        self._dir = Path(self.configuration.file_volumes_dir or "")
        self._type: str = self.configuration.file_connection_type or "rbd"

    # -- setup and stats -------------------------------------------------------------------------
    def do_setup(self, context: Any) -> None:
        if not self.configuration.file_volumes_dir:
            raise exception.InvalidConfigurationValue(option="file_volumes_dir", value="")
        self._dir.mkdir(parents=True, exist_ok=True)

    def check_for_setup_error(self) -> None:
        if not self._dir.is_dir():
            raise exception.VolumeBackendAPIException(data=f"{self._dir} is not a directory")

    def _update_volume_stats(self) -> None:
        used = sum(p.stat().st_size for p in self._dir.glob("volume-*")) / _GIB
        total = float(self.configuration.file_capacity_gb)
        protocol = "ceph" if self._type == "rbd" else "iSCSI"
        self._stats = {
            "volume_backend_name": self.backend_name,
            "vendor_name": "cinder-provisioner tests",
            "driver_version": self.VERSION,
            "storage_protocol": protocol,
            "pools": [
                {
                    "pool_name": self.backend_name,
                    "total_capacity_gb": total,
                    "free_capacity_gb": max(total - used, 0.0),
                    "provisioned_capacity_gb": used,
                    "reserved_percentage": 0,
                    "max_over_subscription_ratio": 20.0,
                    "thin_provisioning_support": True,
                    "thick_provisioning_support": False,
                    "multiattach": True,
                    "QoS_support": False,
                    "online_extend_support": True,
                    "filter_function": self.get_filter_function(),
                    "goodness_function": self.get_goodness_function(),
                    "backend_state": "up",
                }
            ],
        }

    # -- data path: files --------------------------------------------------------------------------
    def _volume_path(self, volume: Any) -> Path:
        return self._dir / str(volume.name)

    def _snapshot_path(self, snapshot: Any) -> Path:
        return self._dir / str(snapshot.name)

    def local_path(self, volume: Any) -> str:
        return str(self._volume_path(volume))

    def create_volume(self, volume: Any) -> None:
        with self._volume_path(volume).open("wb") as f:
            f.truncate(int(volume.size) * _GIB)

    def create_volume_from_snapshot(self, volume: Any, snapshot: Any) -> None:
        _copy_sparse(self._snapshot_path(snapshot), self._volume_path(volume), int(volume.size) * _GIB)

    def create_cloned_volume(self, volume: Any, src_vref: Any) -> None:
        _copy_sparse(self._volume_path(src_vref), self._volume_path(volume), int(volume.size) * _GIB)

    def delete_volume(self, volume: Any) -> None:
        self._volume_path(volume).unlink(missing_ok=True)

    def extend_volume(self, volume: Any, new_size: int) -> None:
        with self._volume_path(volume).open("r+b") as f:
            f.truncate(int(new_size) * _GIB)

    def create_snapshot(self, snapshot: Any) -> None:
        src = self._dir / str(snapshot.volume_name)
        _copy_sparse(src, self._snapshot_path(snapshot), int(snapshot.volume_size) * _GIB)

    def delete_snapshot(self, snapshot: Any) -> None:
        self._snapshot_path(snapshot).unlink(missing_ok=True)

    def revert_to_snapshot(self, context: Any, volume: Any, snapshot: Any) -> None:
        _copy_sparse(self._snapshot_path(snapshot), self._volume_path(volume), int(volume.size) * _GIB)

    # -- exports: nothing to do for files ----------------------------------------------------------
    def ensure_export(self, context: Any, volume: Any) -> None:
        return None

    def create_export(self, context: Any, volume: Any, connector: Any) -> None:
        return None

    def remove_export(self, context: Any, volume: Any) -> None:
        return None

    # -- control path: connection info ---------------------------------------------------------------
    def validate_connector(self, connector: dict[str, Any]) -> None:
        # Like every real iSCSI driver: the initiator decides the target ACL, so it is required.
        if self._type == "iscsi" and "initiator" not in connector:
            raise exception.InvalidConnectorException(missing="initiator")

    def initialize_connection(self, volume: Any, connector: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        if (connector or {}).get("initiator") == BACKUP_INITIATOR:  # cinder-backup in this process
            return {"driver_volume_type": "local", "data": {"device_path": str(self._volume_path(volume))}}
        if self._type == "rbd":
            return {"driver_volume_type": "rbd", "data": self._rbd_data(volume)}
        return {"driver_volume_type": "iscsi", "data": self._iscsi_data(volume, connector or {})}

    def terminate_connection(self, volume: Any, connector: Any, **kwargs: Any) -> None:
        return None

    def _rbd_data(self, volume: Any) -> dict[str, Any]:
        conf = self.configuration
        parts = [conf.file_rbd_pool, conf.file_rbd_namespace, str(volume.name)]
        user = conf.file_rbd_user or None
        data: dict[str, Any] = {
            "name": "/".join(p for p in parts if p),
            "hosts": list(conf.file_rbd_hosts),
            "ports": list(conf.file_rbd_ports),
            "cluster_name": "ceph",
            "auth_enabled": user is not None,
            "auth_username": user,
            "secret_type": "ceph",
            "secret_uuid": None,
            "volume_id": volume.id,
            "discard": True,
        }
        if conf.file_rbd_keyring_file:
            data["keyring"] = Path(conf.file_rbd_keyring_file).read_text()
        return data

    def _iscsi_data(self, volume: Any, connector: dict[str, Any]) -> dict[str, Any]:
        conf = self.configuration
        portals = list(conf.file_iscsi_portals)
        iqn = f"{conf.file_iscsi_iqn_prefix}{volume.name}"
        lun = int(conf.file_iscsi_lun)
        data: dict[str, Any] = {
            "target_discovered": False,
            "target_portal": portals[0],
            "target_iqn": iqn,
            "target_lun": lun,
            "volume_id": volume.id,
            "discard": False,
        }
        if connector.get("multipath") and len(portals) > 1:
            data["target_portals"] = portals
            data["target_iqns"] = [iqn] * len(portals)
            data["target_luns"] = [lun] * len(portals)
        if conf.safe_get("use_chap_auth"):
            data["auth_method"] = "CHAP"
            data["auth_username"] = conf.safe_get("chap_username")
            data["auth_password"] = conf.safe_get("chap_password")
        if conf.file_discovery_chap_username:
            data["discovery_auth_method"] = "CHAP"
            data["discovery_auth_username"] = conf.file_discovery_chap_username
            data["discovery_auth_password"] = conf.file_discovery_chap_password
        return data
