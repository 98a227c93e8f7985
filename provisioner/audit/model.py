"""What the audit reports: finding kinds, the finding record, the summary and the report (schema v1).

Why one module: the JSON schema in ``docs/audit.md`` is this module; a field added here is a field added
there (and ``SCHEMA_VERSION`` says when a consumer must look again). Kinds are grouped by the Cinder
object they are about (volume, snapshot, backup), so snapshot and backup kinds slot in beside the volume
ones and share the same fields.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal, Protocol

#: Bump when a field changes meaning or goes away (adding a field or a kind does not bump it).
SCHEMA_VERSION = 1


class Kind(StrEnum):
    """One kind of finding (``--kind`` takes these values)."""

    ORPHAN_VOLUME = "orphan-volume"
    ORPHAN_SNAPSHOT = "orphan-snapshot"
    ORPHAN_BACKUP = "orphan-backup"
    MISSING_VOLUME = "missing-volume"
    MISSING_SNAPSHOT = "missing-snapshot"
    WRONG_VOLUME = "wrong-volume"
    DUPLICATE = "duplicate"
    STUCK = "stuck"
    SIZE_DRIFT = "size-drift"
    ATTACHMENT_DRIFT = "attachment-drift"
    RELEASED_RETAINED = "released-retained"


#: Kinds ``--fix`` may clean up (it deletes the Cinder object; nothing else is ever deleted).
FIXABLE = frozenset({Kind.ORPHAN_VOLUME, Kind.ORPHAN_SNAPSHOT, Kind.ORPHAN_BACKUP})
#: Kinds the controller raises a Warning Event for, on the PV.
PV_WARNING_KINDS = frozenset({Kind.MISSING_VOLUME, Kind.SIZE_DRIFT})

CinderKind = Literal["volume", "snapshot", "backup"]

ACTIONS: Mapping[Kind, str] = {
    Kind.ORPHAN_VOLUME: "delete the volume (cinder-provisioner audit --fix orphan-volume) once it is "
    "confirmed unused",
    Kind.ORPHAN_SNAPSHOT: "delete the snapshot (--fix orphan-snapshot) once it is confirmed unused",
    Kind.ORPHAN_BACKUP: "delete the backup (--fix orphan-backup) once it is confirmed unused",
    Kind.MISSING_VOLUME: "the PV's data is gone: restore from a backup or snapshot, or delete the PV and "
    "its claim",
    Kind.MISSING_SNAPSHOT: "the snapshot is gone: delete the VolumeSnapshot / VolumeSnapshotContent",
    Kind.WRONG_VOLUME: "the PV points at a volume tagged for someone else: check who uses it before "
    "anything else",
    Kind.DUPLICATE: "keep the volume the PV references; delete the others after checking them",
    Kind.STUCK: "check the Cinder volume service; reset the status (cinder reset-state) only when sure",
    Kind.SIZE_DRIFT: "resize to agree: extend the volume or correct the PV capacity",
    Kind.ATTACHMENT_DRIFT: "remove the stale Cinder attachment, or re-export the volume for its PV",
    Kind.RELEASED_RETAINED: "kept on purpose (reclaimPolicy Retain): delete the PV and the volume when the "
    "data is no longer needed",
}


class BackupLike(Protocol):
    """What the audit reads of a Cinder backup (``provisioner.domain.model.Backup`` fits)."""

    @property
    def id(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def volume_id(self) -> str: ...
    @property
    def size_gib(self) -> int: ...
    @property
    def status(self) -> str: ...
    @property
    def metadata(self) -> Mapping[str, str]: ...
    @property
    def created_at(self) -> Any: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class Finding:
    """One thing an admin should look at. Sorted and serialized as is (``to_json``)."""

    kind: Kind
    cloud: str
    #: Which Cinder object: its kind and id ("" when the finding is about a Kubernetes object alone).
    cinder_kind: CinderKind = "volume"
    cinder_id: str = ""
    cinder_name: str = ""
    cinder_status: str = ""
    #: The Kubernetes object concerned ("PersistentVolume", "PersistentVolumeClaim", "VolumeSnapshotContent")
    k8s_kind: str = ""
    k8s_namespace: str = ""
    k8s_name: str = ""
    #: Seconds since the Cinder object was created (None when Cinder did not say).
    age_seconds: float | None = None
    size_gib: int = 0
    storage_class: str = ""
    volume_type: str = ""
    #: The cluster tag the Cinder object carries ("" = none).
    cluster: str = ""
    #: Cinder attachments the volume has (an attached volume is never deleted by ``--fix``).
    attachments: int = 0
    detail: str = ""
    action: str = ""

    def sort_key(self) -> tuple[str, str, str, str, str]:
        return (self.kind.value, self.cloud, self.cinder_id, self.k8s_namespace, self.k8s_name)

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind.value,
            "cloud": self.cloud,
            "cinder": {
                "kind": self.cinder_kind,
                "id": self.cinder_id or None,
                "name": self.cinder_name or None,
                "status": self.cinder_status or None,
                "cluster": self.cluster or None,
                "attachments": self.attachments,
            },
            "kubernetes": {
                "kind": self.k8s_kind or None,
                "namespace": self.k8s_namespace or None,
                "name": self.k8s_name or None,
            },
            "age_seconds": None if self.age_seconds is None else round(self.age_seconds, 1),
            "size_gib": self.size_gib,
            "storage_class": self.storage_class or None,
            "volume_type": self.volume_type or None,
            "detail": self.detail,
            "action": self.action,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class Tally:
    """Count and GiB of findings in one group."""

    count: int = 0
    gib: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class Summary:
    """Findings per kind, per StorageClass and per volume type, with their GiB."""

    by_kind: Mapping[str, Tally] = field(default_factory=dict)
    by_storage_class: Mapping[str, Tally] = field(default_factory=dict)
    by_volume_type: Mapping[str, Tally] = field(default_factory=dict)

    @classmethod
    def of(cls, findings: Sequence[Finding]) -> Summary:
        def group(key: str) -> dict[str, Tally]:
            out: dict[str, Tally] = {}
            for f in findings:
                name = str(getattr(f, key)) or "(none)"
                t = out.get(name, Tally())
                out[name] = Tally(count=t.count + 1, gib=t.gib + f.size_gib)
            return dict(sorted(out.items()))

        return cls(
            by_kind=group("kind"),
            by_storage_class=group("storage_class"),
            by_volume_type=group("volume_type"),
        )

    def to_json(self) -> dict[str, Any]:
        def plain(m: Mapping[str, Tally]) -> dict[str, Any]:
            return {k: {"count": t.count, "gib": t.gib} for k, t in m.items()}

        return {
            "by_kind": plain(self.by_kind),
            "by_storage_class": plain(self.by_storage_class),
            "by_volume_type": plain(self.by_volume_type),
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class Scanned:
    """How many objects the audit compared (so an empty report can be told from an empty scan)."""

    volumes: int = 0
    snapshots: int = 0
    backups: int = 0
    persistent_volumes: int = 0
    claims: int = 0
    snapshot_contents: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class Report:
    """The audit's answer."""

    cluster_id: str
    clouds: tuple[str, ...]
    generated_at: float
    findings: tuple[Finding, ...]
    scanned: Scanned = field(default_factory=Scanned)
    #: Clouds or object types that could not be read (the exit code is then 2).
    errors: tuple[str, ...] = ()

    @property
    def summary(self) -> Summary:
        return Summary.of(self.findings)

    def only(self, kinds: frozenset[Kind] | None) -> Report:
        """The same report with only ``kinds`` (None = all)."""
        if kinds is None:
            return self
        return Report(
            cluster_id=self.cluster_id,
            clouds=self.clouds,
            generated_at=self.generated_at,
            findings=tuple(f for f in self.findings if f.kind in kinds),
            scanned=self.scanned,
            errors=self.errors,
        )

    def to_json(self) -> dict[str, Any]:
        s = self.scanned
        return {
            "schema_version": SCHEMA_VERSION,
            "cluster_id": self.cluster_id,
            "clouds": list(self.clouds),
            "generated_at": round(self.generated_at, 3),
            "scanned": {
                "volumes": s.volumes,
                "snapshots": s.snapshots,
                "backups": s.backups,
                "persistent_volumes": s.persistent_volumes,
                "claims": s.claims,
                "snapshot_contents": s.snapshot_contents,
            },
            "errors": list(self.errors),
            "findings": [f.to_json() for f in self.findings],
            "summary": self.summary.to_json(),
        }


def parse_kinds(text: str, *, allowed: frozenset[Kind] | None = None) -> frozenset[Kind]:
    """``"orphan-volume,stuck"`` → kinds; an unknown name raises ValueError naming it and the choices."""
    choices = allowed if allowed is not None else frozenset(Kind)
    out: set[Kind] = set()
    for raw in text.split(","):
        name = raw.strip()
        if not name:
            continue
        try:
            kind = Kind(name)
        except ValueError:
            kind = None
        if kind is None or kind not in choices:
            known = ", ".join(sorted(k.value for k in choices))
            raise ValueError(f"unknown kind {name!r} (choose from {known})")
        out.add(kind)
    if not out:
        raise ValueError("no kind given")
    return frozenset(out)
