"""Ports: the interfaces the core needs from the outside world (every Protocol of the controller lives here).

Each port has a real adapter (``provisioner/adapters``) and is exercised by one contract suite
(``tests/contract``) against the emulator and, where it exists here, the real thing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any, Protocol

from provisioner.domain.model import (
    Attachment,
    AttachmentId,
    Backup,
    BackupId,
    BackupRestore,
    CinderCapabilities,
    ConnectionInfo,
    Connector,
    CreateVolumeRequest,
    Snapshot,
    SnapshotId,
    Volume,
    VolumeId,
)


class CinderPort(Protocol):
    """Block Storage v3, as the provisioner uses it. Every method raises only ``errors.CinderError``s."""

    @property
    def capabilities(self) -> CinderCapabilities:
        """What the negotiated microversion allows."""
        ...

    def create_volume(
        self, request: CreateVolumeRequest, *, before_send: Callable[[], None] | None = None
    ) -> Volume:
        """Create (never retried). ``before_send`` runs once the call holds its in-flight slot, right before
        the request goes out; if it raises, nothing is sent and its exception propagates as it is."""
        ...

    def get_volume(self, volume_id: VolumeId) -> Volume:
        """Raises CinderNotFound."""
        ...

    def find_volume(self, *, name: str, cluster: str) -> Volume | None:
        """The one volume with this name whose metadata carries our cluster tag; two → CinderAmbiguous."""
        ...

    def list_volumes(
        self, *, metadata: Mapping[str, str], created_since: float | None = None
    ) -> Iterator[Volume]:
        """All volumes whose metadata contains ``metadata`` (follows pagination); with ``created_since``
        (Unix seconds, needs ``capabilities.time_filters``) only those created at or after it."""
        ...

    def delete_volume(self, volume_id: VolumeId, *, cascade: bool = False) -> None:
        """Start deletion; 404 counts as success."""
        ...

    def extend_volume(self, volume_id: VolumeId, new_size_gib: int) -> None: ...

    def set_volume_metadata(self, volume_id: VolumeId, metadata: Mapping[str, str]) -> None:
        """Merge ``metadata`` into the volume's (keys not named stay as they are); CinderNotFound."""
        ...

    # v3 attachments (3.27+, complete 3.44+)
    def create_attachment(self, volume_id: VolumeId, connector: Connector) -> Attachment: ...

    def complete_attachment(self, attachment_id: AttachmentId) -> None: ...

    def delete_attachment(self, attachment_id: AttachmentId) -> None:
        """404 counts as success."""
        ...

    # legacy export
    def reserve(self, volume_id: VolumeId) -> None: ...

    def initialize_connection(self, volume_id: VolumeId, connector: Connector) -> ConnectionInfo: ...

    def terminate_connection(self, volume_id: VolumeId, connector: Connector) -> None: ...

    def unreserve(self, volume_id: VolumeId) -> None: ...

    # snapshots
    def create_snapshot(
        self, volume_id: VolumeId, *, name: str, metadata: Mapping[str, str], force: bool = False
    ) -> Snapshot: ...

    def get_snapshot(self, snapshot_id: SnapshotId) -> Snapshot: ...

    def list_snapshots(
        self, *, metadata: Mapping[str, str] | None = None, volume_id: VolumeId | None = None
    ) -> Iterator[Snapshot]: ...

    def delete_snapshot(self, snapshot_id: SnapshotId) -> None:
        """404 counts as success."""
        ...

    # backups (the cinder-backup service; gate on ``has_backup_service``)
    def has_backup_service(self) -> bool:
        """Whether a cinder-backup service is up and enabled (False: backups cannot be made here)."""
        ...

    def create_backup(
        self,
        volume_id: VolumeId,
        *,
        name: str,
        metadata: Mapping[str, str],
        incremental: bool = False,
        force: bool = False,
    ) -> Backup:
        """Start a backup (not retried). ``incremental`` needs an earlier available backup of the volume
        (CinderBadRequest otherwise); ``force`` backs up an in-use volume."""
        ...

    def get_backup(self, backup_id: BackupId) -> Backup:
        """Raises CinderNotFound."""
        ...

    def list_backups(
        self, *, metadata: Mapping[str, str] | None = None, volume_id: VolumeId | None = None
    ) -> Iterator[Backup]:
        """Backups filtered by metadata (3.43+) and/or volume (follows pagination)."""
        ...

    def delete_backup(self, backup_id: BackupId) -> None:
        """Start deletion; 404 counts as success."""
        ...

    def restore_backup(
        self, backup_id: BackupId, *, volume_id: VolumeId | None = None, name: str | None = None
    ) -> BackupRestore:
        """Restore into ``volume_id`` (available, at least the backup's size), or into a new volume Cinder
        creates (named ``name``). Not retried."""
        ...


# ---- Kubernetes -------------------------------------------------------------------------------------

Obj = dict[str, Any]


class Cache(Protocol):
    """Read access to an informer's cache."""

    def get(self, key: str) -> Obj | None: ...

    def values(self) -> list[Obj]: ...


class KubeWriter(Protocol):
    """The Kubernetes writes reconcile performs (provisioner.adapters.kube.KubeAdapter)."""

    def get(self, resource: str, name: str, *, namespace: str | None = None) -> Obj: ...

    def create(self, resource: str, obj: Mapping[str, Any], *, namespace: str | None = None) -> Obj: ...

    def patch(
        self,
        resource: str,
        name: str,
        patch: Any,
        *,
        namespace: str | None = None,
        patch_type: Any = "merge",
        subresource: str | None = None,
    ) -> Obj: ...

    def delete(
        self,
        resource: str,
        name: str,
        *,
        namespace: str | None = None,
        uid: str | None = None,
        propagation: str | None = None,
    ) -> None: ...


class EventWriter(Protocol):
    """The slice of the Kubernetes adapter the recorder needs."""

    def get(self, resource: str, name: str, *, namespace: str | None = None) -> Any: ...

    def create(self, resource: str, obj: Mapping[str, Any], *, namespace: str | None = None) -> Any: ...

    def patch(
        self, resource: str, name: str, patch: Any, *, namespace: str | None = None, patch_type: Any = ...
    ) -> Any: ...


class ListWatcher(Protocol):
    """What an informer needs from the Kubernetes adapter."""

    def list(self, resource: str) -> tuple[list[Obj], str]: ...

    def watch(
        self, resource: str, *, resource_version: str, timeout_seconds: int = 300
    ) -> Iterator[tuple[str, Obj]]: ...


class LeaseClient(Protocol):
    """The slice of the Kubernetes adapter the elector needs."""

    def get(self, resource: str, name: str, *, namespace: str | None = None) -> dict[str, Any]: ...

    def create(self, resource: str, obj: Any, *, namespace: str | None = None) -> dict[str, Any]: ...

    def replace(self, resource: str, obj: Any, *, namespace: str | None = None) -> dict[str, Any]: ...


# ---- time -----------------------------------------------------------------------------------------


class Clock(Protocol):
    """The one source of time: ``monotonic`` for delays, backoff and deadlines; ``wall`` for what is
    written down (timestamps other replicas compare). Tests inject a fake one."""

    def monotonic(self) -> float: ...

    def wall(self) -> float: ...
