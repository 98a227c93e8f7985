"""Where a new volume's content comes from: empty, a Cinder snapshot, or a clone of another volume.

- ``spec.dataSource`` VolumeSnapshot → its bound VolumeSnapshotContent's ``status.snapshotHandle``.
- ``spec.dataSource`` PersistentVolumeClaim → clone of that claim's Cinder volume (same namespace, bound,
  ours).
- annotation ``netvol.io/restore-from-snapshot`` (backup teams) → a Cinder snapshot id, guarded: it must
  carry our cluster tag and come from the same namespace unless the class allows raw restores — one tenant
  must never read another's data.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from provisioner.domain import names
from provisioner.domain.errors import CinderNotFound, InvalidInput, KubeNotFound
from provisioner.domain.model import SnapshotId, VolumeId
from provisioner.domain.params import ClassParams
from provisioner.domain.quantity import quantity_to_gib
from provisioner.flows.context import Context, Obj


@dataclass(frozen=True, slots=True, kw_only=True)
class VolumeSource:
    """The create request's source fields."""

    snapshot_id: SnapshotId | None = None
    source_volid: VolumeId | None = None
    min_size_gib: int = 1


EMPTY = VolumeSource()


def resolve_source(ctx: Context, pvc: Obj, params: ClassParams, cinder: Any) -> VolumeSource:
    """The source for ``pvc``; InvalidInput (final) names the offending field."""
    meta = pvc["metadata"]
    ann = meta.get("annotations") or {}
    data_source = (pvc.get("spec") or {}).get("dataSource") or (pvc.get("spec") or {}).get("dataSourceRef")
    restore_id = ann.get(names.ANN_RESTORE_FROM_SNAPSHOT)
    if restore_id and data_source:
        raise InvalidInput(
            f"metadata.annotations[{names.ANN_RESTORE_FROM_SNAPSHOT}]",
            "cannot be combined with spec.dataSource",
        )
    if restore_id:
        return _from_cinder_snapshot(ctx, meta["namespace"], str(restore_id), params, cinder)
    if not data_source:
        return EMPTY
    kind = data_source.get("kind")
    name = data_source.get("name")
    if not name:
        raise InvalidInput("spec.dataSource.name", "missing")
    if kind == "PersistentVolumeClaim":
        src = ctx.pvcs.get(f"{meta['namespace']}/{name}")
        vol_name = (src.get("spec") or {}).get("volumeName") if src else None
        pv = ctx.pvs.get(vol_name) if vol_name else None
        vid = ((pv or {}).get("metadata", {}).get("annotations") or {}).get(names.ANN_VOLUME_ID)
        if not vid:
            raise InvalidInput("spec.dataSource", f"claim {name!r} is not a bound volume of this provisioner")
        size = quantity_to_gib(str(((pv or {}).get("spec") or {}).get("capacity", {}).get("storage", "1Gi")))
        return VolumeSource(source_volid=VolumeId(vid), min_size_gib=size)
    if kind == "VolumeSnapshot":
        try:
            snap = ctx.kube.get("volumesnapshots", name, namespace=meta["namespace"])
            content_name = (snap.get("status") or {}).get("boundVolumeSnapshotContentName")
            if not content_name:
                raise InvalidInput("spec.dataSource", f"VolumeSnapshot {name!r} is not bound yet")
            content = ctx.kube.get("volumesnapshotcontents", content_name)
        except KubeNotFound:
            raise InvalidInput("spec.dataSource", f"VolumeSnapshot {name!r} not found") from None
        handle = (content.get("status") or {}).get("snapshotHandle") or (
            (content.get("spec") or {}).get("source") or {}
        ).get("snapshotHandle")
        if not handle:
            raise InvalidInput(
                "spec.dataSource", f"VolumeSnapshot {name!r} has no Cinder snapshot handle yet"
            )
        try:
            snapshot = cinder.get_snapshot(SnapshotId(handle))
        except CinderNotFound:
            raise InvalidInput("spec.dataSource", f"Cinder snapshot {handle} does not exist") from None
        return VolumeSource(snapshot_id=snapshot.id, min_size_gib=snapshot.size_gib)
    raise InvalidInput("spec.dataSource.kind", f"unsupported data source kind {kind!r}")


def _from_cinder_snapshot(
    ctx: Context, namespace: str, snapshot_id: str, params: ClassParams, cinder: Any
) -> VolumeSource:
    field = f"metadata.annotations[{names.ANN_RESTORE_FROM_SNAPSHOT}]"
    try:
        snapshot = cinder.get_snapshot(SnapshotId(snapshot_id))
    except CinderNotFound:
        raise InvalidInput(field, f"Cinder snapshot {snapshot_id} not found") from None
    if not params.allow_raw_snapshot_restore:
        md = snapshot.metadata
        if md.get(names.META_CLUSTER) != ctx.settings.cluster_id:
            raise InvalidInput(
                field, "snapshot does not belong to this cluster (class disallows raw restores)"
            )
        if md.get(names.META_PVC_NAMESPACE) != namespace:
            raise InvalidInput(field, f"snapshot was not taken in namespace {namespace!r}")
    if snapshot.status != "available":
        raise InvalidInput(field, f"snapshot is {snapshot.status}, not available")
    return VolumeSource(snapshot_id=snapshot.id, min_size_gib=snapshot.size_gib)
