"""StorageClass parameters and class-level fields, parsed and validated in one place.

A typo in a StorageClass (``fstype`` for ``fsType``) must fail loudly on the first claim, naming the field,
instead of silently provisioning something else. So every key is known here, unknown keys are an error,
every value is checked, and the rest of the provisioner only ever sees the typed ``ClassParams`` /
``ClassFields``. ``docs/storageclass-parameters.md`` lists the same keys; keep the two in step.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

from provisioner.domain.errors import InvalidInput

VolumeSourceKind = Literal["in-tree", "csi"]
ReclaimPolicy = Literal["Delete", "Retain"]
BindingMode = Literal["Immediate", "WaitForFirstConsumer"]

FS_TYPES: Final = ("ext4", "ext3", "xfs", "btrfs")
DEFAULT_FS_TYPE: Final = "ext4"

_DNS1123_LABEL: Final = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS1123_SUBDOMAIN: Final = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_LABEL_NAME: Final = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
_CEPH_USER: Final = re.compile(r"^[A-Za-z0-9][-A-Za-z0-9_.]*$")


@dataclass(frozen=True, slots=True, kw_only=True)
class ClassParams:
    """The validated ``parameters`` of one StorageClass."""

    volume_type: str | None = None  # "type": Cinder volume type
    availability_zone: str | None = None  # "availability": Cinder AZ to create in
    fs_type: str = DEFAULT_FS_TYPE  # "fsType"
    cloud: str | None = None  # "cloud": named cloud from the provisioner config (None = default)
    volume_source: VolumeSourceKind = "csi"  # "volumeSource": which PV source to write
    secret_namespace: str  # "secretNamespace": provisioner-owned and admin-supplied Secrets live here
    cephx_secret_name: str | None = None  # "cephxSecretName": admin Secret with the cephx `key`
    cephx_user: str | None = None  # "cephxUser": Ceph user the key in cephxSecretName belongs to
    allow_raw_snapshot_restore: bool = False  # "allowRawSnapshotRestore"
    #: "restoreFromNamespaces": other namespaces whose snapshots/backups (still tagged by this cluster)
    #: claims of this class may restore
    restore_from_namespaces: tuple[str, ...] = ()
    allow_adoption: bool = False  # "allowAdoption"
    cascade_delete: bool = False  # "cascadeDelete": delete the volume's snapshots with it
    multiattach: bool = False  # "multiattach": the volume type is multiattach (RWX for Block)
    zone_topology_key: str | None = None  # "zoneTopologyKey": node label carrying the AZ


@dataclass(frozen=True, slots=True, kw_only=True)
class ClassFields:
    """The StorageClass fields (outside ``parameters``) that shape the PV."""

    name: str
    provisioner: str
    reclaim_policy: ReclaimPolicy = "Delete"
    mount_options: tuple[str, ...] = ()
    volume_binding_mode: BindingMode = "Immediate"
    allow_volume_expansion: bool = False


def _string(key: str, value: Any) -> str:
    if not isinstance(value, str):
        raise InvalidInput(f"parameters.{key}", "must be a string (quote it in YAML)")
    return value


def _nonempty(key: str, value: Any) -> str:
    text = _string(key, value).strip()
    if not text:
        raise InvalidInput(f"parameters.{key}", "must not be empty")
    return text


def _boolean(key: str, value: Any) -> bool:
    text = _string(key, value).strip().lower()
    if text not in ("true", "false"):
        raise InvalidInput(f"parameters.{key}", "must be 'true' or 'false'")
    return text == "true"


def _fs_type(key: str, value: Any) -> str:
    text = _string(key, value).strip()
    if text not in FS_TYPES:
        raise InvalidInput(f"parameters.{key}", f"must be one of {', '.join(FS_TYPES)}")
    return text


def _volume_source(key: str, value: Any) -> str:
    text = _string(key, value).strip()
    if text not in ("in-tree", "csi"):
        raise InvalidInput(f"parameters.{key}", "must be 'in-tree' or 'csi'")
    return text


def _namespace(key: str, value: Any) -> str:
    text = _string(key, value)
    if len(text) > 63 or not _DNS1123_LABEL.match(text):
        raise InvalidInput(f"parameters.{key}", "must be a namespace name (DNS-1123 label)")
    return text


def _namespaces(key: str, value: Any) -> tuple[str, ...]:
    """A comma-separated list of namespace names (at most 64, no empties)."""
    items = [part.strip() for part in _string(key, value).split(",")]
    if len(items) > 64:
        raise InvalidInput(f"parameters.{key}", "at most 64 namespaces")
    for item in items:
        if len(item) > 63 or not _DNS1123_LABEL.match(item):
            raise InvalidInput(
                f"parameters.{key}", "must be namespace names (DNS-1123 labels) separated by commas"
            )
    return tuple(dict.fromkeys(items))


def _secret_name(key: str, value: Any) -> str:
    text = _string(key, value)
    if len(text) > 253 or not _DNS1123_SUBDOMAIN.match(text):
        raise InvalidInput(f"parameters.{key}", "must be a Secret name (DNS-1123 subdomain)")
    return text


def _ceph_user(key: str, value: Any) -> str:
    text = _string(key, value)
    if text.startswith("client."):
        text = text[len("client.") :]
    if not _CEPH_USER.match(text):
        raise InvalidInput(f"parameters.{key}", "must be a Ceph user id such as 'cinder' (no 'client.')")
    return text


def _label_key(key: str, value: Any) -> str:
    """A qualified label key: optional DNS-subdomain prefix and '/', then a name of ≤ 63 characters."""
    text = _string(key, value)
    prefix, _, name = text.rpartition("/")
    bad_prefix = bool(prefix) and (len(prefix) > 253 or not _DNS1123_SUBDOMAIN.match(prefix))
    if bad_prefix or not name or len(name) > 63 or not _LABEL_NAME.match(name):
        raise InvalidInput(
            f"parameters.{key}", "must be a node label key such as topology.kubernetes.io/zone"
        )
    return text


#: parameter key → (ClassParams field, validator). The one list of accepted keys.
_PARAMETERS: Final[Mapping[str, tuple[str, Callable[[str, Any], object]]]] = {
    "type": ("volume_type", _nonempty),
    "availability": ("availability_zone", _nonempty),
    "fsType": ("fs_type", _fs_type),
    "cloud": ("cloud", _nonempty),
    "volumeSource": ("volume_source", _volume_source),
    "secretNamespace": ("secret_namespace", _namespace),
    "cephxSecretName": ("cephx_secret_name", _secret_name),
    "cephxUser": ("cephx_user", _ceph_user),
    "allowRawSnapshotRestore": ("allow_raw_snapshot_restore", _boolean),
    "restoreFromNamespaces": ("restore_from_namespaces", _namespaces),
    "allowAdoption": ("allow_adoption", _boolean),
    "cascadeDelete": ("cascade_delete", _boolean),
    "multiattach": ("multiattach", _boolean),
    "zoneTopologyKey": ("zone_topology_key", _label_key),
}

PARAMETER_KEYS: Final = tuple(_PARAMETERS)


def parse_class_parameters(
    parameters: Mapping[str, str] | None, *, default_secret_namespace: str
) -> ClassParams:
    """Validate a StorageClass's ``parameters``; raise ``InvalidInput`` naming ``parameters.<key>``."""
    if parameters is None:
        parameters = {}
    if not isinstance(parameters, Mapping):
        raise InvalidInput("parameters", "must be a map of strings")
    values: dict[str, Any] = {"secret_namespace": _namespace("secretNamespace", default_secret_namespace)}
    for key, raw in parameters.items():
        if not isinstance(key, str) or key not in _PARAMETERS:
            close = difflib.get_close_matches(str(key), PARAMETER_KEYS, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            shown = key if isinstance(key, str) and key.isprintable() else repr(key)[:80]
            raise InvalidInput(
                f"parameters.{shown}", f"unknown parameter{hint}; known: {', '.join(PARAMETER_KEYS)}"
            )
        field_name, validate = _PARAMETERS[key]
        values[field_name] = validate(key, raw)
    params = ClassParams(**values)
    if params.cephx_user is not None and params.cephx_secret_name is None:
        raise InvalidInput("parameters.cephxUser", "only meaningful together with cephxSecretName")
    return params


def parse_class_fields(storage_class: Mapping[str, Any]) -> ClassFields:
    """Read the class-level fields the PV copies; raise ``InvalidInput`` naming the field.

    ``reclaimPolicy`` defaults to Delete (the API default for a *class*); the PV API default is Retain, so
    the PV builder copies the value explicitly.
    """
    if not isinstance(storage_class, Mapping):
        raise InvalidInput("storageClass", "must be an object")
    metadata = storage_class.get("metadata")
    name = metadata.get("name") if isinstance(metadata, Mapping) else None
    if not isinstance(name, str) or not name:
        raise InvalidInput("metadata.name", "the StorageClass has no name")
    provisioner = storage_class.get("provisioner")
    if not isinstance(provisioner, str) or not provisioner:
        raise InvalidInput("provisioner", "the StorageClass names no provisioner")
    reclaim = storage_class.get("reclaimPolicy", "Delete")
    if reclaim is None:
        reclaim = "Delete"
    if reclaim not in ("Delete", "Retain"):
        raise InvalidInput("reclaimPolicy", "must be Delete or Retain for dynamically provisioned volumes")
    mount_options = storage_class.get("mountOptions") or []
    if not isinstance(mount_options, list) or not all(isinstance(o, str) and o for o in mount_options):
        raise InvalidInput("mountOptions", "must be a list of non-empty strings")
    binding = storage_class.get("volumeBindingMode", "Immediate")
    if binding is None:
        binding = "Immediate"
    if binding not in ("Immediate", "WaitForFirstConsumer"):
        raise InvalidInput("volumeBindingMode", "must be Immediate or WaitForFirstConsumer")
    expansion = storage_class.get("allowVolumeExpansion", False)
    if expansion is None:
        expansion = False
    if not isinstance(expansion, bool):
        raise InvalidInput("allowVolumeExpansion", "must be a boolean")
    return ClassFields(
        name=name,
        provisioner=provisioner,
        reclaim_policy=reclaim,
        mount_options=tuple(mount_options),
        volume_binding_mode=binding,
        allow_volume_expansion=expansion,
    )
