"""The Cinder emulator's operations: what each API call does to volumes, snapshots and attachments.

Why a module of its own: ``cinder_emulator_state`` holds the records and how they are shown; this module
holds Cinder's rules per operation (which status allows delete / extend / attach, snapshots block delete
unless cascade, an attachment with a connector exports at once, quotas), each under the one lock.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

from provisioner.testworld.cinder_emulator.backups import BackupStore
from provisioner.testworld.cinder_emulator.state import (
    DELETABLE,
    GONE,
    ApiError,
    Att,
    Rec,
    invalid,
    matches,
    not_found,
    now_iso,
)


class Store(BackupStore):
    """All emulator state behind one lock; every public method is one atomic Cinder operation."""

    def create_volume(self, body: Mapping[str, Any], *, from_backup_ok: bool = False) -> dict[str, Any]:
        """POST /volumes (``backup_id`` from 3.47: ``from_backup_ok``)."""
        size = body.get("size")
        if not isinstance(size, int) or isinstance(size, bool) or size < 1:
            raise invalid(f"Invalid input received: size must be an integer >= 1, not {size!r}")
        metadata = body.get("metadata") or {}
        if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
            raise invalid("Invalid metadata: values must be strings")
        name = str(body.get("name") or "")
        with self._lock:
            vtype = self._resolve_type(body.get("volume_type"))
            snapshot_id = body.get("snapshot_id")
            source_volid = body.get("source_volid")
            backup_id = body.get("backup_id") if from_backup_ok else None
            backup = None
            content = None
            if backup_id:
                backup = self._backup(str(backup_id))
                if backup.status != "available":
                    raise invalid("Invalid backup: Backup status must be available")
                if size < backup.size:
                    raise invalid("Invalid input received: Volume size cannot be lesser than backup size")
                if not self.backup_service_up:
                    raise ApiError(404, "itemNotFound", "Service cinder-backup could not be found.")
            if snapshot_id:
                snap = self._snap(str(snapshot_id))
                if snap.status != "available":
                    raise invalid("Invalid snapshot: Originating snapshot status must be 'available'.")
                if size < snap.size:
                    raise invalid("Invalid input received: Volume size cannot be lesser than snapshot size")
                vtype = (
                    self._vols[snap.extra["volume_id"]].extra["volume_type"]
                    if not body.get("volume_type") and snap.extra["volume_id"] in self._vols
                    else vtype
                )
                content = snap.extra.get("content")
            if source_volid:
                src = self._vol(str(source_volid))
                if src.status not in ("available", "in-use"):
                    raise invalid("Invalid volume: Source volume status must be available or in-use.")
                if size < src.size:
                    raise invalid("Invalid input received: Clones currently must be >= original volume size.")
                content = src.extra.get("content")
            self._check_quota(volumes=1, gigabytes=size)
            outcome = self._faults.create_outcome(name)
            self._seq += 1
            rec = Rec(
                id=str(uuid.uuid4()),
                seq=self._seq,
                kind="volume",
                name=name,
                size=size,
                status="creating",
                metadata=dict(metadata),
                created_at=now_iso(),
                extra={
                    "volume_type": vtype,
                    "availability_zone": body.get("availability_zone") or "nova",
                    "description": body.get("description"),
                    "snapshot_id": snapshot_id or None,
                    "source_volid": source_volid or None,
                    "multiattach": bool(body.get("multiattach", False)),
                    "content": content,
                },
            )
            if outcome != "stuck":
                target = "error" if outcome == "error" else "available"
                rec.pending = (target, self._later(self.timing.create_seconds))
            self._vols[rec.id] = rec
            if backup is not None and outcome == "ok":
                self.start_restore(backup, rec, volume_status="creating")
            return self._volume_view(rec)

    def get_volume(self, volume_id: str) -> dict[str, Any]:
        """GET /volumes/{id}."""
        with self._lock:
            return self._volume_view(self._vol(volume_id))

    def list_volumes(self, filters: Mapping[str, Any], *, like_filters: bool) -> list[dict[str, Any]]:
        """Matching volumes, newest first (Cinder's default sort)."""
        with self._lock:
            out = []
            attached = self._attached_by_volume()
            for rec in sorted(self._vols.values(), key=lambda r: -r.seq):
                if not self._settle(rec, self._vols) or not matches(rec, filters, like_filters):
                    continue
                out.append(self._volume_view(rec, attached))
            return out

    def delete_volume(self, volume_id: str, *, cascade: bool) -> None:
        """DELETE /volumes/{id}[?cascade=True]."""
        with self._lock:
            rec = self._vol(volume_id)
            snaps = [s for s in list(self._snaps.values()) if s.extra["volume_id"] == volume_id]
            snaps = [s for s in snaps if self._settle(s, self._snaps)]
            attached = any(a.volume_id == volume_id and a.status == "attached" for a in self._atts.values())
            if rec.status not in DELETABLE or attached or (snaps and not cascade):
                raise invalid(
                    "Invalid volume: Volume status must be available or error or error_restoring or "
                    "error_extending or error_managing and must not be migrating, attached, belong to a "
                    "group, have snapshots, awaiting a transfer, or be disassociated from snapshots after "
                    "volume transfer."
                )
            if cascade and any(s.status not in ("available", "error", "deleting") for s in snaps):
                raise invalid("Invalid volume: snapshots are not in a deletable state.")
            rec.status = "deleting"
            rec.pending = (GONE, self._later(self.timing.delete_seconds))
            for snap in snaps:
                snap.status = "deleting"

    def extend(self, volume_id: str, new_size: object, *, inuse_allowed: bool) -> None:
        """os-extend."""
        with self._lock:
            rec = self._vol(volume_id)
            allowed = ("available", "in-use") if inuse_allowed else ("available",)
            if rec.status not in allowed:
                raise invalid(
                    f"Invalid volume: Volume {volume_id} status must be {' or '.join(allowed)}, "
                    f"but current status is: {rec.status}."
                )
            if not isinstance(new_size, int) or isinstance(new_size, bool) or new_size <= rec.size:
                raise invalid(
                    f"Invalid input received: New size for extend must be greater than current size. "
                    f"(current: {rec.size}, extended: {new_size})."
                )
            self._check_quota(gigabytes=new_size - rec.size)
            previous = rec.status
            rec.size = new_size
            rec.status = "extending"
            rec.pending = (previous, self._later(self.timing.extend_seconds))

    def set_metadata(self, volume_id: str, metadata: Mapping[str, str], *, replace: bool) -> dict[str, str]:
        """POST (merge) or PUT (replace) /volumes/{id}/metadata."""
        with self._lock:
            rec = self._vol(volume_id)
            rec.metadata = dict(metadata) if replace else {**rec.metadata, **metadata}
            return dict(rec.metadata)

    # --- legacy export ---------------------------------------------------------------------------------

    def reserve(self, volume_id: str) -> None:
        """os-reserve: available → attaching."""
        with self._lock:
            rec = self._vol(volume_id)
            if rec.status != "available" and not (rec.status == "in-use" and rec.extra["multiattach"]):
                raise invalid(
                    "Invalid volume: Volume status must be available to reserve, "
                    f"but the status is {rec.status}."
                )
            rec.status = "attaching"

    def unreserve(self, volume_id: str) -> None:
        """os-unreserve: attaching → available."""
        with self._lock:
            rec = self._vol(volume_id)
            if rec.status == "attaching":
                rec.status = "available"

    def initialize_connection(self, volume_id: str, connector: Mapping[str, Any]) -> dict[str, Any]:
        """os-initialize_connection: the driver's connection info (status unchanged)."""
        with self._lock:
            rec = self._vol(volume_id)
            if rec.status in ("creating", "deleting", "error", "extending"):
                raise invalid(f"Invalid volume: Volume {volume_id} status {rec.status} cannot be exported.")
            return self._profiles[rec.extra["volume_type"]].connection_info(rec.id, connector)

    def terminate_connection(self, volume_id: str, connector: Mapping[str, Any]) -> None:
        """os-terminate_connection: nothing to undo in the emulator beyond the existence check."""
        with self._lock:
            self._vol(volume_id)

    # --- attachments (3.27+) ---------------------------------------------------------------------------

    def create_attachment(
        self, volume_id: str, connector: Mapping[str, Any] | None, instance: str | None, mode: str
    ) -> dict[str, Any]:
        """POST /attachments; with a connector the volume is exported at once (like real Cinder)."""
        with self._lock:
            try:
                rec = self._vol(volume_id)
            except ApiError:
                raise not_found("Volume", volume_id) from None
            ok = ("available", "in-use") if rec.extra["multiattach"] else ("available",)
            if rec.status not in ok:
                raise invalid(
                    f"Invalid volume: Volume {volume_id} status must be {' or '.join(ok)} to reserve, "
                    f"but the current status is {rec.status}."
                )
            att = Att(str(uuid.uuid4()), volume_id, "reserved", None, None, instance, mode)
            self._atts[att.id] = att
            rec.status = "reserved"
            if connector:
                self._export(att, rec, connector)
            return self._attachment_view(att)

    def _export(self, att: Att, rec: Rec, connector: Mapping[str, Any]) -> None:
        wire = self._profiles[rec.extra["volume_type"]].connection_info(rec.id, connector)
        flat = {**wire["data"], "driver_volume_type": wire["driver_volume_type"], "attachment_id": att.id}
        flat["enforce_multipath"] = bool(connector.get("enforce_multipath", False))
        att.connector = dict(connector)
        att.connection_info = flat
        att.status = "attached"
        att.attached_at = now_iso()
        rec.status = "in-use"

    def get_attachment(self, attachment_id: str) -> dict[str, Any]:
        """GET /attachments/{id}."""
        with self._lock:
            att = self._atts.get(attachment_id)
            if att is None:
                raise not_found("VolumeAttachment", attachment_id)
            return self._attachment_view(att)

    def complete_attachment(self, attachment_id: str) -> None:
        """os-complete: the consumer finished attaching."""
        with self._lock:
            att = self._atts.get(attachment_id)
            if att is None:
                raise not_found("VolumeAttachment", attachment_id)
            att.status = "attached"
            self._vol(att.volume_id).status = "in-use"

    def delete_attachment(self, attachment_id: str) -> None:
        """DELETE /attachments/{id}: the volume goes back to available when nothing else holds it."""
        with self._lock:
            att = self._atts.pop(attachment_id, None)
            if att is None:
                raise not_found("VolumeAttachment", attachment_id)
            rec = self._vols.get(att.volume_id)
            if rec is not None and not any(a.volume_id == rec.id for a in self._atts.values()):
                rec.status = "available"

    # --- snapshots -------------------------------------------------------------------------------------

    def create_snapshot(self, body: Mapping[str, Any], *, in_use_ok: bool = False) -> dict[str, Any]:
        """POST /snapshots."""
        with self._lock:
            volume_id = str(body.get("volume_id") or "")
            vol = self._vol(volume_id)
            force = in_use_ok or str(body.get("force", False)).lower() in ("true", "1")
            if vol.status not in ("available", "in-use") or (vol.status == "in-use" and not force):
                raise invalid(
                    f"Invalid volume: Volume {volume_id} status must be available, "
                    f"but current status is: {vol.status}."
                )
            self._check_quota(snapshots=1, gigabytes=vol.size)
            self._seq += 1
            rec = Rec(
                id=str(uuid.uuid4()),
                seq=self._seq,
                kind="snapshot",
                name=str(body.get("name") or ""),
                size=vol.size,
                status="creating",
                metadata=dict(body.get("metadata") or {}),
                created_at=now_iso(),
                extra={
                    "volume_id": volume_id,
                    "description": body.get("description"),
                    "content": vol.extra.get("content"),
                },
                pending=("available", self._later(self.timing.snapshot_seconds)),
            )
            self._snaps[rec.id] = rec
            return self._snapshot_view(rec)

    def get_snapshot(self, snapshot_id: str) -> dict[str, Any]:
        """GET /snapshots/{id}."""
        with self._lock:
            return self._snapshot_view(self._snap(snapshot_id))

    def list_snapshots(self, filters: Mapping[str, Any]) -> list[dict[str, Any]]:
        """Matching snapshots, newest first."""
        with self._lock:
            out = []
            for rec in sorted(self._snaps.values(), key=lambda r: -r.seq):
                if not self._settle(rec, self._snaps):
                    continue
                if filters.get("volume_id") and rec.extra["volume_id"] != filters["volume_id"]:
                    continue
                if matches(rec, {k: v for k, v in filters.items() if k != "volume_id"}, False):
                    out.append(self._snapshot_view(rec))
            return out

    def delete_snapshot(self, snapshot_id: str) -> None:
        """DELETE /snapshots/{id}."""
        with self._lock:
            rec = self._snap(snapshot_id)
            if rec.status not in ("available", "error"):
                raise invalid(
                    f"Invalid snapshot: Snapshot status must be available or error, not {rec.status}."
                )
            if any(
                v.extra["snapshot_id"] == snapshot_id and v.status == "creating" for v in self._vols.values()
            ):
                raise invalid("Invalid snapshot: a volume is being created from this snapshot.")
            rec.status = "deleting"
            rec.pending = (GONE, self._later(self.timing.delete_seconds))
