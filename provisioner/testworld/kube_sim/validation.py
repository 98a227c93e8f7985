"""Defaulting and validation for the kinds the controller writes, as far as it can notice.

The real API server rejects bad names and malformed PVs/PVCs with 422, fills defaults (reclaim policy,
volume mode, binding mode) and forbids changing immutable fields (PVC spec, PV source, StorageClass
parameters). A controller that relies on a server default or mutates an immutable field must fail here
the way it would fail in a cluster.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from fractions import Fraction
from typing import Any

from provisioner.domain.errors import InvalidInput
from provisioner.domain.quantity import parse_quantity
from provisioner.testworld.kube_sim.resources import ResourceType
from provisioner.testworld.kube_sim.status import forbidden, invalid

Obj = dict[str, Any]

_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_QUANTITY = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+|Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE])?$")
_ACCESS_MODES = frozenset({"ReadWriteOnce", "ReadOnlyMany", "ReadWriteMany", "ReadWriteOncePod"})
_PV_SOURCES = frozenset(
    {
        "awsElasticBlockStore",
        "azureDisk",
        "azureFile",
        "cephfs",
        "cinder",
        "csi",
        "fc",
        "flexVolume",
        "flocker",
        "gcePersistentDisk",
        "glusterfs",
        "hostPath",
        "iscsi",
        "local",
        "nfs",
        "photonPersistentDisk",
        "portworxVolume",
        "quobyte",
        "rbd",
        "scaleIO",
        "storageos",
        "vsphereVolume",
    }
)
_DNS_LABEL_KINDS = frozenset({"core/namespaces"})

SUBDOMAIN_MESSAGE = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', "
    "and must start and end with an alphanumeric character"
)


def validate_name(rt: ResourceType, name: str) -> None:
    """422 unless ``name`` is a valid object name for ``rt``."""
    if not name:
        raise invalid(rt, name, [("metadata.name", "Required value: name or generateName is required")])
    if rt.key in _DNS_LABEL_KINDS:
        if len(name) > 63 or not _LABEL.match(name):
            raise invalid(
                rt, name, [("metadata.name", f'Invalid value: "{name}": a lowercase RFC 1123 label')]
            )
    elif len(name) > 253 or not _SUBDOMAIN.match(name):
        raise invalid(rt, name, [("metadata.name", f'Invalid value: "{name}": {SUBDOMAIN_MESSAGE}')])


def apply_defaults(rt: ResourceType, obj: Obj) -> None:
    """Fill the server-side defaults the controller may observe (mutates ``obj``)."""
    spec = obj.get("spec")
    if rt.key == "core/persistentvolumes" and isinstance(spec, dict):
        spec.setdefault("persistentVolumeReclaimPolicy", "Retain")
        spec.setdefault("volumeMode", "Filesystem")
    elif rt.key == "core/persistentvolumeclaims" and isinstance(spec, dict):
        spec.setdefault("volumeMode", "Filesystem")
    elif rt.key == "storage.k8s.io/storageclasses":
        obj.setdefault("reclaimPolicy", "Delete")
        obj.setdefault("volumeBindingMode", "Immediate")
    elif rt.key == "core/secrets":
        obj.setdefault("type", "Opaque")


def _quantity(value: Any) -> bool:
    return isinstance(value, (int, float)) or (isinstance(value, str) and bool(_QUANTITY.match(value)))


def _check_access_modes(spec: Obj, causes: list[tuple[str, str]]) -> None:
    modes = spec.get("accessModes")
    if not modes:
        causes.append(("spec.accessModes", "Required value"))
        return
    for mode in modes:
        if mode not in _ACCESS_MODES:
            causes.append(("spec.accessModes", f'Unsupported value: "{mode}"'))


def validate_object(rt: ResourceType, obj: Obj) -> None:
    """422 for malformed bodies of the kinds the controller writes."""
    name = obj.get("metadata", {}).get("name", "")
    causes: list[tuple[str, str]] = []
    spec = obj.get("spec") if isinstance(obj.get("spec"), dict) else {}
    assert isinstance(spec, dict)
    if rt.key == "core/persistentvolumeclaims":
        _check_access_modes(spec, causes)
        storage = (spec.get("resources") or {}).get("requests", {}).get("storage")
        if storage is None:
            causes.append(("spec.resources[storage]", "Required value"))
        elif not _quantity(storage):
            causes.append(
                (
                    "spec.resources[storage]",
                    f'Invalid value: "{storage}": quantities must match the regular expression',
                )
            )
    elif rt.key == "core/persistentvolumes":
        _check_access_modes(spec, causes)
        storage = (spec.get("capacity") or {}).get("storage")
        if storage is None:
            causes.append(("spec.capacity", "Required value"))
        elif not _quantity(storage):
            causes.append(("spec.capacity[storage]", f'Invalid value: "{storage}"'))
        sources = [k for k in spec if k in _PV_SOURCES]
        if len(sources) != 1:
            causes.append(("spec", "Required value: must specify exactly 1 volume type"))
        policy = spec.get("persistentVolumeReclaimPolicy")
        if policy not in ("Retain", "Delete", "Recycle"):
            causes.append(("spec.persistentVolumeReclaimPolicy", f'Unsupported value: "{policy}"'))
    elif rt.key == "storage.k8s.io/storageclasses":
        if not obj.get("provisioner"):
            causes.append(("provisioner", "Required value"))
        if obj.get("volumeBindingMode") not in ("Immediate", "WaitForFirstConsumer"):
            causes.append(("volumeBindingMode", f'Unsupported value: "{obj.get("volumeBindingMode")}"'))
    elif rt.key == "core/events" and not obj.get("involvedObject"):
        causes.append(("involvedObject", "Required value"))
    if causes:
        raise invalid(rt, name, causes)


def _without(d: Any, *keys: str) -> Any:
    return {k: v for k, v in d.items() if k not in keys} if isinstance(d, dict) else d


def validate_update(rt: ResourceType, old: Obj, new: Obj) -> None:
    """422 when an update changes an immutable field."""
    name = new["metadata"]["name"]
    old_spec, new_spec = old.get("spec") or {}, new.get("spec") or {}
    if rt.key == "core/persistentvolumeclaims":
        # ValidatePersistentVolumeClaimUpdate: only a *bound* claim's resources.requests may change (and
        # then not below status.capacity: RecoverVolumeExpansionFailure lets a request shrink back to
        # just above it, never to it); resources.limits never.
        ignore = ["volumeAttributesClassName"]
        if not old_spec.get("volumeName"):  # volumeName may be set once
            ignore.append("volumeName")
        bound = (old.get("status") or {}).get("phase") == "Bound"
        old_res, new_res = old_spec.get("resources") or {}, new_spec.get("resources") or {}
        if bound and old_res.get("limits") == new_res.get("limits"):
            ignore.append("resources")
            _check_request_not_below_capacity(rt, old, new)
        if _without(old_spec, *ignore) != _without(new_spec, *ignore):
            raise invalid(
                rt,
                name,
                [
                    (
                        "spec",
                        "Forbidden: spec is immutable after creation except "
                        "resources.requests and volumeAttributesClassName for bound claims",
                    )
                ],
            )
    elif rt.key == "core/persistentvolumes":
        for key in _PV_SOURCES:
            if old_spec.get(key) != new_spec.get(key):
                raise invalid(
                    rt,
                    name,
                    [
                        (
                            "spec.persistentvolumesource",
                            "Forbidden: spec.persistentvolumesource is immutable after creation",
                        )
                    ],
                )
    elif rt.key == "storage.k8s.io/storageclasses":
        for key in ("parameters", "provisioner", "reclaimPolicy", "volumeBindingMode"):
            if old.get(key) != new.get(key):
                raise invalid(rt, name, [(key, f"Forbidden: updates to {key} are forbidden.")])
    if rt.key in ("core/persistentvolumeclaims", "core/persistentvolumes"):
        validate_object(rt, new)


def _storage(obj: Obj, *path: str) -> Fraction | None:
    node: Any = obj
    for key in path:
        node = node.get(key) if isinstance(node, dict) else None
    if node is None:
        return None
    try:
        return parse_quantity(str(node))
    except InvalidInput:
        return None


def _check_request_not_below_capacity(rt: ResourceType, old: Obj, new: Obj) -> None:
    old_size = _storage(old, "spec", "resources", "requests", "storage")
    new_size = _storage(new, "spec", "resources", "requests", "storage")
    capacity = _storage(old, "status", "capacity", "storage")
    if old_size is None or new_size is None or new_size >= old_size or capacity is None:
        return
    if new_size <= capacity:
        raise invalid(
            rt,
            new["metadata"]["name"],
            [("spec.resources.requests.storage", "Forbidden: field can not be less than status.capacity")],
        )


RESIZE_FORBIDDEN = (
    "only dynamically provisioned pvc can be resized and the storageclass that provisions the pvc must "
    "support resize"
)


def admit_resize(find_class: Callable[[str], Obj | None]) -> Callable[[ResourceType, Obj, Obj, str], None]:
    """The PersistentVolumeClaimResize admission plugin: growing a claim needs a class that allows it."""

    def admit(rt: ResourceType, old: Obj, new: Obj, subresource: str) -> None:
        if rt.key != "core/persistentvolumeclaims" or subresource:
            return
        old_size = _storage(old, "spec", "resources", "requests", "storage")
        new_size = _storage(new, "spec", "resources", "requests", "storage")
        if old_size is None or new_size is None or new_size <= old_size:
            return
        class_name = (new.get("spec") or {}).get("storageClassName") or ""
        sc = find_class(class_name) if class_name else None
        if sc is None or sc.get("allowVolumeExpansion") is not True:
            raise forbidden(rt, new["metadata"]["name"], RESIZE_FORBIDDEN)

    return admit
