"""Cinder ``rbd`` connection info → in-tree ``spec.rbd`` or our CSI target (reference/connection-info.md).

Parsing (``parse_rbd``) is separate from rendering (``intree_source`` / ``csi_target``) so both PV flavours
are built from one validated record. The cephx key is the delicate part: it is never written into the PV;
it comes either from the admin (``cephxSecretName``) or from a ``keyring`` Cinder included, which we parse
and move into a provisioner-owned Secret.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from provisioner import csi_contract
from provisioner.domain import names, node_input
from provisioner.domain.errors import InvalidInput
from provisioner.domain.params import ClassParams
from provisioner.mapping.common import (
    Credentials,
    as_int,
    fname,
    opt_bool,
    opt_list,
    opt_str,
    read_only,
    refuse_encrypted,
    req_str,
)

DEFAULT_USER: Final = "admin"
_HOST: Final = re.compile(r"[A-Za-z0-9._:%-]+")
_NAME_PART: Final = re.compile(r"[^\s/@,]+")
_CEPH_USER: Final = re.compile(r"[A-Za-z0-9][-A-Za-z0-9_.]*")
_CEPHX_KEY: Final = re.compile(r"[A-Za-z0-9+/]+={0,2}")
_SECTION: Final = re.compile(r"\s*\[\s*(?P<name>[^\]]*?)\s*\]\s*")
_KEY_LINE: Final = re.compile(r"\s*key\s*=\s*(?P<key>\S*)\s*")


@dataclass(frozen=True, slots=True, kw_only=True)
class RbdSource:
    """A validated rbd export. ``keyring_key`` is secret (kept out of ``repr``)."""

    monitors: tuple[str, ...]
    pool: str
    rados_namespace: str
    image: str
    auth_enabled: bool
    user: str
    keyring_key: str | None = field(default=None, repr=False)
    read_only: bool = False


def parse_rbd(data: Mapping[str, Any]) -> RbdSource:
    """Validate rbd connection data; ``InvalidInput`` names the offending ``data.*`` field."""
    refuse_encrypted(data)
    pool, namespace, image = _split_name(req_str(data, "name"))
    auth_enabled = opt_bool(data, "auth_enabled")
    user = _user(opt_str(data, "auth_username")) or DEFAULT_USER
    keyring = opt_str(data, "keyring")
    return RbdSource(
        monitors=_monitors(data),
        pool=pool,
        rados_namespace=namespace,
        image=image,
        auth_enabled=auth_enabled,
        user=user,
        keyring_key=extract_cephx_key(keyring, user=user) if keyring else None,
        read_only=read_only(data),
    )


def _split_name(name: str) -> tuple[str, str, str]:
    parts = name.split("/")
    if len(parts) not in (2, 3) or not all(_NAME_PART.fullmatch(p) for p in parts):
        raise InvalidInput(fname("name"), "must be 'pool/image' or 'pool/namespace/image'")
    pool, namespace, image = (parts[0], "", parts[1]) if len(parts) == 2 else tuple(parts)
    # the node agent's grammar (the same values reach ``rbd device map`` argv there)
    node_input.pool(pool, field=f"{fname('name')} (pool)")
    node_input.rados_namespace(namespace, field=f"{fname('name')} (namespace)")
    node_input.image(image, field=f"{fname('name')} (image)")
    return pool, namespace, image


def _user(raw: str | None) -> str | None:
    if raw is None:
        return None
    user = raw.removeprefix("client.")
    if not _CEPH_USER.fullmatch(user):
        raise InvalidInput(fname("auth_username"), "is not a valid Ceph user id")
    return node_input.cephx_user(user, field=fname("auth_username"))


def _monitors(data: Mapping[str, Any]) -> tuple[str, ...]:
    hosts = opt_list(data, "hosts")
    ports = opt_list(data, "ports")
    if hosts is None:
        raise InvalidInput(fname("hosts"), "no monitor hosts")
    if ports is None or len(ports) != len(hosts):
        raise InvalidInput(fname("ports"), "must list one port per entry in data.hosts")
    monitors = []
    for index, (host, port) in enumerate(zip(hosts, ports, strict=True)):
        if not isinstance(host, str):
            raise InvalidInput(f"{fname('hosts')}[{index}]", "must be a string")
        bare = host[1:-1] if host.startswith("[") and host.endswith("]") else host
        if not _HOST.fullmatch(bare) or bare.count(":") == 1:
            raise InvalidInput(f"{fname('hosts')}[{index}]", "is not a host name or IP address")
        number = as_int(port, f"{fname('ports')}[{index}]", low=1, high=65535)
        monitor = f"[{bare}]:{number}" if ":" in bare else f"{bare}:{number}"
        monitors.append(node_input.monitor(monitor, field=f"{fname('hosts')}[{index}]"))
    return node_input.monitors(monitors, field=fname("hosts"))


def extract_cephx_key(keyring: str, *, user: str) -> str:
    """The cephx key for ``client.<user>`` from a keyring file's text (or a bare key).

    Accepts the INI form Ceph writes (``[client.cinder]`` / ``key = AQ…==``). With several sections the one
    for ``user`` wins; a lone key is taken whatever its section. Errors never quote the keyring.
    """
    keys: dict[str, str] = {}
    section = ""
    for line in keyring.splitlines():
        if line.strip().startswith(("#", ";")):
            continue
        if heading := _SECTION.fullmatch(line):
            section = heading["name"]
        elif found := _KEY_LINE.fullmatch(line):
            keys[section] = found["key"]
    if not keys and _CEPHX_KEY.fullmatch(keyring.strip()):
        keys[""] = keyring.strip()
    key = keys.get(f"client.{user}")
    if key is None and len(keys) == 1:
        key = next(iter(keys.values()))
    if key is None:
        problem = "has no 'key = …' line" if not keys else f"has several keys, none for client.{user}"
        raise InvalidInput(fname("keyring"), problem)
    if not _CEPHX_KEY.fullmatch(key):
        raise InvalidInput(fname("keyring"), "the cephx key is not base64")
    return key


def credentials(source: RbdSource, params: ClassParams) -> Credentials | None:
    """Where the cephx key comes from, in order of precedence.

    1. ``cephxSecretName`` in the class: the admin's Secret (explicit configuration wins; the keyring, if
       any, is then ignored and never copied).
    2. a ``keyring`` in the connection info: copied into a provisioner-owned Secret.
    3. cephx enabled but no key anywhere: an error naming ``parameters.cephxSecretName``.
    4. cephx disabled: no Secret.
    """
    if params.cephx_secret_name is not None:
        return Credentials(secret_type=names.SECRET_TYPE_RBD, existing_name=params.cephx_secret_name)
    if source.keyring_key is not None:
        return Credentials(
            secret_type=names.SECRET_TYPE_RBD, data={csi_contract.SECRET_CEPHX_KEY: source.keyring_key}
        )
    if source.auth_enabled:
        raise InvalidInput(
            "parameters.cephxSecretName",
            "cephx is enabled but Cinder sent no keyring: name a Secret holding the cephx 'key'",
        )
    return None


def effective_user(source: RbdSource, params: ClassParams) -> str:
    """``cephxUser`` (the owner of the admin's key) overrides the user Cinder reported."""
    if params.cephx_secret_name is not None and params.cephx_user is not None:
        return node_input.cephx_user(params.cephx_user, field="parameters.cephxUser")
    return source.user


def intree_source(
    source: RbdSource,
    *,
    user: str,
    fs_type: str | None,
    secret_ref: Mapping[str, str] | None,
) -> dict[str, Any]:
    """The in-tree ``spec.rbd`` (removed from kubelet in 1.31; the API field remains)."""
    if source.rados_namespace:
        raise InvalidInput(
            fname("name"), "in-tree rbd cannot address a rados namespace; use volumeSource csi"
        )
    rbd: dict[str, Any] = {
        "monitors": list(source.monitors),
        "pool": source.pool,
        "image": source.image,
        "user": user,
    }
    if fs_type:
        rbd["fsType"] = fs_type
    if secret_ref is not None:
        rbd["secretRef"] = dict(secret_ref)
    if source.read_only:
        rbd["readOnly"] = True
    return rbd


def csi_target(source: RbdSource, *, user: str, content_source: str, grow_fs: bool) -> csi_contract.RbdTarget:
    """The node agent's view of the image (non-secret; the key travels in the stage Secret)."""
    return csi_contract.RbdTarget(
        monitors=source.monitors,
        pool=source.pool,
        image=source.image,
        rados_namespace=source.rados_namespace,
        user=user,
        content_source=content_source,
        grow_fs=grow_fs,
    )
