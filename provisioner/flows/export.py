"""Exporting a Cinder volume to the cluster, and giving it back.

Central mode: the controller calls Cinder with one configured connector (the cluster-wide initiator IQN
for iSCSI). The v3 attachments API is preferred (create → complete) so a Cinder admin sees an honest
attachment; old clouds fall back to reserve + initialize_connection. A re-run after a crash finds the
volume already exported: stale attachments of our own unfinished attempt are removed first, so Cinder
never accumulates attachments nobody will delete.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from provisioner.domain.errors import CinderConflict, CinderNotFound
from provisioner.domain.model import AttachmentId, ConnectionInfo, ExportMode, Volume, VolumeId
from provisioner.flows.context import Context
from provisioner.ports import CinderPort


@dataclass(frozen=True, slots=True, kw_only=True)
class Exported:
    """The result of exporting one volume."""

    connection_info: ConnectionInfo
    attachment_id: AttachmentId | None
    mode: ExportMode


def export_volume(ctx: Context, cinder: CinderPort, volume: Volume) -> Exported:
    """Export ``volume`` with the configured connector; idempotent across crashes."""
    connector = ctx.settings.connector
    if cinder.capabilities.attachments:
        for stale in volume.attachment_ids:
            cinder.delete_attachment(stale)
        attachment = cinder.create_attachment(volume.id, connector)
        if attachment.connection_info is None:
            raise CinderConflict(
                f"attachment {attachment.id} for volume {volume.id} carries no connection info",
                operation="attachment_create",
            )
        cinder.complete_attachment(attachment.id)
        return Exported(
            connection_info=attachment.connection_info, attachment_id=attachment.id, mode="attachment"
        )
    if volume.status == "available":
        cinder.reserve(volume.id)
    info = cinder.initialize_connection(volume.id, connector)
    return Exported(connection_info=info, attachment_id=None, mode="legacy")


def unexport(
    ctx: Context,
    cinder: CinderPort,
    volume_id: VolumeId,
    attachment_id: AttachmentId | None,
    mode: ExportMode,
    *,
    attachment_ids: Sequence[AttachmentId] = (),
) -> None:
    """Undo ``export_volume``: delete the attachment(s) or terminate + unreserve. Missing = done."""
    ids = list(dict.fromkeys([*([attachment_id] if attachment_id else []), *attachment_ids]))
    if mode == "attachment" or ids:
        for aid in ids:
            cinder.delete_attachment(aid)
        return
    try:
        cinder.terminate_connection(volume_id, ctx.settings.connector)
    except (CinderNotFound, CinderConflict):
        pass
    try:
        cinder.unreserve(volume_id)
    except (CinderNotFound, CinderConflict):
        pass


def cleanup_volume(
    ctx: Context,
    cinder: CinderPort,
    volume_id: VolumeId,
    attachment_id: AttachmentId | None,
    mode: ExportMode,
    *,
    attachment_ids: Sequence[AttachmentId] = (),
    cascade: bool = False,
) -> None:
    """Unexport and start deleting a volume (404 anywhere = already gone)."""
    try:
        unexport(ctx, cinder, volume_id, attachment_id, mode, attachment_ids=attachment_ids)
    except CinderNotFound:
        pass
    cinder.delete_volume(volume_id, cascade=cascade)
