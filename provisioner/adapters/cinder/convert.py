"""cinderclient resources → the provisioner's model records.

Why separate: wire shapes differ between Cinder releases and between APIs (the attachments API returns
connection info *flattened* — the driver's ``data`` keys next to ``driver_volume_type`` and
``attachment_id`` — while ``os-initialize_connection`` nests them under ``data``). One place turns both into
``model.ConnectionInfo`` so the mapping sees one shape.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, ParamSpec, TypeVar

from provisioner.domain.errors import CinderBadResponse, CinderError
from provisioner.domain.model import (
    Attachment,
    AttachmentId,
    Backup,
    BackupId,
    BackupRestore,
    ConnectionInfo,
    Snapshot,
    SnapshotId,
    Volume,
    VolumeId,
)

P = ParamSpec("P")
R = TypeVar("R")


def _guarded(fn: Callable[P, R]) -> Callable[P, R]:
    """A malformed resource (missing key, wrong type) becomes CinderBadResponse, never a raw exception."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except CinderError:
            raise
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise CinderBadResponse(
                f"unreadable Cinder answer ({fn.__name__}: {type(e).__name__} {e})",
                operation=str(kwargs.get("operation") or fn.__name__),
            ) from e

    return wrapper


def _fields(resource: Any) -> Mapping[str, Any]:
    if isinstance(resource, Mapping):
        return resource
    info = getattr(resource, "_info", None)
    if isinstance(info, Mapping):
        return info
    return dict(vars(resource))


def cinder_time(raw: Any) -> float | None:
    """Cinder's ``created_at`` / ``updated_at`` (ISO 8601, UTC, usually without an offset) → Unix seconds."""
    if not isinstance(raw, str) or not raw:
        return None
    try:
        parsed = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


def _str_map(raw: Any) -> dict[str, str]:
    if not isinstance(raw, Mapping):
        return {}
    return {str(k): str(v) for k, v in raw.items()}


@_guarded
def to_volume(resource: Any) -> Volume:
    """A Volume from a cinderclient Volume (or its dict)."""
    f = _fields(resource)
    attachments = f.get("attachments") or []
    return Volume(
        id=VolumeId(str(f["id"])),
        name=str(f.get("name") or ""),
        size_gib=int(f.get("size") or 0),
        status=str(f.get("status") or ""),
        volume_type=f.get("volume_type"),
        availability_zone=f.get("availability_zone"),
        metadata=_str_map(f.get("metadata")),
        snapshot_id=SnapshotId(f["snapshot_id"]) if f.get("snapshot_id") else None,
        source_volid=VolumeId(f["source_volid"]) if f.get("source_volid") else None,
        multiattach=bool(f.get("multiattach", False)),
        attachment_ids=tuple(
            AttachmentId(str(a["attachment_id"]))
            for a in attachments
            if isinstance(a, Mapping) and a.get("attachment_id")
        ),
        created_at=cinder_time(f.get("created_at")),
        updated_at=cinder_time(f.get("updated_at")),
    )


@_guarded
def to_snapshot(resource: Any) -> Snapshot:
    """A Snapshot from a cinderclient Snapshot (or its dict)."""
    f = _fields(resource)
    return Snapshot(
        id=SnapshotId(str(f["id"])),
        name=str(f.get("name") or ""),
        volume_id=VolumeId(str(f.get("volume_id") or "")),
        size_gib=int(f.get("size") or 0),
        status=str(f.get("status") or ""),
        metadata=_str_map(f.get("metadata")),
        created_at=cinder_time(f.get("created_at")),
        updated_at=cinder_time(f.get("updated_at")),
    )


@_guarded
def to_backup(resource: Any) -> Backup:
    """A Backup from a cinderclient VolumeBackup (or its dict); metadata only from 3.43."""
    f = _fields(resource)
    return Backup(
        id=BackupId(str(f["id"])),
        name=str(f.get("name") or ""),
        volume_id=VolumeId(str(f.get("volume_id") or "")),
        size_gib=int(f.get("size") or 0),
        status=str(f.get("status") or ""),
        metadata=_str_map(f.get("metadata")),
        is_incremental=bool(f.get("is_incremental", False)),
        has_dependent_backups=bool(f.get("has_dependent_backups", False)),
        snapshot_id=SnapshotId(str(f["snapshot_id"])) if f.get("snapshot_id") else None,
        fail_reason=str(f["fail_reason"]) if f.get("fail_reason") else None,
        created_at=cinder_time(f.get("created_at")),
        updated_at=cinder_time(f.get("updated_at")),
    )


@_guarded
def to_restore(resource: Any) -> BackupRestore:
    """The answer of ``POST /backups/{id}/restore``."""
    f = _fields(resource)
    return BackupRestore(
        backup_id=BackupId(str(f["backup_id"])),
        volume_id=VolumeId(str(f["volume_id"])),
        volume_name=str(f.get("volume_name") or ""),
    )


def connection_info_from_attachment(raw: Any, *, operation: str) -> ConnectionInfo | None:
    """Undo the attachments API's flattening: ``{"driver_volume_type", "data"}`` again."""
    if not raw:
        return None
    if not isinstance(raw, Mapping):
        raise CinderError("attachment connection_info is not an object", operation=operation)
    if isinstance(raw.get("data"), Mapping) and "driver_volume_type" in raw:
        return ConnectionInfo(driver_volume_type=str(raw["driver_volume_type"]), data=dict(raw["data"]))
    data = {k: v for k, v in raw.items() if k not in ("driver_volume_type", "attachment_id")}
    dvt = raw.get("driver_volume_type")
    if not isinstance(dvt, str) or not dvt:
        raise CinderError("attachment connection_info has no driver_volume_type", operation=operation)
    return ConnectionInfo(driver_volume_type=dvt, data=data)


@_guarded
def to_attachment(raw: Any, *, operation: str) -> Attachment:
    """An Attachment from the attachments API (cinderclient 9.10 returns a plain dict from create)."""
    f = _fields(raw)
    return Attachment(
        id=AttachmentId(str(f["id"])),
        volume_id=VolumeId(str(f.get("volume_id") or "")),
        status=str(f.get("status") or f.get("attach_status") or ""),
        connection_info=connection_info_from_attachment(f.get("connection_info"), operation=operation),
    )
