"""Stage-time checks of everything a CSI request or a PV carries, before the agent does anything.

A PV can be written by anyone with PV rights, so the agent does not trust that the provisioner rendered
it: every value that reaches ``rbd`` / ``iscsiadm`` / ``mount`` argv, a node record or a path goes
through ``provisioner.domain.node_input`` (the same grammar the controller's mapping uses) here, and all
of it before the stash is written or a command runs. Refusals are ``InvalidRequest`` (CSI
INVALID_ARGUMENT, CLI exit 2) whose one-line message names the field and never quotes the value.

Paths are checked lexically (absolute, normalised, bounded, under the kubelet directory) and then
against symlinks: the deepest existing ancestor must resolve inside the kubelet directory too.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from attach.errors import InvalidRequest
from provisioner.csi_contract import (
    ATTR_IMAGE,
    ATTR_INITIATOR,
    ATTR_IQNS,
    ATTR_ISCSI_INTERFACE,
    ATTR_LUNS,
    ATTR_MONITORS,
    ATTR_POOL,
    ATTR_PORTALS,
    ATTR_RADOS_NAMESPACE,
    ATTR_USER,
    ATTR_WWID,
    SECRET_CEPHX_KEY,
    SECRET_DISCOVERY_PASSWORD,
    SECRET_DISCOVERY_USER,
    SECRET_SESSION_PASSWORD,
    SECRET_SESSION_USER,
    IscsiTarget,
    RbdTarget,
    Target,
)
from provisioner.domain import node_input
from provisioner.domain.errors import InvalidInput


def _refuse(prefix: str, error: InvalidInput) -> InvalidRequest:
    return InvalidRequest(f"{prefix}{error}")


def volume_id(value: str) -> str:
    """The CSI volume id (bounded, charset-checked: it names stash and lock files)."""
    try:
        return node_input.volume_id(value, field="volume_id")
    except InvalidInput as e:
        raise _refuse("", e) from None


def node_path(value: str, *, field: str, kubelet_dir: Path) -> str:
    """An absolute, normalised path under the kubelet directory, also after resolving symlinks."""
    root = os.path.normpath(str(kubelet_dir))
    try:
        node_input.node_path(value, field=field, root=root)
    except InvalidInput as e:
        raise _refuse("", e) from None
    real_root = os.path.realpath(root)
    existing = value
    while not os.path.lexists(existing) and existing != root:
        existing = os.path.dirname(existing)
    real = os.path.realpath(existing)
    if real != real_root and not real.startswith(real_root.rstrip("/") + "/"):
        raise InvalidRequest(f"{field}: resolves (through a symlink) outside the kubelet directory {root}")
    return value


def target(value: Target) -> None:
    """Every field of the decoded volume context, named by its volumeAttributes key."""
    try:
        if isinstance(value, RbdTarget):
            node_input.monitors(value.monitors, field=ATTR_MONITORS)
            node_input.pool(value.pool, field=ATTR_POOL)
            node_input.rados_namespace(value.rados_namespace, field=ATTR_RADOS_NAMESPACE)
            node_input.image(value.image, field=ATTR_IMAGE)
            node_input.cephx_user(value.user, field=ATTR_USER)
            return
        _iscsi(value)
    except InvalidInput as e:
        raise _refuse("volume context: ", e) from None


def _iscsi(value: IscsiTarget) -> None:
    for i, path in enumerate(value.paths):
        node_input.portal(path.portal, field=f"{ATTR_PORTALS}[{i}]")
        node_input.iscsi_name(path.iqn, field=f"{ATTR_IQNS}[{i}]")
        node_input.lun(path.lun, field=f"{ATTR_LUNS}[{i}]")
    if len(value.paths) > 16:
        raise InvalidInput(ATTR_PORTALS, "must list at most 16 paths")
    if value.initiator_name:
        node_input.iscsi_name(value.initiator_name, field=ATTR_INITIATOR)
    node_input.iscsi_interface(value.iscsi_interface, field=ATTR_ISCSI_INTERFACE)
    node_input.wwid(value.wwid, field=ATTR_WWID)


def secrets(value: Target, given: Mapping[str, str]) -> None:
    """The node stage secret values the target will use (named by key, never quoted)."""
    try:
        if isinstance(value, RbdTarget):
            if given.get(SECRET_CEPHX_KEY):
                node_input.cephx_key(given[SECRET_CEPHX_KEY], field=f"secrets.{SECRET_CEPHX_KEY}")
            return
        pairs = []
        if value.chap_session:
            pairs.append((SECRET_SESSION_USER, SECRET_SESSION_PASSWORD))
        if value.chap_discovery:
            pairs.append((SECRET_DISCOVERY_USER, SECRET_DISCOVERY_PASSWORD))
        for user_key, password_key in pairs:
            if not given.get(user_key) or not given.get(password_key):
                raise InvalidInput(
                    f"secrets.{password_key}", f"CHAP is enabled but {user_key} / {password_key} is missing"
                )
            node_input.chap_user(given[user_key], field=f"secrets.{user_key}")
            node_input.chap_secret(given[password_key], field=f"secrets.{password_key}")
    except InvalidInput as e:
        raise _refuse("node stage secret: ", e) from None


def filesystem(fs_type: str, mount_flags: tuple[str, ...]) -> None:
    """The requested fsType (allow-list) and mount flags (allow-list / strict pattern)."""
    try:
        node_input.fs_type(fs_type, field="fs_type")
        node_input.mount_flags(mount_flags, field="mount_flags")
    except InvalidInput as e:
        raise _refuse("volume_capability.mount.", e) from None
