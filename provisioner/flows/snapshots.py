"""The snapshot flow: our controller plays the CSI snapshotter sidecar for contents of our driver.

The common snapshot-controller creates a VolumeSnapshotContent for a dynamic VolumeSnapshot (driver from
its VolumeSnapshotClass, ``source.volumeHandle`` = the PV's CSI volume handle = the Cinder volume id) and
binds the two; for contents whose ``spec.driver`` is ``cinder.netvol.io`` this flow does the driver's part:

1. **Persist intent before touching Cinder**: our finalizer ``netvol.io/cinder-snapshot`` on the content
   (with the kind and cloud it will use), so no deletion can orphan what we are about to make.
2. Find the Cinder snapshot by our tags (cluster + content name) — adopt it, whoever made it — else create
   it: name ``snapshot-<VolumeSnapshot uid>``, tags cluster / snapshot namespace, name, uid / content /
   source claim / creator, ``force`` for in-use volumes when the class says ``force-create``.
3. Wait by requeue; ``available`` → content ``status.snapshotHandle``, ``creationTime``, ``restoreSize``,
   ``readyToUse``; ``error`` → ``status.error`` with the reason, a Warning, no retry (the snapshot is kept
   for the deletion to give back). Duplicates (a create that landed during a leader change) are deleted.
4. Pre-provisioned contents (``source.snapshotHandle`` = an existing Cinder snapshot id): validated
   (exists, available) and marked ready, or ``status.error`` naming what is wrong.
5. Deletion (a ``deletionTimestamp`` and the common controller's ``…/volumesnapshot-being-deleted``
   annotation, or an unbound pre-provisioned content): ``Retain`` → let the content go; ``Delete`` → delete
   every Cinder snapshot of the content (404 = done), wait until gone, drop our finalizer. Cinder keeping a
   snapshot (dependent volumes) → an Event and a slow retry.

Shape (STYLE.md): ``observe`` reads the caches and Cinder into ``Observed``; ``decide`` (here) is pure;
``execute`` performs exactly the step. Every Cinder mutation goes through the fenced port
(``Context.cinder``). Observe and execute live in ``snapshot_execute``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import structlog

from provisioner.domain import names
from provisioner.domain.errors import (
    InvalidInput,
    ProvisionerError,
)
from provisioner.domain.model import (
    AVAILABLE,
    CREATING,
    DELETING,
    ERROR,
    IN_USE,
    Volume,
    VolumeId,
)
from provisioner.flows.context import Context
from provisioner.flows.giveback import Backoff, Done, Fail, HoldCloud, Refuse, Wait, hold_or_fail
from provisioner.flows.snapshot_params import SnapshotKind, SnapshotParams
from provisioner.ports import Cache

log = structlog.get_logger(__name__)

SNAPSHOT_API_VERSION = "snapshot.storage.k8s.io/v1"
#: The common snapshot-controller's "delete the snapshot behind this content now" annotation.
ANN_BEING_DELETED = "snapshot.storage.kubernetes.io/volumesnapshot-being-deleted"
#: Slow retry while Cinder keeps a snapshot that volumes still depend on.
DEPENDENTS_RETRY_SECONDS = 60.0
#: From 3.66 Cinder snapshots in-use volumes without ``force``.
INUSE_SNAPSHOT_MICROVERSION = (3, 66)

# Event reasons (the CSI snapshotter's where it has one)
SNAPSHOT_CREATED = "SnapshotCreated"
SNAPSHOT_CREATION_FAILED = "SnapshotCreationFailed"
SNAPSHOT_DELETE_FAILED = "SnapshotDeleteFailed"
SNAPSHOT_DELETE_WAITING = "SnapshotDeleteWaiting"


@dataclass(frozen=True, slots=True, kw_only=True)
class SnapshotContext:
    """What the snapshot flow needs besides the controller's Context: the two snapshot caches."""

    ctx: Context
    contents: Cache
    snapshot_classes: Cache


# --- observed ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class ContentFacts:
    """The fields of a VolumeSnapshotContent the flow depends on (raw values, as found)."""

    name: str
    uid: str = ""
    resource_version: str | None = None
    driver: str = names.CSI_DRIVER_NAME
    policy: str = "Delete"
    deleting: bool = False
    being_deleted: bool = False
    finalizers: tuple[str, ...] = ()
    volume_handle: str | None = None
    source_handle: str | None = None
    status_handle: str | None = None
    ready: bool = False
    error_message: str | None = None
    class_name: str = ""
    ref_namespace: str = ""
    ref_name: str = ""
    ref_uid: str = ""
    #: the kind / cloud written with our finalizer (what deletion uses when the class is gone)
    kind: str | None = None
    cloud: str | None = None
    created_at: float | None = None
    deleted_at: float | None = None

    @property
    def ours(self) -> bool:
        return self.driver == names.CSI_DRIVER_NAME

    @property
    def our_finalizer(self) -> bool:
        return names.CONTENT_SNAPSHOT_FINALIZER in self.finalizers

    @property
    def pre_provisioned(self) -> bool:
        return self.source_handle is not None

    @property
    def due_for_deletion(self) -> bool:
        """The sidecar's rule: deleted, and its snapshot is being deleted (or it is an unbound static one)."""
        return self.deleting and (self.being_deleted or (self.pre_provisioned and not self.ref_uid))


@dataclass(frozen=True, slots=True, kw_only=True)
class Cut:
    """A Cinder snapshot (or backup) as the flow sees it."""

    id: str
    status: str
    size_gib: int
    volume_id: str = ""
    kind: SnapshotKind = "snapshot"
    fail_reason: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Observed:
    """What one look at the content, its class and Cinder found."""

    content: ContentFacts | None
    params: SnapshotParams = field(default_factory=SnapshotParams)
    params_error: InvalidInput | None = None
    cloud: str | None = None
    configured_clouds: tuple[str, ...] = ("default",)
    cloud_wait: float = 0.0
    #: seconds until the next Cinder poll is due (a watch event came earlier)
    not_due: float = 0.0
    looked: bool = False
    #: the content's Cinder snapshot(s): by handle, and every one tagged with the content's name
    cuts: tuple[Cut, ...] = ()
    volume: Volume | None = None
    volume_looked: bool = False
    inuse_needs_force: bool = True
    #: backups: the cloud runs cinder-backup; the source volume has an available backup (incremental)
    backup_service: bool = True
    previous_backup: bool = False
    failure: ProvisionerError | None = None
    #: we already sent a delete and Cinder still shows the snapshot as deletable (it kept it)
    delete_sent: bool = False
    backoff: Backoff = field(default_factory=Backoff)


# --- steps -------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Poll:
    """Cinder is working on the content's snapshot: look again after ``wait`` (the backoff grows)."""

    content: ContentFacts
    wait: Wait


@dataclass(frozen=True, slots=True, kw_only=True)
class Persist:
    """Our finalizer (and the kind and cloud we will use) on the content before any Cinder call."""

    content: ContentFacts
    kind: SnapshotKind
    cloud: str | None


@dataclass(frozen=True, slots=True, kw_only=True)
class Create:
    """Create the Cinder snapshot for a dynamic content, then poll."""

    content: ContentFacts
    cloud: str | None
    volume_id: VolumeId
    name: str
    metadata: dict[str, str]
    force: bool
    then: Poll
    kind: SnapshotKind = "snapshot"
    incremental: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class MarkReady:
    """The snapshot is available: the content's status says so; duplicates are given back."""

    content: ContentFacts
    cloud: str | None
    cut: Cut
    duplicates: tuple[Cut, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class MarkFailed:
    """It cannot succeed: ``status.error`` with the reason, a Warning, no fast retry."""

    content: ContentFacts
    reason: str
    message: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Delete:
    """Delete these Cinder snapshots (the content's and its duplicates), then poll until gone.

    ``again``: Cinder kept them after an earlier delete (dependent volumes): say so and retry slowly."""

    content: ContentFacts
    cloud: str | None
    ids: tuple[str, ...]
    again: bool
    then: Poll


@dataclass(frozen=True, slots=True, kw_only=True)
class Release:
    """Nothing of ours is left in Cinder (or the policy keeps it): drop our finalizer."""

    content: ContentFacts
    deleted: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class Failed:
    """A Cinder call failed: hold the cloud (429), or a Warning and a retry, or a refusal."""

    content: ContentFacts
    cause: HoldCloud | Fail | Refuse


Step = Done | Wait | Poll | Persist | Create | MarkReady | MarkFailed | Delete | Release | Failed


# --- decide (pure) -----------------------------------------------------------------------------------


def cinder_name(content: ContentFacts) -> str:
    """The Cinder snapshot's name: ``snapshot-<VolumeSnapshot uid>`` (the CSI sidecar's default)."""
    return f"snapshot-{content.ref_uid or content.uid}"


def snapshot_tags(content: ContentFacts, *, cluster: str, claim: str | None, identity: str) -> dict[str, str]:
    """What we tag a snapshot with: it is found again by (cluster, content name)."""
    tags = {
        names.META_CLUSTER: cluster,
        names.META_PVC_NAMESPACE: content.ref_namespace,
        names.META_SNAPSHOT_NAME: content.ref_name,
        names.META_SNAPSHOT_UID: content.ref_uid,
        names.META_CONTENT_NAME: content.name,
    }
    if claim:
        tags[names.META_PVC_NAME] = claim
    if identity:
        tags[names.META_CREATED_BY] = identity
    return tags


def _cut_wait(o: Observed, c: ContentFacts, reason: str) -> Poll:
    return Poll(content=c, wait=Wait(delay=o.backoff.delay(), reason=reason))


def decide(o: Observed, *, cluster: str = "", claim: str | None = None, identity: str = "") -> Step:
    """The next step for one content, from what was observed. Pure."""
    c = o.content
    if c is None or not c.ours:
        return Done()
    if c.deleting:
        return _decide_deletion(o, c)
    if c.ready and c.status_handle:
        return Done()
    if c.error_message:
        return Done()  # failed for good (recorded); deleting the VolumeSnapshot gives back what exists
    if o.params_error is not None:
        e = o.params_error
        return MarkFailed(content=c, reason="invalid_" + e.field, message=f"{e.field}: {e.message}")
    if o.cloud and o.cloud not in o.configured_clouds:
        clouds = ", ".join(sorted(o.configured_clouds))
        return MarkFailed(
            content=c,
            reason="invalid_cloud",
            message=f"parameters.cloud: no cloud named {o.cloud!r}; configured: {clouds}",
        )
    if c.pre_provisioned and not names.is_cinder_id(c.source_handle):
        return MarkFailed(
            content=c,
            reason="invalid_snapshot_handle",
            message=f"spec.source.snapshotHandle: not a Cinder snapshot id: {c.source_handle!r}",
        )
    if not c.pre_provisioned and not names.is_cinder_id(c.volume_handle):
        return MarkFailed(
            content=c,
            reason="invalid_volume_handle",
            message=f"spec.source.volumeHandle: not a Cinder volume id: {c.volume_handle!r}",
        )
    if not c.our_finalizer:
        return Persist(content=c, kind=o.params.kind, cloud=o.cloud)
    if o.cloud_wait > 0:
        return Wait(delay=o.cloud_wait, reason="rate_limited", poll=False)
    if o.not_due > 0:
        return Wait(delay=o.not_due, reason="poll_not_due", poll=False)
    if o.failure is not None:
        return _failed(c, o.cloud, o.failure, SNAPSHOT_CREATION_FAILED, "looking up the Cinder snapshot")
    cut, duplicates = _primary(c, o.cuts)
    if c.pre_provisioned:
        if cut is None:
            return MarkFailed(
                content=c,
                reason="snapshot_not_found",
                message=f"spec.source.snapshotHandle: Cinder snapshot {c.source_handle} does not exist",
            )
        return _judge(o, c, cut, ())
    if cut is not None:
        return _judge(o, c, cut, duplicates)
    volume = o.volume
    if volume is None:
        return MarkFailed(
            content=c,
            reason="volume_not_found",
            message=f"spec.source.volumeHandle: Cinder volume {c.volume_handle} does not exist",
        )
    kind: SnapshotKind = "backup" if (c.kind or o.params.kind) == "backup" else "snapshot"
    if kind == "backup" and not o.backup_service:
        return MarkFailed(
            content=c,
            reason="no_backup_service",
            message="parameters.type: backup, but this cloud runs no cinder-backup service",
        )
    needs_force = o.inuse_needs_force or kind == "backup"  # Cinder backs up in-use volumes only with force
    if volume.status == IN_USE and needs_force and not o.params.force:
        what = "backups" if kind == "backup" else "snapshots"
        return MarkFailed(
            content=c,
            reason="volume_in_use",
            message=f"Cinder volume {volume.id} is in-use and the VolumeSnapshotClass does not allow "
            f'{what} of in-use volumes (parameters.force-create: "true")',
        )
    if volume.status not in (AVAILABLE, IN_USE):
        return _cut_wait(o, c, f"volume_{volume.status}")
    return Create(
        content=c,
        cloud=o.cloud,
        volume_id=volume.id,
        name=cinder_name(c),
        metadata=snapshot_tags(c, cluster=cluster, claim=claim, identity=identity),
        force=o.params.force and volume.status == IN_USE,
        then=_cut_wait(o, c, "creating"),
        kind=kind,
        incremental=kind == "backup" and o.params.incremental and o.previous_backup,
    )


def _primary(c: ContentFacts, cuts: tuple[Cut, ...]) -> tuple[Cut | None, tuple[Cut, ...]]:
    """The content's snapshot (its handle's, else the best tagged one) and the other tagged ones."""
    if not cuts:
        return None, ()
    wanted = c.status_handle or c.source_handle
    by_handle = [x for x in cuts if x.id == wanted]
    if by_handle:
        primary = by_handle[0]
    else:  # an available one wins over one still creating, which wins over an errored one
        rank = {AVAILABLE: 0, CREATING: 1}
        primary = sorted(cuts, key=lambda x: (rank.get(x.status, 2), x.id))[0]
    return primary, tuple(x for x in cuts if x.id != primary.id and x.status != DELETING)


def _judge(o: Observed, c: ContentFacts, cut: Cut, duplicates: tuple[Cut, ...]) -> Step:
    if cut.status == AVAILABLE:
        return MarkReady(content=c, cloud=o.cloud, cut=cut, duplicates=duplicates)
    if cut.status in (ERROR, "error_deleting", DELETING):
        return MarkFailed(
            content=c,
            reason=f"snapshot_{cut.status}",
            message=f"Cinder {cut.kind} {cut.id} of volume {cut.volume_id or c.volume_handle} went to "
            f"status {cut.status}" + (f": {cut.fail_reason}" if cut.fail_reason else ""),
        )
    return _cut_wait(o, c, cut.status or "creating")


def _decide_deletion(o: Observed, c: ContentFacts) -> Step:
    if not c.our_finalizer:
        return Done()
    if c.policy != "Delete":
        return Release(content=c, deleted=False)  # Retain: Cinder keeps it, nothing for us to wait for
    if not c.due_for_deletion:
        return Done()  # still bound to a live VolumeSnapshot: its deletion will say when
    cloud = c.cloud or o.cloud
    if o.cloud_wait > 0:
        return Wait(delay=o.cloud_wait, reason="rate_limited", poll=False)
    if o.not_due > 0:
        return Wait(delay=o.not_due, reason="poll_not_due", poll=False)
    if o.failure is not None:
        return _failed(c, cloud, o.failure, SNAPSHOT_DELETE_FAILED, "deleting the Cinder snapshot")
    live = tuple(x for x in o.cuts if x.status != DELETING)
    if live:
        busy = [x for x in live if x.status == CREATING]
        if busy and len(busy) == len(live):
            return _cut_wait(o, c, "creating_before_delete")  # Cinder deletes only available / error ones
        deletable = tuple(x.id for x in live if x.status != CREATING)
        return Delete(
            content=c, cloud=cloud, ids=deletable, again=o.delete_sent, then=_cut_wait(o, c, "deleting")
        )
    if o.cuts:
        return _cut_wait(o, c, "deleting")
    return Release(content=c, deleted=True)


def _failed(c: ContentFacts, cloud: str | None, e: ProvisionerError, event: str, what: str) -> Failed:
    return Failed(content=c, cause=hold_or_fail(e, cloud=cloud, event=event, what=what))
