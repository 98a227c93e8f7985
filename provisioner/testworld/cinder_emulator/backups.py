"""The Cinder emulator's backups (``/backups``, ``/backups/{id}/restore``) and the backup service.

Why a module of its own: backups have Cinder rules of their own, and the contract suite checks each of
them against real Cinder (cinder-backup with the posix driver):

* create: the volume must be ``available`` (or ``in-use`` with ``force``); it is ``backing-up`` meanwhile;
  the backup goes ``creating`` → ``available`` (or ``error`` with a ``fail_reason``, by injected fault).
  ``incremental`` needs an earlier ``available`` backup of the volume (400 otherwise); the latest one
  becomes its parent and ``has_dependent_backups`` until the child is gone.
* delete: only ``available`` / ``error`` backups without dependants (400 otherwise); 404 when missing.
* restore (into a volume, or into a new one ``restore_backup_<id>``): the backup must be ``available``;
  the target ``available`` and at least the backup's size. The backup is ``restoring`` and the volume
  ``restoring-backup`` meanwhile. At the end, like real Cinder's backup metadata restore, the volume's
  metadata is **replaced** by the source volume's metadata at backup time, and its name is taken only when
  the target is unnamed or still called ``restore_backup_…``. The content marker is copied.
* volume create with ``backup_id`` (3.47): the same restore, into the new volume.
* list: ``volume_id`` / ``name`` / ``status`` filters; a ``metadata`` filter matches nothing (what real
  Cinder 29 answers, pinned by the contract suite; the adapter filters metadata itself).
* ``GET /os-services?binary=cinder-backup``: one service, ``up`` unless a test took it down; creates
  and restores then fail like Cinder's ("Service cinder-backup could not be found").
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

from provisioner.testworld.cinder_emulator.state import (
    GONE,
    ApiError,
    Rec,
    StoreBase,
    invalid,
    matches,
    not_found,
    now_iso,
)


def _no_service() -> ApiError:
    return ApiError(404, "itemNotFound", "Service cinder-backup could not be found.")


class BackupStore(StoreBase):
    """Backup operations; each public method is one atomic Cinder operation under the store's lock."""

    def _backup(self, backup_id: str) -> Rec:
        rec = self._backups.get(backup_id)
        if rec is None or not self._settle(rec, self._backups):
            raise not_found("Backup", backup_id)
        return rec

    def services(self, binary: str | None) -> list[dict[str, Any]]:
        """GET /os-services: the one cinder-backup service (and cinder-volume)."""
        with self._lock:
            rows = [
                ("cinder-volume", "up"),
                ("cinder-backup", "up" if self.backup_service_up else "down"),
            ]
            return [
                {
                    "binary": name,
                    "host": "emulator",
                    "zone": "nova",
                    "status": "enabled",
                    "state": state,
                    "updated_at": now_iso(),
                    "disabled_reason": None,
                }
                for name, state in rows
                if binary in (None, name)
            ]

    def create_backup(self, body: Mapping[str, Any], *, with_metadata: bool) -> dict[str, Any]:
        """POST /backups."""
        metadata = body.get("metadata") or {}
        if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
            raise invalid("Invalid input for field/attribute metadata.")
        if metadata and not with_metadata:
            raise invalid("Additional properties are not allowed ('metadata' was unexpected)")
        with self._lock:
            volume_id = str(body.get("volume_id") or "")
            vol = self._vol(volume_id)
            force = str(body.get("force", False)).lower() in ("true", "1")
            if vol.status == "in-use" and not force:
                raise invalid("Invalid volume: Backing up an in-use volume must use the force flag.")
            if vol.status not in ("available", "in-use"):
                raise invalid(
                    f"Invalid volume: Volume to be backed up must be available or in-use, but the current "
                    f'status is "{vol.status}".'
                )
            if not self.backup_service_up:
                raise _no_service()
            parent_id = None
            if str(body.get("incremental", False)).lower() in ("true", "1"):
                parents = [
                    b
                    for b in self._backups.values()
                    if self._settle(b, self._backups)
                    and b.extra["volume_id"] == volume_id
                    and b.status == "available"
                ]
                if not parents:
                    raise invalid("Invalid backup: No backups available to do an incremental backup.")
                parent_id = max(parents, key=lambda b: b.seq).id
            self._seq += 1
            name = str(body.get("name") or "")
            failed = self._faults.backup_outcome(name) == "error"
            done_at = self._later(self.timing.backup_seconds)
            rec = Rec(
                id=str(uuid.uuid4()),
                seq=self._seq,
                kind="backup",
                name=name,
                size=vol.size,
                status="creating",
                metadata=dict(metadata),
                created_at=now_iso(),
                extra={
                    "volume_id": volume_id,
                    "description": body.get("description"),
                    "parent_id": parent_id,
                    "content": vol.extra.get("content"),
                    "volume_metadata": dict(vol.metadata),
                    "volume_name": vol.name,
                    "fail_reason": None,
                },
                pending=("error" if failed else "available", done_at),
            )
            if failed:
                rec.extra["fail_reason"] = "injected backup failure"
            self._backups[rec.id] = rec
            vol.pending = (vol.status, done_at)
            vol.status = "backing-up"
            return self._backup_view(rec, with_metadata=with_metadata)

    def get_backup(self, backup_id: str, *, with_metadata: bool) -> dict[str, Any]:
        """GET /backups/{id}."""
        with self._lock:
            return self._backup_view(self._backup(backup_id), with_metadata=with_metadata)

    def list_backups(self, filters: Mapping[str, Any], *, with_metadata: bool) -> list[dict[str, Any]]:
        """Matching backups, newest first."""
        with self._lock:
            out = []
            if "metadata" in filters:  # like real Cinder 29: a metadata filter on backups matches nothing
                return []
            for rec in sorted(self._backups.values(), key=lambda r: -r.seq):
                if self._settle(rec, self._backups) and matches(rec, filters, False):
                    out.append(self._backup_view(rec, with_metadata=with_metadata))
            return out

    def delete_backup(self, backup_id: str) -> None:
        """DELETE /backups/{id}."""
        with self._lock:
            rec = self._backup(backup_id)
            if rec.status not in ("available", "error"):
                raise invalid("Invalid backup: Backup status must be available or error")
            if any(b.extra["parent_id"] == rec.id for b in self._backups.values()):
                raise invalid("Invalid backup: Incremental backups exist for this backup.")
            rec.status = "deleting"
            rec.pending = (GONE, self._later(self.timing.delete_seconds))

    def restore_backup(self, backup_id: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """POST /backups/{id}/restore (into ``volume_id``, or a new volume)."""
        with self._lock:
            backup = self._backup(backup_id)
            if backup.status != "available":
                raise invalid("Invalid backup: Backup status must be available")
            if not self.backup_service_up:
                raise _no_service()
            volume_id = body.get("volume_id")
            if volume_id:
                target = self._vol(str(volume_id))
                if target.status != "available":
                    raise invalid(
                        f"Invalid volume: Volume to be restored to must be available, but the current "
                        f'status is "{target.status}".'
                    )
                if target.size < backup.size:
                    raise invalid(
                        f"Invalid volume: volume size {target.size} is too small to restore backup of "
                        f"size {backup.size}."
                    )
            else:
                name = str(body.get("name") or f"restore_backup_{backup_id}")
                target = self._new_volume(name, backup.size)
            self.start_restore(backup, target, volume_status="restoring-backup")
            return {"backup_id": backup.id, "volume_id": target.id, "volume_name": target.name}

    def _new_volume(self, name: str, size: int) -> Rec:
        self._check_quota(volumes=1, gigabytes=size)
        self._seq += 1
        rec = Rec(
            id=str(uuid.uuid4()),
            seq=self._seq,
            kind="volume",
            name=name,
            size=size,
            status="creating",
            metadata={},
            created_at=now_iso(),
            extra={
                "volume_type": "__DEFAULT__",
                "availability_zone": "nova",
                "description": None,
                "snapshot_id": None,
                "source_volid": None,
                "multiattach": False,
            },
        )
        self._vols[rec.id] = rec
        return rec

    def start_restore(self, backup: Rec, target: Rec, *, volume_status: str) -> None:
        """``backup`` → ``target``: both busy until the restore is done, then content and metadata land."""
        failed = self._faults.restore_outcome(backup.name) == "error"
        done_at = self._later(self.timing.restore_seconds)
        backup.status = "restoring"
        backup.pending = ("available", done_at)
        target.status = volume_status
        target.pending = ("error_restoring" if failed else "available", done_at)
        if failed:
            return
        x = backup.extra

        def land() -> None:
            target.extra["content"] = x["content"]
            target.metadata = dict(x["volume_metadata"])
            if x["volume_name"] and (not target.name or target.name.startswith("restore_backup_")):
                target.name = x["volume_name"]

        target.extra["on_settle"] = land
