"""Connection info the Cinder emulator returns, per volume type, shaped like real Cinder drivers'.

Why: the mapping and the node agent depend on the exact keys Cinder's RBD and iSCSI drivers send
(reference/connection-info.md). Each volume type gets a profile; tests configure profiles to produce
cephx keyrings, rados namespaces, IPv6 monitors, multipath portals or session/discovery CHAP.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True, kw_only=True)
class RbdProfile:
    """Answers like Cinder's RBD driver."""

    pool: str = "volumes"
    rados_namespace: str | None = None
    hosts: tuple[str, ...] = ("127.0.0.1",)
    ports: tuple[str, ...] = ("6789",)
    cluster_name: str = "ceph"
    auth_enabled: bool = False
    auth_username: str | None = None
    #: Only set when the backend has ``rbd_keyring_conf``: the whole keyring file text.
    keyring: str | None = None
    access_mode: str = "rw"

    def connection_info(self, volume_id: str, connector: Mapping[str, Any]) -> dict[str, Any]:
        """``{"driver_volume_type": "rbd", "data": {...}}`` for one volume."""
        image = f"volume-{volume_id}"
        name = "/".join(p for p in (self.pool, self.rados_namespace, image) if p)
        data: dict[str, Any] = {
            "name": name,
            "hosts": list(self.hosts),
            "ports": list(self.ports),
            "cluster_name": self.cluster_name,
            "auth_enabled": self.auth_enabled,
            "auth_username": self.auth_username,
            "secret_type": "ceph",
            "secret_uuid": None,
            "volume_id": volume_id,
            "discard": True,
            "qos_specs": None,
            "access_mode": self.access_mode,
            "encrypted": False,
            "cacheable": False,
        }
        if self.keyring is not None:
            data["keyring"] = self.keyring
        return {"driver_volume_type": "rbd", "data": data}


@dataclass(frozen=True, slots=True, kw_only=True)
class IscsiProfile:
    """Answers like Cinder's LVM/iSCSI target helpers."""

    portal: str = "127.0.0.1:3260"
    iqn_prefix: str = "iqn.2010-10.org.openstack"
    lun: int = 0
    #: Extra portals for multipath (sent as target_portals/iqns/luns when the connector asks multipath).
    extra_portals: tuple[str, ...] = ()
    #: Always send the multipath lists, even for a non-multipath connector.
    always_multipath: bool = False
    auth_method: str | None = None
    auth_username: str | None = None
    auth_password: str | None = None
    discovery_auth_method: str | None = None
    discovery_auth_username: str | None = None
    discovery_auth_password: str | None = None
    access_mode: str = "rw"

    def connection_info(self, volume_id: str, connector: Mapping[str, Any]) -> dict[str, Any]:
        """``{"driver_volume_type": "iscsi", "data": {...}}`` for one volume."""
        iqn = f"{self.iqn_prefix}:volume-{volume_id}"
        data: dict[str, Any] = {
            "target_discovered": False,
            "target_portal": self.portal,
            "target_iqn": iqn,
            "target_lun": self.lun,
            "volume_id": volume_id,
            "discard": False,
            "qos_specs": None,
            "access_mode": self.access_mode,
            "encrypted": False,
            "cacheable": False,
        }
        if self.extra_portals and (connector.get("multipath") or self.always_multipath):
            portals = [self.portal, *self.extra_portals]
            data["target_portals"] = portals
            data["target_iqns"] = [iqn] * len(portals)
            data["target_luns"] = [self.lun] * len(portals)
        if self.auth_method:
            data["auth_method"] = self.auth_method
            data["auth_username"] = self.auth_username
            data["auth_password"] = self.auth_password
        if self.discovery_auth_method:
            data["discovery_auth_method"] = self.discovery_auth_method
            data["discovery_auth_username"] = self.discovery_auth_username
            data["discovery_auth_password"] = self.discovery_auth_password
        return {"driver_volume_type": "iscsi", "data": data}


@dataclass(frozen=True, slots=True, kw_only=True)
class OtherProfile:
    """A type whose driver speaks something we do not map (e.g. ``fibre_channel``, ``nvmeof``)."""

    driver_volume_type: str
    data: Mapping[str, Any]

    def connection_info(self, volume_id: str, connector: Mapping[str, Any]) -> dict[str, Any]:
        """The configured data plus the volume id."""
        return {"driver_volume_type": self.driver_volume_type, "data": {**self.data, "volume_id": volume_id}}


Profile = RbdProfile | IscsiProfile | OtherProfile

#: Volume types every emulator has: names as the real-Cinder launcher creates them, plus Cinder's default.
DEFAULT_PROFILES: Mapping[str, Profile] = {
    "__DEFAULT__": RbdProfile(),
    "rbd": RbdProfile(),
    "iscsi": IscsiProfile(),
}
