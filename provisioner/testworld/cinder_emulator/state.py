"""The Cinder emulator's state: volumes, snapshots and attachments, with Cinder's status rules.

Why: the HTTP layer only parses and renders; every rule that real Cinder enforces (what status allows
delete / extend / attach, snapshots block delete unless cascade, quotas) lives here, in one place, so the
contract suite can find where the emulator diverges from real Cinder. Statuses that real Cinder reaches
asynchronously (creating → available, deleting → gone) are computed lazily from the clock when a record is
read, so 1,000 volumes cost no threads or timers.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from provisioner.testworld.cinder_emulator.conninfo import Profile
from provisioner.testworld.cinder_emulator.faults import Faults

GONE = "__gone__"
DELETABLE = ("available", "error", "error_restoring", "error_extending", "error_managing")


class ApiError(Exception):
    """An error response: status code, Cinder's fault name (``itemNotFound`` …) and message."""

    def __init__(self, status: int, kind: str, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.kind = kind
        self.message = message
        self.retry_after = retry_after


def not_found(what: str, ident: str) -> ApiError:
    """404 in Cinder's words."""
    return ApiError(404, "itemNotFound", f"{what} {ident} could not be found.")


def invalid(message: str) -> ApiError:
    """400 in Cinder's words."""
    return ApiError(400, "badRequest", message)


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")


@dataclass(slots=True)
class Timing:
    """Seconds real Cinder would spend in each transitional status."""

    create_seconds: float = 0.0
    delete_seconds: float = 0.0
    extend_seconds: float = 0.0
    snapshot_seconds: float = 0.0


@dataclass(slots=True)
class Quota:
    """Per-project limits; None = unlimited. Exceeding one → 413."""

    volumes: int | None = None
    gigabytes: int | None = None
    snapshots: int | None = None


@dataclass(slots=True)
class Rec:
    id: str
    seq: int
    kind: str  # "volume" | "snapshot"
    name: str
    size: int
    status: str
    metadata: dict[str, str]
    created_at: str
    pending: tuple[str, float] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class Att:
    id: str
    volume_id: str
    status: str
    connector: dict[str, Any] | None
    connection_info: dict[str, Any] | None
    instance: str | None
    mode: str
    attached_at: str | None = None


class StoreBase:
    """State, lock, lazy transitions, quotas and API views; ``Store`` adds the operations."""

    def __init__(
        self,
        *,
        project_id: str,
        profiles: Mapping[str, Profile],
        timing: Timing,
        quota: Quota,
        faults: Faults,
        clock: Callable[[], float],
    ) -> None:
        self.project_id = project_id
        self.timing = timing
        self.quota = quota
        self._faults = faults
        self._clock = clock
        self._lock = threading.RLock()
        self._seq = 0
        self._vols: dict[str, Rec] = {}
        self._snaps: dict[str, Rec] = {}
        self._atts: dict[str, Att] = {}
        self.types = {name: str(uuid.uuid5(uuid.NAMESPACE_URL, "type:" + name)) for name in profiles}
        self._profiles = dict(profiles)

    # --- lazy transitions ---------------------------------------------------------------------------

    def _settle(self, rec: Rec, table: dict[str, Rec]) -> bool:
        """Apply a due transition; False when the record is gone."""
        if rec.pending is not None and self._clock() >= rec.pending[1]:
            target = rec.pending[0]
            rec.pending = None
            if target == GONE:
                del table[rec.id]
                if rec.kind == "volume":
                    for snap in [s for s in self._snaps.values() if s.extra["volume_id"] == rec.id]:
                        del self._snaps[snap.id]
                return False
            rec.status = target
        return True

    def _later(self, seconds: float) -> float:
        return self._clock() + seconds

    def _vol(self, volume_id: str) -> Rec:
        rec = self._vols.get(volume_id)
        if rec is None or not self._settle(rec, self._vols):
            raise not_found("Volume", volume_id)
        return rec

    def _snap(self, snapshot_id: str) -> Rec:
        rec = self._snaps.get(snapshot_id)
        if rec is None or not self._settle(rec, self._snaps):
            raise not_found("Snapshot", snapshot_id)
        return rec

    # --- volumes --------------------------------------------------------------------------------------

    def _resolve_type(self, raw: str | None) -> str:
        if not raw:
            return "__DEFAULT__"
        if raw in self.types:
            return raw
        for name, type_id in self.types.items():
            if type_id == raw:
                return name
        raise ApiError(404, "itemNotFound", f"Volume type with name {raw} could not be found.")

    def _check_quota(self, *, volumes: int = 0, gigabytes: int = 0, snapshots: int = 0) -> None:
        live = [self._vols[k] for k in list(self._vols) if self._settle(self._vols[k], self._vols)]
        snaps = [self._snaps[k] for k in list(self._snaps) if self._settle(self._snaps[k], self._snaps)]
        q = self.quota
        if q.volumes is not None and volumes and len(live) + volumes > q.volumes:
            raise ApiError(
                413,
                "overLimit",
                f"VolumeLimitExceeded: Maximum number of volumes allowed ({q.volumes}) exceeded "
                "for quota 'volumes'.",
            )
        if q.snapshots is not None and snapshots and len(snaps) + snapshots > q.snapshots:
            raise ApiError(413, "overLimit", f"Maximum number of snapshots allowed ({q.snapshots}) exceeded")
        used = sum(r.size for r in live) + sum(r.size for r in snaps)
        if q.gigabytes is not None and gigabytes and used + gigabytes > q.gigabytes:
            raise ApiError(
                413,
                "overLimit",
                f"VolumeSizeExceedsAvailableQuota: Requested volume or snapshot exceeds allowed gigabytes "
                f"quota. Requested {gigabytes}G, quota is {q.gigabytes}G and {used}G has been consumed.",
            )

    def _volume_view(self, rec: Rec) -> dict[str, Any]:
        x = rec.extra
        atts = [a for a in self._atts.values() if a.volume_id == rec.id and a.status == "attached"]
        return {
            "id": rec.id,
            "name": rec.name or None,
            "description": x["description"],
            "size": rec.size,
            "status": rec.status,
            "volume_type": x["volume_type"],
            "volume_type_id": self.types[x["volume_type"]],
            "availability_zone": x["availability_zone"],
            "metadata": dict(rec.metadata),
            "snapshot_id": x["snapshot_id"],
            "source_volid": x["source_volid"],
            "multiattach": x["multiattach"],
            "bootable": "false",
            "encrypted": False,
            "replication_status": None,
            "consistencygroup_id": None,
            "user_id": "emulator-user",
            "os-vol-tenant-attr:tenant_id": self.project_id,
            "created_at": rec.created_at,
            "updated_at": None,
            "attachments": [
                {
                    "id": rec.id,
                    "attachment_id": a.id,
                    "volume_id": rec.id,
                    "server_id": a.instance,
                    "host_name": (a.connector or {}).get("host"),
                    "device": None,
                    "attached_at": a.attached_at,
                }
                for a in atts
            ],
            "links": [],
        }

    def _attachment_view(self, att: Att) -> dict[str, Any]:
        return {
            "id": att.id,
            "status": att.status,
            "volume_id": att.volume_id,
            "instance": att.instance,
            "attach_mode": att.mode,
            "attached_at": att.attached_at,
            "detached_at": None,
            "connection_info": dict(att.connection_info) if att.connection_info else None,
        }

    def _snapshot_view(self, rec: Rec) -> dict[str, Any]:
        return {
            "id": rec.id,
            "name": rec.name or None,
            "description": rec.extra["description"],
            "volume_id": rec.extra["volume_id"],
            "size": rec.size,
            "status": rec.status,
            "metadata": dict(rec.metadata),
            "created_at": rec.created_at,
            "updated_at": None,
            "progress": "100%" if rec.status == "available" else "0%",
        }

    # --- inspection ------------------------------------------------------------------------------------

    def dump(self) -> dict[str, list[dict[str, Any]]]:
        """Every record as the API would show it (for test assertions)."""
        with self._lock:
            vols = [self._volume_view(r) for r in list(self._vols.values()) if self._settle(r, self._vols)]
            snaps = [
                self._snapshot_view(r) for r in list(self._snaps.values()) if self._settle(r, self._snaps)
            ]
            atts = [{**self._attachment_view(a), "connector": a.connector} for a in self._atts.values()]
            return {"volumes": vols, "snapshots": snaps, "attachments": atts}


def matches(rec: Rec, filters: Mapping[str, Any], like_filters: bool) -> bool:
    """Cinder's list filters: exact name, ``name~`` (3.34+), status, metadata subset, AZ."""
    for key, value in filters.items():
        if key == "name~":
            ok = like_filters and str(value) in rec.name
        elif key == "metadata":
            ok = isinstance(value, Mapping) and all(rec.metadata.get(k) == v for k, v in value.items())
        else:
            actual = {"name": rec.name, "status": rec.status}.get(key, rec.extra.get(key))
            ok = actual == value
        if not ok:
            return False
    return True
