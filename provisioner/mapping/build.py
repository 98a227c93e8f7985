"""Connection info + StorageClass + PVC → the PersistentVolume (and Secret) the provisioner creates.

Pure: no I/O, no clock, no logging, so the controller and ``cinder-provisioner render`` run exactly the same
code and an admin can see offline what a class would produce. Every refusal is ``InvalidInput`` (or
``UnsupportedConnectionType``) naming the field to fix; nothing else escapes for any input (hypothesis
tests pin that).

The Secret returned carries **no ownerReference**: the PV's uid is only known once the PV exists, so the
controller creates the PV first, then the Secret with an ownerReference to that PV (kind PersistentVolume,
its uid), and the garbage collector removes the Secret with the PV. Secret values are plaintext in
``data`` (base64 as the API serves them); never log a ``MappedObjects.secret``.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from provisioner import csi_contract
from provisioner.domain import names
from provisioner.domain.errors import InvalidInput, UnsupportedConnectionType
from provisioner.domain.model import ConnectionInfo, ExportMode
from provisioner.domain.params import ClassFields, ClassParams, parse_class_fields
from provisioner.domain.quantity import gib_quantity, requested_size_gib
from provisioner.mapping import iscsi as mapping_iscsi
from provisioner.mapping import rbd as mapping_rbd
from provisioner.mapping.common import Credentials

__all__ = [
    "Claim",
    "ContentSource",
    "MappedObjects",
    "ProvisionedVolume",
    "build_objects",
    "parse_claim",
    "requested_content",
    "requested_size_gib",
    "secret_name_for",
]

ContentSource = Literal["empty", "snapshot", "volume", "adopted"]
VolumeMode = Literal["Filesystem", "Block"]

SUPPORTED_TYPES: Final = ("rbd", "iscsi")
ACCESS_MODES: Final = ("ReadWriteOnce", "ReadOnlyMany", "ReadWriteMany", "ReadWriteOncePod")
_DNS1123_SUBDOMAIN: Final = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_SECRET_SUFFIX: Final = "-secret"  # noqa: S105 - a name suffix, not a password


@dataclass(frozen=True, slots=True, kw_only=True)
class ProvisionedVolume:
    """What the controller knows about the Cinder volume it created and exported."""

    volume_id: str
    size_gib: int
    cloud: str
    attachment_id: str | None = None
    export_mode: ExportMode = "attachment"
    initiator_name: str = ""  # the connector's initiator; "" → the node's own
    content_source: ContentSource = "empty"
    grow_fs: bool = False  # the node must grow the filesystem (restore to a larger size)
    availability_zone: str | None = None  # where Cinder placed the volume
    multiattach: bool = False  # Cinder's multiattach flag on the volume


@dataclass(frozen=True, slots=True, kw_only=True)
class MappedObjects:
    """The PV to create and, when we own key material, the Secret (no ownerReference yet)."""

    pv: dict[str, Any]
    secret: dict[str, Any] | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class Claim:
    """The validated parts of a PVC the PV copies."""

    namespace: str
    name: str
    uid: str
    access_modes: tuple[str, ...]
    volume_mode: VolumeMode


def secret_name_for(pv_name: str) -> str:
    """Name of the provisioner-owned Secret of a PV (deterministic, so a retry finds it)."""
    return pv_name + _SECRET_SUFFIX


def requested_content(pvc: Mapping[str, Any]) -> ContentSource:
    """What the claim asked its volume's data to come from ("empty": nothing; then it may be formatted).

    A claim that names a source (``spec.dataSource``/``dataSourceRef``, a restore annotation) never maps
    to "empty", whatever Cinder later reports: a restore that came back blank must fail on the node, not
    be formatted and handed over as new.
    """
    metadata = _as_mapping(pvc.get("metadata"))
    annotations = _as_mapping(metadata.get("annotations"))
    spec = _as_mapping(pvc.get("spec"))
    source = _as_mapping(spec.get("dataSource") or spec.get("dataSourceRef"))
    if source.get("kind") == "PersistentVolumeClaim":
        return "volume"
    if (
        source
        or names.ANN_RESTORE_FROM_SNAPSHOT in annotations
        or names.ANN_RESTORE_FROM_BACKUP in annotations
    ):
        return "snapshot"  # a VolumeSnapshot (snapshot or backup), or any other populated source
    return "empty"


def _as_mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def parse_claim(pvc: Mapping[str, Any], *, params: ClassParams, multiattach: bool) -> Claim:
    """Validate the claim fields the PV needs; callable before touching Cinder.

    Access modes: RWO, ROX, RWOP (csi only); RWX only for ``volumeMode: Block`` on a multiattach volume
    (two nodes writing one filesystem would corrupt it).
    """
    metadata = pvc.get("metadata") if isinstance(pvc, Mapping) else None
    spec = pvc.get("spec") if isinstance(pvc, Mapping) else None
    if not isinstance(metadata, Mapping):
        raise InvalidInput("metadata", "the claim has no metadata")
    if not isinstance(spec, Mapping):
        raise InvalidInput("spec", "the claim has no spec")
    ident = {}
    for key in ("namespace", "name", "uid"):
        value = metadata.get(key)
        if not isinstance(value, str) or not value:
            raise InvalidInput(f"metadata.{key}", "missing from the claim")
        ident[key] = value
    pv_name = names.pv_name_for(ident["uid"])
    if len(pv_name) + len(_SECRET_SUFFIX) > 253 or not _DNS1123_SUBDOMAIN.fullmatch(pv_name):
        raise InvalidInput("metadata.uid", "does not make a valid PV name")
    raw_mode = spec.get("volumeMode") or "Filesystem"
    if raw_mode not in ("Filesystem", "Block"):
        raise InvalidInput("spec.volumeMode", "must be Filesystem or Block")
    volume_mode: VolumeMode = "Block" if raw_mode == "Block" else "Filesystem"
    modes = spec.get("accessModes")
    if not isinstance(modes, list) or not modes:
        raise InvalidInput("spec.accessModes", "must list at least one access mode")
    for mode in modes:
        if mode not in ACCESS_MODES:
            raise InvalidInput("spec.accessModes", f"must be among {', '.join(ACCESS_MODES)}")
    if "ReadWriteMany" in modes and not (volume_mode == "Block" and multiattach):
        raise InvalidInput(
            "spec.accessModes",
            "ReadWriteMany needs volumeMode Block and a multiattach volume type (multiattach: 'true')",
        )
    if "ReadWriteOncePod" in modes and params.volume_source != "csi":
        raise InvalidInput("spec.accessModes", "ReadWriteOncePod needs volumeSource csi")
    return Claim(
        namespace=ident["namespace"],
        name=ident["name"],
        uid=ident["uid"],
        access_modes=tuple(dict.fromkeys(modes)),
        volume_mode=volume_mode,
    )


def build_objects(
    *,
    connection_info: ConnectionInfo,
    storage_class: Mapping[str, Any],
    pvc: Mapping[str, Any],
    params: ClassParams,
    volume: ProvisionedVolume,
    provisioner_name: str,
) -> MappedObjects:
    """The PV (pre-bound to ``pvc``) and the optional provisioner-owned Secret for this export."""
    fields = parse_class_fields(storage_class)
    claim = parse_claim(pvc, params=params, multiattach=volume.multiattach)
    _check_volume(volume, params)
    pv_name = names.pv_name_for(claim.uid)
    fs_type = params.fs_type if claim.volume_mode == "Filesystem" else None
    parsed = _parse(connection_info)
    if isinstance(parsed, mapping_rbd.RbdSource):
        creds = mapping_rbd.credentials(parsed, params)
    else:
        creds = mapping_iscsi.credentials(parsed)

    secret: dict[str, Any] | None = None
    secret_ref: dict[str, str] | None = None
    if creds is not None:
        name = creds.existing_name or secret_name_for(pv_name)
        secret_ref = {"name": name, "namespace": params.secret_namespace}
        if creds.existing_name is None:
            secret = _secret(creds, name=name, namespace=params.secret_namespace, pv_name=pv_name)

    source: dict[str, Any]
    if params.volume_source == "in-tree":
        source = _intree_source(
            parsed, pv_name=pv_name, params=params, volume=volume, fs_type=fs_type, secret_ref=secret_ref
        )
    else:
        source = {
            "csi": _csi_source(parsed, volume=volume, params=params, fs_type=fs_type, secret_ref=secret_ref)
        }

    pv = _pv(
        pv_name=pv_name,
        claim=claim,
        fields=fields,
        params=params,
        volume=volume,
        provisioner_name=provisioner_name,
        source=source,
    )
    return MappedObjects(pv=pv, secret=secret)


def _check_volume(volume: ProvisionedVolume, params: ClassParams) -> None:
    if not isinstance(volume.volume_id, str) or not volume.volume_id.strip():
        raise InvalidInput("volume.volume_id", "missing")
    if isinstance(volume.size_gib, bool) or not isinstance(volume.size_gib, int) or volume.size_gib < 1:
        raise InvalidInput("volume.size_gib", "must be a positive whole number of GiB")
    if volume.export_mode not in ("attachment", "legacy"):
        raise InvalidInput("volume.export_mode", "must be 'attachment' or 'legacy'")
    if (volume.export_mode == "attachment") != bool(volume.attachment_id):
        raise InvalidInput("volume.attachment_id", "required exactly when export_mode is 'attachment'")
    if volume.content_source not in csi_contract.CONTENT_SOURCES:
        raise InvalidInput("volume.content_source", f"must be one of {sorted(csi_contract.CONTENT_SOURCES)}")
    if volume.grow_fs and params.volume_source != "csi":
        raise InvalidInput(
            "parameters.volumeSource", "restoring to a larger size needs volumeSource csi (node-side grow)"
        )


def _secret(creds: Credentials, *, name: str, namespace: str, pv_name: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {names.LABEL_PV: pv_name, names.LABEL_MANAGED_BY: names.MANAGED_BY_VALUE},
        },
        "type": creds.secret_type,
        "data": {key: base64.b64encode(value.encode()).decode("ascii") for key, value in creds.data.items()},
    }


def _parse(connection_info: ConnectionInfo) -> mapping_rbd.RbdSource | mapping_iscsi.IscsiSource:
    kind = connection_info.driver_volume_type
    if not isinstance(kind, str) or kind.lower() not in SUPPORTED_TYPES:
        raise UnsupportedConnectionType(
            "driver_volume_type", f"{kind!r} is not supported (supported: {', '.join(SUPPORTED_TYPES)})"
        )
    data = connection_info.data
    if not isinstance(data, Mapping):
        raise InvalidInput("data", "must be an object")
    if kind.lower() == "rbd":
        return mapping_rbd.parse_rbd(data)
    return mapping_iscsi.parse_iscsi(data)


def _intree_source(
    parsed: mapping_rbd.RbdSource | mapping_iscsi.IscsiSource,
    *,
    pv_name: str,
    params: ClassParams,
    volume: ProvisionedVolume,
    fs_type: str | None,
    secret_ref: Mapping[str, str] | None,
) -> dict[str, Any]:
    if isinstance(parsed, mapping_rbd.RbdSource):
        user = mapping_rbd.effective_user(parsed, params)
        return {"rbd": mapping_rbd.intree_source(parsed, user=user, fs_type=fs_type, secret_ref=secret_ref)}
    return {
        "iscsi": mapping_iscsi.intree_source(
            parsed,
            pv_name=pv_name,
            initiator_name=volume.initiator_name,
            fs_type=fs_type,
            secret_ref=secret_ref,
        )
    }


def _csi_source(
    parsed: mapping_rbd.RbdSource | mapping_iscsi.IscsiSource,
    *,
    volume: ProvisionedVolume,
    params: ClassParams,
    fs_type: str | None,
    secret_ref: Mapping[str, str] | None,
) -> dict[str, Any]:
    target: csi_contract.Target
    if isinstance(parsed, mapping_rbd.RbdSource):
        target = mapping_rbd.csi_target(
            parsed,
            user=mapping_rbd.effective_user(parsed, params),
            content_source=volume.content_source,
            grow_fs=volume.grow_fs,
        )
    else:
        target = mapping_iscsi.csi_target(
            parsed,
            initiator_name=volume.initiator_name,
            content_source=volume.content_source,
            grow_fs=volume.grow_fs,
        )
    csi: dict[str, Any] = {"driver": names.CSI_DRIVER_NAME, "volumeHandle": volume.volume_id}
    if fs_type:
        csi["fsType"] = fs_type
    if parsed.read_only:
        csi["readOnly"] = True
    csi["volumeAttributes"] = csi_contract.encode(target)
    if secret_ref is not None:
        csi["nodeStageSecretRef"] = dict(secret_ref)
    return csi


def _pv(
    *,
    pv_name: str,
    claim: Claim,
    fields: ClassFields,
    params: ClassParams,
    volume: ProvisionedVolume,
    provisioner_name: str,
    source: Mapping[str, Any],
) -> dict[str, Any]:
    annotations = {
        names.ANN_PROVISIONED_BY: provisioner_name,
        names.ANN_VOLUME_ID: volume.volume_id,
        names.ANN_EXPORT_MODE: volume.export_mode,
        names.ANN_CLOUD: volume.cloud,
    }
    if volume.attachment_id:
        annotations[names.ANN_ATTACHMENT_ID] = volume.attachment_id
    spec: dict[str, Any] = {
        "capacity": {"storage": gib_quantity(volume.size_gib)},
        "accessModes": list(claim.access_modes),
        "volumeMode": claim.volume_mode,
        # Copied explicitly: a class defaults to Delete, a PV to Retain.
        "persistentVolumeReclaimPolicy": fields.reclaim_policy,
        "storageClassName": fields.name,
        "claimRef": {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "namespace": claim.namespace,
            "name": claim.name,
            "uid": claim.uid,
        },
        **source,
    }
    if fields.mount_options:
        spec["mountOptions"] = list(fields.mount_options)
    zone = volume.availability_zone or params.availability_zone
    if params.zone_topology_key and zone:
        spec["nodeAffinity"] = {
            "required": {
                "nodeSelectorTerms": [
                    {
                        "matchExpressions": [
                            {"key": params.zone_topology_key, "operator": "In", "values": [zone]}
                        ]
                    }
                ]
            }
        }
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {
            "name": pv_name,
            "annotations": annotations,
            "finalizers": [names.PV_VOLUME_FINALIZER],
        },
        "spec": spec,
    }
