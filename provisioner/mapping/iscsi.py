"""Cinder ``iscsi`` connection info → in-tree ``spec.iscsi`` or our CSI target (reference/connection-info.md).

One validated record (``IscsiSource``: every path primary-first, CHAP credentials) renders both flavours.
The in-tree source can only say "one IQN and LUN, several portals", and the API server validates IQNs, the
LUN range and the ``<pv name>:<portal>`` length; we refuse those cases here, naming the Cinder field, so the
claim gets a clear event instead of a 422 from the API server. CHAP secrets never enter the PV or a log.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from provisioner import csi_contract
from provisioner.csi_contract import IscsiPath
from provisioner.domain import names, node_input
from provisioner.domain.errors import InvalidInput
from provisioner.mapping.common import (
    Credentials,
    as_int,
    fname,
    opt_list,
    opt_str,
    read_only,
    refuse_encrypted,
    req_str,
)

DEFAULT_INTERFACE: Final = "default"
MAX_LUN: Final = 16383  # SAM flat addressing; the in-tree source allows only 0-255
MAX_INTREE_LUN: Final = 255
#: Kubernetes: with initiatorName set, len("<pv name>:<targetPortal>") must not exceed 64.
MAX_INTREE_PORTAL_ID: Final = 64

_PORTAL: Final = re.compile(
    r"(\[[0-9A-Fa-f:.]+(%[A-Za-z0-9._-]+)?\]|[A-Za-z0-9._-]+)(:(?P<port>[0-9]{1,5}))?"
)
_NAME: Final = re.compile(r"(iqn|eui|naa)\.[^\s,]+")
# The API server's own rules for in-tree iscsi (pkg/apis/core/validation).
_K8S_IQN: Final = re.compile(r"iqn\.\d{4}-\d{2}\.[A-Za-z0-9.-]+:[^,;*&$|\s]+")
_K8S_EUI: Final = re.compile(r"eui.[A-Za-z0-9]{16}")
_K8S_NAA: Final = re.compile(r"naa.[A-Za-z0-9]{32}")


@dataclass(frozen=True, slots=True, kw_only=True)
class Chap:
    """A CHAP user and secret (``repr`` hides the secret)."""

    username: str
    password: str = field(repr=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class IscsiSource:
    """A validated iSCSI export: the primary path first, then the other multipath paths."""

    paths: tuple[IscsiPath, ...]
    session_chap: Chap | None = None
    discovery_chap: Chap | None = None
    read_only: bool = False


def parse_iscsi(data: Mapping[str, Any]) -> IscsiSource:
    """Validate iscsi connection data; ``InvalidInput`` names the offending ``data.*`` field."""
    refuse_encrypted(data)
    return IscsiSource(
        paths=_paths(data),
        session_chap=_chap(data, "auth_method", "auth_username", "auth_password"),
        discovery_chap=_chap(
            data, "discovery_auth_method", "discovery_auth_username", "discovery_auth_password"
        ),
        read_only=read_only(data),
    )


def _portal(value: Any, field_name: str) -> str:
    if not isinstance(value, str) or not (match := _PORTAL.fullmatch(value)):
        raise InvalidInput(field_name, "must be 'host:port' (IPv6 hosts in brackets)")
    if match["port"] is not None and not 1 <= int(match["port"]) <= 65535:
        raise InvalidInput(field_name, "port must be between 1 and 65535")
    return node_input.portal(value, field=field_name)  # the node agent's grammar (iscsiadm -p)


def _iqn(value: Any, field_name: str) -> str:
    if not isinstance(value, str) or not _NAME.fullmatch(value):
        raise InvalidInput(field_name, "must be an iSCSI name (iqn., eui. or naa.)")
    return node_input.iscsi_name(value, field=field_name)  # the node agent's grammar (iscsiadm -T)


def _paths(data: Mapping[str, Any]) -> tuple[IscsiPath, ...]:
    portals = opt_list(data, "target_portals")
    iqns = opt_list(data, "target_iqns")
    luns = opt_list(data, "target_luns")
    if portals is None and (iqns is not None or luns is not None):
        raise InvalidInput(fname("target_portals"), "missing although target_iqns/target_luns are set")
    extra: list[IscsiPath] = []
    if portals is not None:
        for key, values in (("target_iqns", iqns), ("target_luns", luns)):
            if values is not None and len(values) != len(portals):
                raise InvalidInput(fname(key), "must have one entry per entry in data.target_portals")
        for index, portal in enumerate(portals):
            extra.append(
                IscsiPath(
                    portal=_portal(portal, f"{fname('target_portals')}[{index}]"),
                    iqn=_iqn(iqns[index], f"{fname('target_iqns')}[{index}]") if iqns else "",
                    lun=as_int(luns[index], f"{fname('target_luns')}[{index}]", low=0, high=MAX_LUN)
                    if luns
                    else -1,
                )
            )
    primary_portal = opt_str(data, "target_portal")
    if primary_portal is None and not extra:
        raise InvalidInput(fname("target_portal"), "missing")
    primary_iqn = opt_str(data, "target_iqn")
    if primary_iqn is None and not (extra and extra[0].iqn):
        raise InvalidInput(fname("target_iqn"), "missing")
    lun_raw = data.get("target_lun")
    if lun_raw is None and not (extra and extra[0].lun >= 0):
        raise InvalidInput(fname("target_lun"), "missing")
    primary = IscsiPath(
        portal=_portal(primary_portal, fname("target_portal")) if primary_portal else extra[0].portal,
        iqn=_iqn(primary_iqn, fname("target_iqn")) if primary_iqn else extra[0].iqn,
        lun=as_int(lun_raw, fname("target_lun"), low=0, high=MAX_LUN)
        if lun_raw is not None
        else extra[0].lun,
    )
    # Lists without target_iqns / target_luns share the primary's IQN / LUN.
    paths = [primary]
    for path in extra:
        filled = IscsiPath(
            portal=path.portal, iqn=path.iqn or primary.iqn, lun=path.lun if path.lun >= 0 else primary.lun
        )
        if filled not in paths:
            paths.append(filled)
    return tuple(paths)


def _chap(data: Mapping[str, Any], method_key: str, user_key: str, password_key: str) -> Chap | None:
    method = opt_str(data, method_key)
    if method is None or method.lower() == "none":
        return None
    if method.upper() != "CHAP":
        raise InvalidInput(fname(method_key), "only CHAP is supported")
    username = node_input.chap_user(req_str(data, user_key), field=fname(user_key))
    password = node_input.chap_secret(req_str(data, password_key), field=fname(password_key))
    return Chap(username=username, password=password)


def credentials(source: IscsiSource) -> Credentials | None:
    """CHAP material for a provisioner-owned ``kubernetes.io/iscsi-chap`` Secret (in-tree key names)."""
    data: dict[str, str] = {}
    if source.session_chap is not None:
        data[csi_contract.SECRET_SESSION_USER] = source.session_chap.username
        data[csi_contract.SECRET_SESSION_PASSWORD] = source.session_chap.password
    if source.discovery_chap is not None:
        data[csi_contract.SECRET_DISCOVERY_USER] = source.discovery_chap.username
        data[csi_contract.SECRET_DISCOVERY_PASSWORD] = source.discovery_chap.password
    if not data:
        return None
    return Credentials(secret_type=names.SECRET_TYPE_ISCSI_CHAP, data=data)


def _k8s_name_ok(value: str) -> bool:
    return bool(_K8S_IQN.fullmatch(value) or _K8S_EUI.fullmatch(value) or _K8S_NAA.fullmatch(value))


def intree_source(
    source: IscsiSource,
    *,
    pv_name: str,
    initiator_name: str,
    fs_type: str | None,
    secret_ref: Mapping[str, str] | None,
) -> dict[str, Any]:
    """The in-tree ``spec.iscsi``: one IQN and LUN, other portals as ``portals``."""
    primary = source.paths[0]
    if any(p.iqn != primary.iqn for p in source.paths):
        raise InvalidInput(
            fname("target_iqns"), "several target IQNs can only be expressed with volumeSource csi"
        )
    if any(p.lun != primary.lun for p in source.paths):
        raise InvalidInput(
            fname("target_luns"), "several target LUNs can only be expressed with volumeSource csi"
        )
    if primary.lun > MAX_INTREE_LUN:
        raise InvalidInput(fname("target_lun"), "in-tree iscsi allows LUNs 0-255; use volumeSource csi")
    if not _k8s_name_ok(primary.iqn):
        raise InvalidInput(fname("target_iqn"), "not an IQN the Kubernetes API accepts for in-tree iscsi")
    iscsi: dict[str, Any] = {
        "targetPortal": primary.portal,
        "iqn": primary.iqn,
        "lun": primary.lun,
        "iscsiInterface": DEFAULT_INTERFACE,
    }
    others = [p.portal for p in source.paths[1:] if p.portal != primary.portal]
    if others:
        iscsi["portals"] = list(dict.fromkeys(others))
    if initiator_name:
        if not _k8s_name_ok(initiator_name):
            raise InvalidInput("initiatorName", "not an initiator name the Kubernetes API accepts")
        if len(f"{pv_name}:{primary.portal}") > MAX_INTREE_PORTAL_ID:
            raise InvalidInput(
                fname("target_portal"),
                f"'<pv name>:<portal>' exceeds {MAX_INTREE_PORTAL_ID} characters, which in-tree iscsi "
                "refuses with an initiatorName; use volumeSource csi",
            )
        iscsi["initiatorName"] = initiator_name
    if fs_type:
        iscsi["fsType"] = fs_type
    if source.session_chap is not None:
        iscsi["chapAuthSession"] = True
    if source.discovery_chap is not None:
        iscsi["chapAuthDiscovery"] = True
    if secret_ref is not None:
        iscsi["secretRef"] = dict(secret_ref)
    if source.read_only:
        iscsi["readOnly"] = True
    return iscsi


def csi_target(
    source: IscsiSource, *, initiator_name: str, content_source: str, grow_fs: bool
) -> csi_contract.IscsiTarget:
    """The node agent's view of the LUN: every path, CHAP flags (the secrets travel in the stage Secret)."""
    if initiator_name and not _NAME.fullmatch(initiator_name):
        raise InvalidInput("initiatorName", "must be an iSCSI name (iqn., eui. or naa.)")
    if initiator_name:
        node_input.iscsi_name(initiator_name, field="initiatorName")
    return csi_contract.IscsiTarget(
        paths=source.paths,
        initiator_name=initiator_name,
        iscsi_interface=DEFAULT_INTERFACE,
        chap_session=source.session_chap is not None,
        chap_discovery=source.discovery_chap is not None,
        content_source=content_source,
        grow_fs=grow_fs,
    )
