"""The Cinder emulator's state: volumes, snapshots, backups and attachments, with Cinder's status rules.

Why: the HTTP layer only parses and renders; every rule that real Cinder enforces (what status allows
delete / extend / attach, snapshots block delete unless cascade, quotas) lives here, in one place, so the
contract suite can find where the emulator diverges from real Cinder. Statuses that real Cinder reaches
asynchronously (creating → available, deleting → gone) are computed lazily from the clock when a record is
read, so 1,000 volumes cost no threads or timers.

Volumes carry an opaque ``content`` marker (tests write it, ``emulator.content(volume_id)`` reads it): a
snapshot, clone, backup and restore copy it like the real thing copies blocks, so an end-to-end test can
prove that a restored claim holds the data of the claim it came from.
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
    backup_seconds: float = 0.0
    restore_seconds: float = 0.0


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
    kind: str  # "volume" | "snapshot" | "backup"
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
        self._backups: dict[str, Rec] = {}
        self.backup_service_up = True  # GET /os-services?binary=cinder-backup: state up (else down)
        self.types = {name: str(uuid.uuid5(uuid.NAMESPACE_URL, "type:" + name)) for name in profiles}
        self._profiles = dict(profiles)

    # --- lazy transitions ---------------------------------------------------------------------------

    def _settle(self, rec: Rec, table: dict[str, Rec]) -> bool:
        """Apply a due transition (and its ``on_settle`` effect); False when the record is gone."""
        if rec.pending is not None and self._clock() >= rec.pending[1]:
            target = rec.pending[0]
            rec.pending = None
            effect = rec.extra.pop("on_settle", None)
            if effect is not None:
                effect()
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

    def _attached_by_volume(self) -> dict[str, list[Att]]:
        """volume id → its attached attachments (one pass, for views of many volumes)."""
        out: dict[str, list[Att]] = {}
        for a in self._atts.values():
            if a.status == "attached":
                out.setdefault(a.volume_id, []).append(a)
        return out

    def _volume_view(self, rec: Rec, attached: Mapping[str, list[Att]] | None = None) -> dict[str, Any]:
        x = rec.extra
        if attached is not None:
            atts = attached.get(rec.id, [])
        else:
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
            backups = [
                self._backup_view(r, with_metadata=True)
                for r in list(self._backups.values())
                if self._settle(r, self._backups)
            ]
            return {"volumes": vols, "snapshots": snaps, "attachments": atts, "backups": backups}

    def _backup_view(self, rec: Rec, *, with_metadata: bool) -> dict[str, Any]:
        x = rec.extra
        view = {
            "id": rec.id,
            "name": rec.name or None,
            "description": x["description"],
            "volume_id": x["volume_id"],
            "snapshot_id": None,
            "status": rec.status,
            "size": rec.size,
            "object_count": 0,
            "container": "emulator-backups",
            "availability_zone": "nova",
            "created_at": rec.created_at,
            "updated_at": None,
            "data_timestamp": rec.created_at,
            "fail_reason": x.get("fail_reason"),
            "is_incremental": x["parent_id"] is not None,
            "has_dependent_backups": any(
                b.extra["parent_id"] == rec.id for b in self._backups.values() if b.status != "deleting"
            ),
            "links": [],
        }
        if with_metadata:  # 3.43+
            view["metadata"] = dict(rec.metadata)
        return view

    def content(self, volume_id: str) -> str | None:
        """The content marker of a volume (None = never written: a blank volume)."""
        with self._lock:
            return self._vol(volume_id).extra.get("content")

    def write_content(self, volume_id: str, marker: str) -> None:
        """What a workload would write onto the volume (test hook, not an API)."""
        with self._lock:
            self._vol(volume_id).extra["content"] = marker


TIME_OPERATORS = ("gt", "gte", "eq", "neq", "lt", "lte")  # Cinder's time comparison operators (3.31+)
_COMPARE: dict[str, Callable[[datetime, datetime], bool]] = {
    "gt": lambda a, b: a > b,
    "gte": lambda a, b: a >= b,
    "eq": lambda a, b: a == b,
    "neq": lambda a, b: a != b,
    "lt": lambda a, b: a < b,
    "lte": lambda a, b: a <= b,
}


def matches(rec: Rec, filters: Mapping[str, Any], like_filters: bool) -> bool:
    """Cinder's list filters: exact name, ``name~`` (3.34+), status, metadata subset, AZ, and
    ``created_at`` time comparisons (3.31+, parsed by the route into {operator: time}; Cinder ORs them,
    so ``gt:A,lt:B`` lists what is after A *or* before B, not a range)."""
    for key, value in filters.items():
        if key == "name~":
            ok = like_filters and str(value) in rec.name
        elif key == "created_at":
            created = datetime.fromisoformat(rec.created_at).replace(tzinfo=UTC)
            ok = any(_COMPARE[op](created, when) for op, when in value.items())
        elif key == "metadata":
            ok = isinstance(value, Mapping) and all(rec.metadata.get(k) == v for k, v in value.items())
        else:
            actual = {"name": rec.name, "status": rec.status}.get(key, rec.extra.get(key))
            ok = actual == value
        if not ok:
            return False
    return True
