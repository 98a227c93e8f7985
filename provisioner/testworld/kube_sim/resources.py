"""The resource types the simulator serves, and the discovery documents built from them.

One table drives URL routing, scope (namespaced or cluster), which kinds have a ``status`` subresource,
which accept strategic-merge patches (built-in kinds only), what DELETE returns, and the discovery
answers ``kubectl`` needs. Adding a kind is one row here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

_VERBS = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]


@dataclass(frozen=True, slots=True, kw_only=True)
class ResourceType:
    """One served resource: where it lives and how the server treats it."""

    group: str  # "" for core
    version: str
    plural: str
    kind: str
    namespaced: bool
    status_subresource: bool = False
    builtin: bool = True  # False: custom resource (no strategic merge patch)
    returns_deleted_object: bool = False  # DELETE answers the object instead of a Status
    singular: str = ""
    short_names: tuple[str, ...] = ()

    @property
    def key(self) -> str:
        """Stable identifier, e.g. ``core/persistentvolumeclaims`` or ``storage.k8s.io/storageclasses``."""
        return f"{self.group or 'core'}/{self.plural}"

    @property
    def api_version(self) -> str:
        """``apiVersion`` of objects of this kind."""
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def group_version(self) -> tuple[str, str]:
        """(group, version) pair used for routing."""
        return (self.group, self.version)


def _rt(group: str, version: str, plural: str, kind: str, namespaced: bool, **kw: Any) -> ResourceType:
    return ResourceType(
        group=group,
        version=version,
        plural=plural,
        kind=kind,
        namespaced=namespaced,
        singular=kind.lower(),
        **kw,
    )


SNAPSHOT_GROUP = "snapshot.storage.k8s.io"

RESOURCES: tuple[ResourceType, ...] = (
    _rt("", "v1", "namespaces", "Namespace", False, status_subresource=True, short_names=("ns",)),
    _rt("", "v1", "nodes", "Node", False, status_subresource=True, short_names=("no",)),
    _rt(
        "",
        "v1",
        "persistentvolumeclaims",
        "PersistentVolumeClaim",
        True,
        status_subresource=True,
        returns_deleted_object=True,
        short_names=("pvc",),
    ),
    _rt(
        "",
        "v1",
        "persistentvolumes",
        "PersistentVolume",
        False,
        status_subresource=True,
        returns_deleted_object=True,
        short_names=("pv",),
    ),
    _rt("", "v1", "secrets", "Secret", True),
    _rt("", "v1", "configmaps", "ConfigMap", True, short_names=("cm",)),
    _rt("", "v1", "events", "Event", True, short_names=("ev",)),
    _rt(
        "",
        "v1",
        "pods",
        "Pod",
        True,
        status_subresource=True,
        returns_deleted_object=True,
        short_names=("po",),
    ),
    _rt(
        "storage.k8s.io",
        "v1",
        "storageclasses",
        "StorageClass",
        False,
        returns_deleted_object=True,
        short_names=("sc",),
    ),
    _rt(
        "storage.k8s.io",
        "v1",
        "volumeattachments",
        "VolumeAttachment",
        False,
        status_subresource=True,
        returns_deleted_object=True,
    ),
    _rt("storage.k8s.io", "v1", "csidrivers", "CSIDriver", False, returns_deleted_object=True),
    _rt("storage.k8s.io", "v1", "csinodes", "CSINode", False, returns_deleted_object=True),
    _rt("coordination.k8s.io", "v1", "leases", "Lease", True),
    _rt("events.k8s.io", "v1", "events", "Event", True, short_names=("ev",)),
    _rt(
        SNAPSHOT_GROUP,
        "v1",
        "volumesnapshots",
        "VolumeSnapshot",
        True,
        status_subresource=True,
        builtin=False,
        returns_deleted_object=True,
        short_names=("vs",),
    ),
    _rt(
        SNAPSHOT_GROUP,
        "v1",
        "volumesnapshotcontents",
        "VolumeSnapshotContent",
        False,
        status_subresource=True,
        builtin=False,
        returns_deleted_object=True,
        short_names=("vsc", "vscs"),
    ),
    _rt(
        SNAPSHOT_GROUP,
        "v1",
        "volumesnapshotclasses",
        "VolumeSnapshotClass",
        False,
        builtin=False,
        returns_deleted_object=True,
        short_names=("vsclass", "vsclasses"),
    ),
)

BY_ROUTE: dict[tuple[str, str, str], ResourceType] = {(r.group, r.version, r.plural): r for r in RESOURCES}
BY_KEY: dict[str, ResourceType] = {r.key: r for r in RESOURCES}


def by_plural(plural: str, group: str = "") -> ResourceType:
    """The resource type with this plural in ``group`` (core when empty)."""
    for r in RESOURCES:
        if r.plural == plural and r.group == group:
            return r
    raise KeyError(f"{group}/{plural}")


# --- discovery ----------------------------------------------------------------------------------------

SERVER_VERSION = {
    "major": "1",
    "minor": "37",
    "gitVersion": "v1.37.0-netvol-sim",
    "gitCommit": "0000000000000000000000000000000000000000",
    "gitTreeState": "clean",
    "buildDate": "2026-01-01T00:00:00Z",
    "goVersion": "go1.25",
    "compiler": "gc",
    "platform": "linux/amd64",
}


def group_versions() -> list[tuple[str, str]]:
    """Every non-core (group, version) served, in a stable order."""
    seen: list[tuple[str, str]] = []
    for r in RESOURCES:
        if r.group and r.group_version not in seen:
            seen.append(r.group_version)
    return seen


def api_versions() -> dict[str, Any]:
    """``GET /api``."""
    return {
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}],
    }


def _group_doc(group: str, version: str) -> dict[str, Any]:
    gv = {"groupVersion": f"{group}/{version}", "version": version}
    return {"name": group, "versions": [gv], "preferredVersion": gv}


def api_group_list() -> dict[str, Any]:
    """``GET /apis``."""
    return {
        "kind": "APIGroupList",
        "apiVersion": "v1",
        "groups": [_group_doc(g, v) for g, v in group_versions()],
    }


def api_group(group: str) -> dict[str, Any] | None:
    """``GET /apis/<group>``, or None when the group is not served."""
    for g, v in group_versions():
        if g == group:
            return {"kind": "APIGroup", "apiVersion": "v1", **_group_doc(g, v)}
    return None


def api_resource_list(group: str, version: str) -> dict[str, Any] | None:
    """``GET /api/v1`` or ``GET /apis/<group>/<version>``, or None when not served."""
    resources: list[dict[str, Any]] = []
    for r in RESOURCES:
        if r.group_version != (group, version):
            continue
        entry: dict[str, Any] = {
            "name": r.plural,
            "singularName": r.singular,
            "namespaced": r.namespaced,
            "kind": r.kind,
            "verbs": list(_VERBS),
        }
        if r.short_names:
            entry["shortNames"] = list(r.short_names)
        resources.append(entry)
        if r.status_subresource:
            resources.append(
                {
                    "name": f"{r.plural}/status",
                    "singularName": "",
                    "namespaced": r.namespaced,
                    "kind": r.kind,
                    "verbs": ["get", "patch", "update"],
                }
            )
    if not resources:
        return None
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": f"{group}/{version}" if group else version,
        "resources": resources,
    }
