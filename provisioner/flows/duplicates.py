"""Removing duplicate Cinder volumes of one claim.

Duplicates can only come from a create that was sent by a replica just before it lost its lease and that
landed after the new leader looked the volume up (fencing stops *sending*, not *landing*; the
create-attempt annotation makes this rare). They are all ours beyond doubt — name ``pvc-<uid>``, our
cluster tag and the claim's uid in their metadata — and none is referenced by a PV except possibly the
``keep`` one, so the others are unexported and deleted, each with an event. Never silently: the event
names the volume and says why.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import structlog

from provisioner.domain import names
from provisioner.domain.errors import NotLeader
from provisioner.domain.model import DELETING, ExportMode, Volume, VolumeId
from provisioner.flows.claims import EXPORTABLE, WAITING
from provisioner.flows.context import Context, Obj
from provisioner.flows.export import cleanup_volume
from provisioner.ports import CinderPort

log = structlog.get_logger(__name__)

DUPLICATE_DELETED = "DuplicateVolumeDeleted"


def volumes_of_claim(ctx: Context, cinder: CinderPort, claim_uid: str) -> list[Volume]:
    """Every volume this cluster created for the claim (any status)."""
    return list(
        cinder.list_volumes(
            metadata={names.META_CLUSTER: ctx.settings.cluster_id, names.META_PVC_UID: claim_uid}
        )
    )


def choose_keeper(volumes: Sequence[Volume]) -> Volume:
    """The volume furthest along: exported first, then available, then anything else."""

    def rank(v: Volume) -> int:
        if v.status in EXPORTABLE and v.status != "available":
            return 0
        if v.status == "available":
            return 1
        return 2

    return sorted(volumes, key=lambda v: (rank(v), v.id))[0]


@dataclass(frozen=True, slots=True, kw_only=True)
class Sweep:
    """What to do about a claim's volumes other than ``keep``: delete some, wait for others."""

    delete: tuple[Volume, ...] = ()
    #: still deleting, or busy (creating, extending, …): look again later
    settling: tuple[VolumeId, ...] = ()
    keep: VolumeId | None = None

    @property
    def settled(self) -> bool:
        return not self.delete and not self.settling


def plan_sweep(volumes: Sequence[Volume], keep: VolumeId | None) -> Sweep:
    """Which of ``volumes`` to delete now and which to wait for (never ``keep``). Pure."""
    delete: list[Volume] = []
    settling: list[VolumeId] = []
    for v in volumes:
        if v.id == keep:
            continue
        if v.status == DELETING or v.status in WAITING:
            settling.append(v.id)
        else:
            delete.append(v)
    return Sweep(delete=tuple(delete), settling=tuple(settling), keep=keep)


def execute_sweep(ctx: Context, cinder: CinderPort, about: Obj, sweep: Sweep) -> None:
    """Unexport and delete each volume of ``sweep.delete``, each with a Normal event naming it."""
    for v in sweep.delete:
        mode: ExportMode = "attachment" if v.attachment_ids else "legacy"
        cleanup_volume(ctx, cinder, v.id, None, mode, attachment_ids=v.attachment_ids)
        log.warning("duplicate_volume_deleted", volume_id=v.id, kept=sweep.keep)
        creator = v.metadata.get(names.META_CREATED_BY, "?")
        ctx.events.event(
            about,
            "Normal",
            DUPLICATE_DELETED,
            f"deleted duplicate Cinder volume {v.id} (created by {creator} during a leader change); "
            f"kept {sweep.keep or 'none'}",
        )


def remove_duplicates(
    ctx: Context, cinder: CinderPort, about: Obj, volumes: Sequence[Volume], keep: VolumeId | None
) -> bool:
    """Delete every volume but ``keep``; True when none is left (others may still be settling).

    Without the lease nothing is deleted (the fenced port refuses) and the answer is False: not settled.
    """
    sweep = plan_sweep(volumes, keep)
    try:
        execute_sweep(ctx, cinder, about, sweep)
    except NotLeader:
        return False
    return sweep.settled
