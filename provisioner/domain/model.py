"""Plain, immutable records that cross the boundary between the core and its adapters.

Adapters build these from wire data; the core only ever sees these (never a cinderclient resource or a
kubernetes model object). Raw dicts appear only where the data is genuinely open-ended: Cinder connection
info (input to the pure mapping) and Kubernetes objects (JSON as the API serves it).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, NewType

VolumeId = NewType("VolumeId", str)
SnapshotId = NewType("SnapshotId", str)
AttachmentId = NewType("AttachmentId", str)
BackupId = NewType("BackupId", str)

VolumeStatus = str  # Cinder statuses are open-ended across releases; compare with the constants below.
AVAILABLE = "available"
CREATING = "creating"
ERROR = "error"
DELETING = "deleting"
ERROR_DELETING = "error_deleting"
IN_USE = "in-use"
RESERVED = "reserved"
EXTENDING = "extending"
ERROR_EXTENDING = "error_extending"


@dataclass(frozen=True, slots=True, kw_only=True)
class Volume:
    """A Cinder volume as far as the provisioner cares."""

    id: VolumeId
    name: str
    size_gib: int
    status: VolumeStatus
    volume_type: str | None = None
    availability_zone: str | None = None
    metadata: Mapping[str, str] = field(default_factory=dict)
    snapshot_id: SnapshotId | None = None
    source_volid: VolumeId | None = None
    multiattach: bool = False
    attachment_ids: tuple[AttachmentId, ...] = ()
    #: Unix seconds (UTC) Cinder reports for creation / the last change; None when it did not say.
    created_at: float | None = None
    updated_at: float | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Snapshot:
    """A Cinder snapshot."""

    id: SnapshotId
    name: str
    volume_id: VolumeId
    size_gib: int
    status: str
    metadata: Mapping[str, str] = field(default_factory=dict)
    #: Unix seconds (UTC) Cinder reports for creation / the last change; None when it did not say.
    created_at: float | None = None
    updated_at: float | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Backup:
    """A Cinder backup (Block Storage v3 ``/backups``; metadata from 3.43).

    Unlike a snapshot, a backup outlives its volume (it lives in the backup store, not on the backend), so
    ``volume_id`` may name a volume that is gone. ``is_incremental`` backups depend on an earlier one;
    ``has_dependent_backups`` blocks deleting this one until its dependants are gone.
    """

    id: BackupId
    name: str
    volume_id: VolumeId
    size_gib: int
    status: str  # creating | available | deleting | error | restoring | error_restoring
    metadata: Mapping[str, str] = field(default_factory=dict)
    is_incremental: bool = False
    has_dependent_backups: bool = False
    snapshot_id: SnapshotId | None = None
    fail_reason: str | None = None
    #: Unix seconds (UTC) Cinder reports for creation / the last change; None when it did not say.
    created_at: float | None = None
    updated_at: float | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class BackupRestore:
    """What ``POST /backups/{id}/restore`` answered: the volume the backup is being restored into."""

    backup_id: BackupId
    volume_id: VolumeId
    volume_name: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class ConnectionInfo:
    """What Cinder returns from initialize_connection or inside an attachment: kept raw for the mapping."""

    driver_volume_type: str
    data: Mapping[str, Any]

    @classmethod
    def from_wire(cls, raw: Mapping[str, Any]) -> ConnectionInfo:
        """Accept ``{"driver_volume_type", "data"}`` or a ``{"connection_info": {...}}`` wrapper."""
        from provisioner.domain.errors import InvalidInput

        if "connection_info" in raw and isinstance(raw["connection_info"], Mapping):
            raw = raw["connection_info"]
        dvt = raw.get("driver_volume_type")
        if not isinstance(dvt, str) or not dvt:
            raise InvalidInput("driver_volume_type", "missing or not a string")
        data = raw.get("data")
        if not isinstance(data, Mapping):
            raise InvalidInput("data", "missing or not an object")
        return cls(driver_volume_type=dvt, data=dict(data))


@dataclass(frozen=True, slots=True, kw_only=True)
class Attachment:
    """A v3 attachment (or, for legacy export, a synthetic record with ``id`` = None)."""

    id: AttachmentId
    volume_id: VolumeId
    status: str
    connection_info: ConnectionInfo | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Connector:
    """The connector a central provisioner sends to Cinder (reference/connection-info.md)."""

    host: str
    ip: str
    initiator: str
    multipath: bool = False
    platform: str = "x86_64"
    os_type: str = "linux"

    def to_wire(self) -> dict[str, Any]:
        """The dict Cinder expects."""
        return {
            "platform": self.platform,
            "os_type": self.os_type,
            "host": self.host,
            "ip": self.ip,
            "initiator": self.initiator,
            "multipath": self.multipath,
            "do_local_attach": False,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class CreateVolumeRequest:
    """Everything needed to create one volume."""

    name: str
    size_gib: int
    volume_type: str | None = None
    availability_zone: str | None = None
    snapshot_id: SnapshotId | None = None
    source_volid: VolumeId | None = None
    backup_id: BackupId | None = None  # create from a backup: needs ``backups_as_source`` (3.47)
    metadata: Mapping[str, str] = field(default_factory=dict)
    description: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class CinderCapabilities:
    """What the negotiated microversion allows."""

    microversion: str
    attachments: bool  # 3.27 create, 3.44 complete
    name_filter: bool  # 3.34 like-filters (exact name works earlier)
    inuse_extend: bool  # 3.42
    backups_as_source: bool  # 3.47 create from backup
    time_filters: bool = False  # 3.60 created_at / updated_at comparisons in list filters


ExportMode = Literal["attachment", "legacy"]
