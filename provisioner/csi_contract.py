"""The one definition of what the provisioner tells the node agent through a CSI PV.

The provisioner writes ``spec.csi.volumeAttributes`` and a ``nodeStageSecretRef`` Secret; the node agent
(``attach/``) reads them back. Both sides use the encoders/decoders here, and a round-trip property test
pins that ``decode(encode(x)) == x``. Values in ``volumeAttributes`` must be strings (the API requires it).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from provisioner.domain.errors import InvalidInput

# volumeAttributes keys
ATTR_TYPE: Final = "type"  # "rbd" | "iscsi"
ATTR_CONTENT_SOURCE: Final = "contentSource"  # "empty" | "snapshot" | "volume" | "adopted"
ATTR_GROW_FS: Final = "growFs"  # "true" when the node must grow the filesystem to the device size
# rbd
ATTR_MONITORS: Final = "monitors"  # comma-separated host:port, IPv6 hosts bracketed
ATTR_POOL: Final = "pool"
ATTR_RADOS_NAMESPACE: Final = "radosNamespace"
ATTR_IMAGE: Final = "image"
ATTR_USER: Final = "user"
# iscsi
ATTR_PORTALS: Final = "portals"  # comma-separated, primary first
ATTR_IQNS: Final = "iqns"  # comma-separated, aligned with portals
ATTR_LUNS: Final = "luns"  # comma-separated ints, aligned with portals
ATTR_INITIATOR: Final = "initiatorName"
ATTR_ISCSI_INTERFACE: Final = "iscsiInterface"
ATTR_CHAP_SESSION: Final = "chapAuthSession"
ATTR_CHAP_DISCOVERY: Final = "chapAuthDiscovery"
ATTR_WWID: Final = "wwid"

# Secret keys (in-tree names)
SECRET_CEPHX_KEY: Final = "key"  # noqa: S105 - key names, not secrets
SECRET_SESSION_USER: Final = "node.session.auth.username"  # noqa: S105
SECRET_SESSION_PASSWORD: Final = "node.session.auth.password"  # noqa: S105
SECRET_DISCOVERY_USER: Final = "discovery.sendtargets.auth.username"  # noqa: S105
SECRET_DISCOVERY_PASSWORD: Final = "discovery.sendtargets.auth.password"  # noqa: S105

CONTENT_SOURCES: Final = frozenset({"empty", "snapshot", "volume", "adopted"})


@dataclass(frozen=True, slots=True, kw_only=True)
class RbdTarget:
    """Where an RBD image lives and who may map it."""

    monitors: tuple[str, ...]
    pool: str
    image: str
    rados_namespace: str = ""
    user: str = "admin"
    content_source: str = "empty"
    grow_fs: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class IscsiPath:
    """One portal/IQN/LUN path to an iSCSI LUN."""

    portal: str
    iqn: str
    lun: int


@dataclass(frozen=True, slots=True, kw_only=True)
class IscsiTarget:
    """An iSCSI LUN reachable over one or more paths (several → multipath)."""

    paths: tuple[IscsiPath, ...]
    initiator_name: str = ""
    iscsi_interface: str = "default"
    chap_session: bool = False
    chap_discovery: bool = False
    wwid: str = ""
    content_source: str = "empty"
    grow_fs: bool = False


Target = RbdTarget | IscsiTarget


def encode(target: Target) -> dict[str, str]:
    """Target → ``volumeAttributes``."""
    common = {ATTR_CONTENT_SOURCE: target.content_source, ATTR_GROW_FS: _bool(target.grow_fs)}
    if isinstance(target, RbdTarget):
        attrs = {
            ATTR_TYPE: "rbd",
            ATTR_MONITORS: ",".join(target.monitors),
            ATTR_POOL: target.pool,
            ATTR_IMAGE: target.image,
            ATTR_USER: target.user,
        }
        if target.rados_namespace:
            attrs[ATTR_RADOS_NAMESPACE] = target.rados_namespace
        return attrs | common
    attrs = {
        ATTR_TYPE: "iscsi",
        ATTR_PORTALS: ",".join(p.portal for p in target.paths),
        ATTR_IQNS: ",".join(p.iqn for p in target.paths),
        ATTR_LUNS: ",".join(str(p.lun) for p in target.paths),
        ATTR_ISCSI_INTERFACE: target.iscsi_interface,
        ATTR_CHAP_SESSION: _bool(target.chap_session),
        ATTR_CHAP_DISCOVERY: _bool(target.chap_discovery),
    }
    if target.initiator_name:
        attrs[ATTR_INITIATOR] = target.initiator_name
    if target.wwid:
        attrs[ATTR_WWID] = target.wwid
    return attrs | common


def decode(attrs: Mapping[str, str]) -> Target:
    """``volumeAttributes`` → Target; malformed input raises InvalidInput naming the key."""
    kind = _req(attrs, ATTR_TYPE)
    content_source = attrs.get(ATTR_CONTENT_SOURCE, "empty")
    if content_source not in CONTENT_SOURCES:
        raise InvalidInput(ATTR_CONTENT_SOURCE, f"must be one of {sorted(CONTENT_SOURCES)}")
    grow_fs = _parse_bool(attrs, ATTR_GROW_FS)
    if kind == "rbd":
        monitors = tuple(m for m in _req(attrs, ATTR_MONITORS).split(",") if m)
        if not monitors:
            raise InvalidInput(ATTR_MONITORS, "no monitors")
        return RbdTarget(
            monitors=monitors,
            pool=_req(attrs, ATTR_POOL),
            image=_req(attrs, ATTR_IMAGE),
            rados_namespace=attrs.get(ATTR_RADOS_NAMESPACE, ""),
            user=attrs.get(ATTR_USER, "admin") or "admin",
            content_source=content_source,
            grow_fs=grow_fs,
        )
    if kind == "iscsi":
        portals = _req(attrs, ATTR_PORTALS).split(",")
        iqns = _req(attrs, ATTR_IQNS).split(",")
        luns_raw = _req(attrs, ATTR_LUNS).split(",")
        if not (len(portals) == len(iqns) == len(luns_raw)):
            raise InvalidInput(ATTR_PORTALS, "portals, iqns and luns must have the same length")
        try:
            luns = [int(x) for x in luns_raw]
        except ValueError:
            raise InvalidInput(ATTR_LUNS, "must be comma-separated integers") from None
        if any(not p or not q for p, q in zip(portals, iqns, strict=True)) or any(n < 0 for n in luns):
            raise InvalidInput(ATTR_PORTALS, "empty portal/iqn or negative lun")
        return IscsiTarget(
            paths=tuple(
                IscsiPath(portal=p, iqn=q, lun=n) for p, q, n in zip(portals, iqns, luns, strict=True)
            ),
            initiator_name=attrs.get(ATTR_INITIATOR, ""),
            iscsi_interface=attrs.get(ATTR_ISCSI_INTERFACE, "default") or "default",
            chap_session=_parse_bool(attrs, ATTR_CHAP_SESSION),
            chap_discovery=_parse_bool(attrs, ATTR_CHAP_DISCOVERY),
            wwid=attrs.get(ATTR_WWID, ""),
            content_source=content_source,
            grow_fs=grow_fs,
        )
    raise InvalidInput(ATTR_TYPE, f"unknown volume type {kind!r} (expected rbd or iscsi)")


def _bool(value: bool) -> str:
    return "true" if value else "false"


def _parse_bool(attrs: Mapping[str, str], key: str) -> bool:
    raw = attrs.get(key, "false")
    if raw not in ("true", "false"):
        raise InvalidInput(key, "must be 'true' or 'false'")
    return raw == "true"


def _req(attrs: Mapping[str, str], key: str) -> str:
    value = attrs.get(key)
    if not isinstance(value, str) or not value:
        raise InvalidInput(key, "missing")
    return value
