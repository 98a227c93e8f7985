"""Fencing at every Cinder mutation: a port that refuses to change the cloud unless we lead.

A replica that lost (or is unsure of) its lease must not send a create, delete, export or unexport: a new
leader may already be acting on the same claim. Checking ``is_leader()`` in each flow before each call is
easy to forget for the next mutation; this wrapper checks it right before every mutating call and raises
``NotLeader`` instead of calling. Reads pass through (a standby may look). ``Context.cinder()`` returns
the fenced port, so no flow can reach an unfenced one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Final

from provisioner.domain import fence
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
from provisioner.ports import CinderPort

#: CinderPort members that only read. Every other member is a mutation and is fenced (the unit test
#: checks that this set and MUTATIONS together cover the Protocol exactly).
READS: Final = frozenset(
    {
        "capabilities",
        "get_volume",
        "find_volume",
        "list_volumes",
        "get_snapshot",
        "list_snapshots",
        "has_backup_service",
        "get_backup",
        "list_backups",
    }
)
MUTATIONS: Final = frozenset(
    {
        "create_volume",
        "delete_volume",
        "extend_volume",
        "set_volume_metadata",
        "create_attachment",
        "complete_attachment",
        "delete_attachment",
        "reserve",
        "initialize_connection",
        "terminate_connection",
        "unreserve",
        "create_snapshot",
        "delete_snapshot",
        "create_backup",
        "delete_backup",
        "restore_backup",
    }
)


class FencedCinder:
    """A CinderPort that calls ``is_leader()`` before each mutation and raises NotLeader when False, and
    again (``domain.fence``) once the adapter holds its in-flight slot, right before the request is sent."""

    __slots__ = ("_inner", "_is_leader")

    def __init__(self, inner: CinderPort, is_leader: Callable[[], bool]) -> None:
        self._inner = inner
        self._is_leader = is_leader

    @property
    def inner(self) -> CinderPort:
        """The unfenced port (tests and diagnostics only)."""
        return self._inner

    # reads
    @property
    def capabilities(self) -> CinderCapabilities:
        return self._inner.capabilities

    def get_volume(self, volume_id: VolumeId) -> Volume:
        return self._inner.get_volume(volume_id)

    def find_volume(self, *, name: str, cluster: str) -> Volume | None:
        return self._inner.find_volume(name=name, cluster=cluster)

    def list_volumes(
        self, *, metadata: Mapping[str, str], created_since: float | None = None
    ) -> Iterator[Volume]:
        return self._inner.list_volumes(metadata=metadata, created_since=created_since)

    def get_snapshot(self, snapshot_id: SnapshotId) -> Snapshot:
        return self._inner.get_snapshot(snapshot_id)

    def list_snapshots(
        self, *, metadata: Mapping[str, str] | None = None, volume_id: VolumeId | None = None
    ) -> Iterator[Snapshot]:
        return self._inner.list_snapshots(metadata=metadata, volume_id=volume_id)

    def has_backup_service(self) -> bool:
        return self._inner.has_backup_service()

    def get_backup(self, backup_id: BackupId) -> Backup:
        return self._inner.get_backup(backup_id)

    def list_backups(
        self, *, metadata: Mapping[str, str] | None = None, volume_id: VolumeId | None = None
    ) -> Iterator[Backup]:
        return self._inner.list_backups(metadata=metadata, volume_id=volume_id)

    # mutations
    def create_volume(
        self, request: CreateVolumeRequest, *, before_send: Callable[[], None] | None = None
    ) -> Volume:
        with fence.guarded("create_volume", self._is_leader):
            return self._inner.create_volume(request, before_send=before_send)

    def delete_volume(self, volume_id: VolumeId, *, cascade: bool = False) -> None:
        with fence.guarded("delete_volume", self._is_leader):
            self._inner.delete_volume(volume_id, cascade=cascade)

    def extend_volume(self, volume_id: VolumeId, new_size_gib: int) -> None:
        with fence.guarded("extend_volume", self._is_leader):
            self._inner.extend_volume(volume_id, new_size_gib)

    def set_volume_metadata(self, volume_id: VolumeId, metadata: Mapping[str, str]) -> None:
        with fence.guarded("set_volume_metadata", self._is_leader):
            self._inner.set_volume_metadata(volume_id, metadata)

    def create_attachment(self, volume_id: VolumeId, connector: Connector) -> Attachment:
        with fence.guarded("create_attachment", self._is_leader):
            return self._inner.create_attachment(volume_id, connector)

    def complete_attachment(self, attachment_id: AttachmentId) -> None:
        with fence.guarded("complete_attachment", self._is_leader):
            self._inner.complete_attachment(attachment_id)

    def delete_attachment(self, attachment_id: AttachmentId) -> None:
        with fence.guarded("delete_attachment", self._is_leader):
            self._inner.delete_attachment(attachment_id)

    def reserve(self, volume_id: VolumeId) -> None:
        with fence.guarded("reserve", self._is_leader):
            self._inner.reserve(volume_id)

    def initialize_connection(self, volume_id: VolumeId, connector: Connector) -> ConnectionInfo:
        with fence.guarded("initialize_connection", self._is_leader):
            return self._inner.initialize_connection(volume_id, connector)

    def terminate_connection(self, volume_id: VolumeId, connector: Connector) -> None:
        with fence.guarded("terminate_connection", self._is_leader):
            self._inner.terminate_connection(volume_id, connector)

    def unreserve(self, volume_id: VolumeId) -> None:
        with fence.guarded("unreserve", self._is_leader):
            self._inner.unreserve(volume_id)

    def create_snapshot(
        self, volume_id: VolumeId, *, name: str, metadata: Mapping[str, str], force: bool = False
    ) -> Snapshot:
        with fence.guarded("create_snapshot", self._is_leader):
            return self._inner.create_snapshot(volume_id, name=name, metadata=metadata, force=force)

    def delete_snapshot(self, snapshot_id: SnapshotId) -> None:
        with fence.guarded("delete_snapshot", self._is_leader):
            self._inner.delete_snapshot(snapshot_id)

    def create_backup(
        self,
        volume_id: VolumeId,
        *,
        name: str,
        metadata: Mapping[str, str],
        incremental: bool = False,
        force: bool = False,
    ) -> Backup:
        with fence.guarded("create_backup", self._is_leader):
            return self._inner.create_backup(
                volume_id, name=name, metadata=metadata, incremental=incremental, force=force
            )

    def delete_backup(self, backup_id: BackupId) -> None:
        with fence.guarded("delete_backup", self._is_leader):
            self._inner.delete_backup(backup_id)

    def restore_backup(
        self, backup_id: BackupId, *, volume_id: VolumeId | None = None, name: str | None = None
    ) -> BackupRestore:
        with fence.guarded("restore_backup", self._is_leader):
            return self._inner.restore_backup(backup_id, volume_id=volume_id, name=name)
