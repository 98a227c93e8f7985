"""Where a new volume's content comes from: empty, a Cinder snapshot, a Cinder backup, or a clone.

- ``spec.dataSource`` VolumeSnapshot → its bound VolumeSnapshotContent's ``status.snapshotHandle``.
- ``spec.dataSource`` PersistentVolumeClaim → clone of that claim's Cinder volume (same namespace, bound,
  ours).
- annotation ``netvol.io/restore-from-snapshot`` (backup teams) → a Cinder snapshot id, guarded: it must
  carry our cluster tag and come from the same namespace unless the class allows raw restores — one tenant
  must never read another's data.
- annotation ``netvol.io/restore-from-backup`` → a Cinder backup id, under the same guard (the backup's
  metadata: our cluster tag and the namespace it was taken in, unless the class allows raw restores).
- a VolumeSnapshot whose content's handle is a *backup* (VolumeSnapshotClass ``type: backup``): the handle
  is tried as a Cinder snapshot first and, on CinderNotFound, as a backup. No handle scheme is needed:
  Cinder ids are unique per resource kind and a miss costs one read, once per restore.

How a backup becomes a volume: with microversion 3.47 (``capabilities.backups_as_source``) the create
itself names the backup (``backup_id``). Older clouds: the volume is created empty, tagged as ours and
marked ``netvol.io/restore-state: pending``, and once it is ``available`` the backups API restores into
it (``finish_restore``). The volume exists (named ``pvc-<uid>``, found by name + cluster tag) before the
restore is asked for, so a crash anywhere leaves nothing that the next leader cannot find or finish. A
restore asked for twice after a crash is harmless: it writes the same blocks again.

One trap of real Cinder, pinned by the contract suite: a restore *replaces* the volume's metadata with
the source volume's metadata at backup time (cinder-backup's metadata restore). ``finish_restore``
therefore re-tags the volume (our tags + ``netvol.io/restored-from-backup``) before it is exported; the
marker also tells the node agent the volume holds data (content "snapshot": never formatted). Between the
end of a restore and the re-tag the volume carries the *source's* cluster tag: for a backup from this
cluster that is ours, so a new leader still finds it; a raw restore of another cluster's backup is found
by id only by the replica that created it (the window is one poll long).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from provisioner.domain import names
from provisioner.domain.errors import CinderNotFound, InvalidInput, KubeNotFound
from provisioner.domain.model import AVAILABLE, Backup, BackupId, SnapshotId, Volume, VolumeId
from provisioner.domain.outcome import Outcome, requeue
from provisioner.domain.params import ClassParams
from provisioner.domain.quantity import quantity_to_gib
from provisioner.flows.context import Context, Obj


@dataclass(frozen=True, slots=True, kw_only=True)
class VolumeSource:
    """The create request's source fields."""

    snapshot_id: SnapshotId | None = None
    source_volid: VolumeId | None = None
    backup_id: BackupId | None = None  # create from this backup (3.47)
    restore_backup_id: BackupId | None = None  # create empty, then restore this backup into it
    min_size_gib: int = 1

    def backup_metadata(self) -> dict[str, str]:
        """The markers a volume restored from a backup is created with."""
        backup = self.backup_id or self.restore_backup_id
        if backup is None:
            return {}
        marks = {names.META_RESTORED_FROM_BACKUP: str(backup)}
        if self.restore_backup_id is not None:
            marks[names.META_RESTORE_STATE] = "pending"
        return marks


EMPTY = VolumeSource()


def resolve_source(ctx: Context, pvc: Obj, params: ClassParams, cinder: Any) -> VolumeSource:
    """The source for ``pvc``; InvalidInput (final) names the offending field."""
    meta = pvc["metadata"]
    ann = meta.get("annotations") or {}
    data_source = (pvc.get("spec") or {}).get("dataSource") or (pvc.get("spec") or {}).get("dataSourceRef")
    restore_id = ann.get(names.ANN_RESTORE_FROM_SNAPSHOT)
    backup_id = ann.get(names.ANN_RESTORE_FROM_BACKUP)
    if restore_id and backup_id:
        raise InvalidInput(
            f"metadata.annotations[{names.ANN_RESTORE_FROM_BACKUP}]",
            f"cannot be combined with {names.ANN_RESTORE_FROM_SNAPSHOT}",
        )
    for key, value in (
        (names.ANN_RESTORE_FROM_SNAPSHOT, restore_id),
        (names.ANN_RESTORE_FROM_BACKUP, backup_id),
    ):
        if value and data_source:
            raise InvalidInput(f"metadata.annotations[{key}]", "cannot be combined with spec.dataSource")
    if restore_id:
        return _from_cinder_snapshot(ctx, meta["namespace"], str(restore_id), params, cinder)
    if backup_id:
        return _from_cinder_backup(ctx, meta["namespace"], str(backup_id), params, cinder)
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
            try:
                backup = cinder.get_backup(BackupId(handle))
            except CinderNotFound:
                raise InvalidInput(
                    "spec.dataSource", f"Cinder snapshot or backup {handle} does not exist"
                ) from None
            return _backup_source("spec.dataSource", backup, cinder)
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
    _guard(ctx, field, "snapshot", snapshot.metadata, namespace=namespace, params=params)
    if snapshot.status != "available":
        raise InvalidInput(field, f"snapshot is {snapshot.status}, not available")
    return VolumeSource(snapshot_id=snapshot.id, min_size_gib=snapshot.size_gib)


def _guard(
    ctx: Context, field: str, what: str, md: Mapping[str, str], *, namespace: str, params: ClassParams
) -> None:
    """One tenant never reads another's data: our cluster tag and the claim's namespace (or one the class
    lists in ``restoreFromNamespaces``), unless the class allows raw restores."""
    if params.allow_raw_snapshot_restore:
        return
    if md.get(names.META_CLUSTER) != ctx.settings.cluster_id:
        raise InvalidInput(field, f"{what} does not belong to this cluster (class disallows raw restores)")
    taken_in = md.get(names.META_PVC_NAMESPACE)
    if taken_in != namespace and taken_in not in params.restore_from_namespaces:
        allowed = ", ".join(params.restore_from_namespaces)
        also = f" (the class also allows: {allowed})" if allowed else ""
        raise InvalidInput(field, f"{what} was not taken in namespace {namespace!r}{also}")


def _from_cinder_backup(
    ctx: Context, namespace: str, backup_id: str, params: ClassParams, cinder: Any
) -> VolumeSource:
    field = f"metadata.annotations[{names.ANN_RESTORE_FROM_BACKUP}]"
    if not names.is_cinder_id(backup_id):
        raise InvalidInput(field, f"{backup_id[:80]!r} is not a Cinder backup id")
    try:
        backup = cinder.get_backup(BackupId(backup_id))
    except CinderNotFound:
        raise InvalidInput(field, f"Cinder backup {backup_id} not found") from None
    _guard(ctx, field, "backup", backup.metadata, namespace=namespace, params=params)
    return _backup_source(field, backup, cinder)


def _backup_source(field: str, backup: Backup, cinder: Any) -> VolumeSource:
    """An available backup, on a cloud whose backup service runs: by create (3.47) or by restore."""
    if backup.status != AVAILABLE:
        raise InvalidInput(field, f"backup {backup.id} is {backup.status}, not available")
    if not cinder.has_backup_service():
        raise InvalidInput(
            field, "this cloud runs no cinder-backup service (enabled and up): backups cannot be restored"
        )
    if cinder.capabilities.backups_as_source:
        return VolumeSource(backup_id=backup.id, min_size_gib=backup.size_gib)
    return VolumeSource(restore_backup_id=backup.id, min_size_gib=backup.size_gib)


# ---- after the create: finish a restore from a backup ---------------------------------------------

RestoreStep = Literal["restore", "retag", "ready"]


def restore_step(volume: Volume, *, claim_uid: str) -> RestoreStep:
    """What an ``available`` volume of a claim still needs before export (pure).

    ``restore``: created empty on an old cloud, the restore not yet accepted. ``retag``: a restore replaced
    our tags (the source's tags are there), or the marker is missing. ``ready``: ours, restored or not.
    """
    md = volume.metadata
    if md.get(names.META_RESTORE_STATE) == "pending" and md.get(names.META_RESTORED_FROM_BACKUP):
        return "restore"
    if md.get(names.META_PVC_UID) != claim_uid:
        return "retag"
    return "ready"


def finish_restore(
    volume: Volume, *, cinder: Any, claim_uid: str, tags: Mapping[str, str], backup_id: BackupId | None
) -> Outcome | None:
    """Do the step ``restore_step`` names; None when the volume is ready for export.

    ``tags``: the claim's volume tags; ``backup_id``: the backup the claim restores (for the marker).
    """
    step = restore_step(volume, claim_uid=claim_uid)
    if step == "ready":
        return None
    if step == "restore":
        backup = BackupId(volume.metadata[names.META_RESTORED_FROM_BACKUP])
        cinder.restore_backup(backup, volume_id=volume.id)
        cinder.set_volume_metadata(volume.id, {names.META_RESTORE_STATE: "restoring"})
        return requeue(1.0, "restoring_backup")
    marks = {names.META_RESTORED_FROM_BACKUP: str(backup_id)} if backup_id else {}
    cinder.set_volume_metadata(volume.id, {**tags, **marks, names.META_RESTORE_STATE: "done"})
    return requeue(0.0, "retagged")
