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

Shape (STYLE.md): ``observe`` reads the caches and Cinder into ``Observed``; ``decide`` is pure; ``execute``
performs exactly the step. Every Cinder mutation goes through the fenced port (``Context.cinder``).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import structlog

from provisioner.domain import names
from provisioner.domain.errors import (
    CinderConflict,
    CinderError,
    CinderNotFound,
    InvalidInput,
    KubeConflict,
    KubeError,
    KubeNotFound,
    ProvisionerError,
)
from provisioner.domain.model import (
    AVAILABLE,
    CREATING,
    DELETING,
    ERROR,
    IN_USE,
    Backup,
    BackupId,
    Snapshot,
    SnapshotId,
    Volume,
    VolumeId,
)
from provisioner.domain.outcome import DONE, Outcome, error, final, requeue
from provisioner.flows.context import Context, Obj
from provisioner.flows.giveback import Backoff, Done, Fail, HoldCloud, Refuse, Wait, hold_or_fail, run_wait
from provisioner.flows.snapshot_params import SnapshotKind, SnapshotParams, parse_snapshot_parameters
from provisioner.flows.steps import drive
from provisioner.ports import Cache, CinderPort

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


# --- observe -----------------------------------------------------------------------------------------


def _wall_of(value: Any) -> float | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def content_facts(obj: Obj) -> ContentFacts:
    """The flow's view of a content object (pure)."""
    meta = obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    status = obj.get("status") or {}
    source = spec.get("source") or {}
    ref = spec.get("volumeSnapshotRef") or {}
    ann = meta.get("annotations") or {}
    err = status.get("error") or {}
    return ContentFacts(
        name=str(meta.get("name", "")),
        uid=str(meta.get("uid", "")),
        resource_version=meta.get("resourceVersion"),
        driver=str(spec.get("driver", "")),
        policy=str(spec.get("deletionPolicy", "Delete")),
        deleting=bool(meta.get("deletionTimestamp")),
        being_deleted=ann.get(ANN_BEING_DELETED) == "yes",
        finalizers=tuple(meta.get("finalizers") or ()),
        volume_handle=source.get("volumeHandle"),
        source_handle=source.get("snapshotHandle"),
        status_handle=status.get("snapshotHandle"),
        ready=bool(status.get("readyToUse")),
        error_message=err.get("message") if isinstance(err, dict) else None,
        class_name=str(spec.get("volumeSnapshotClassName") or ""),
        ref_namespace=str(ref.get("namespace", "")),
        ref_name=str(ref.get("name", "")),
        ref_uid=str(ref.get("uid") or ""),
        kind=ann.get(names.ANN_SNAPSHOT_KIND),
        cloud=ann.get(names.ANN_CLOUD),
        created_at=_wall_of(meta.get("creationTimestamp")),
        deleted_at=_wall_of(meta.get("deletionTimestamp")),
    )


def _source_pv(ctx: Context, volume_handle: str | None) -> Obj | None:
    if not volume_handle:
        return None
    for pv in ctx.pvs.values():
        csi = (pv.get("spec") or {}).get("csi") or {}
        if csi.get("volumeHandle") == volume_handle and csi.get("driver") == names.CSI_DRIVER_NAME:
            return pv
    return None


def _inuse_needs_force(microversion: str) -> bool:
    major, _, minor = microversion.partition(".")
    try:
        return (int(major), int(minor or 0)) < INUSE_SNAPSHOT_MICROVERSION
    except ValueError:
        return True


def _to_cut(s: Snapshot | Backup) -> Cut:
    if isinstance(s, Backup):
        return Cut(
            id=s.id,
            status=s.status,
            size_gib=s.size_gib,
            volume_id=s.volume_id,
            kind="backup",
            fail_reason=s.fail_reason,
        )
    return Cut(id=s.id, status=s.status, size_gib=s.size_gib, volume_id=s.volume_id)


def observe(sc: SnapshotContext, name: str) -> tuple[Observed, str | None]:
    """Read the content (cache), its class (cache), the source PV (cache) and, when due, Cinder.

    Returns the observation and the source claim's name (for the tags)."""
    ctx = sc.ctx
    obj = sc.contents.get(name)
    if obj is None:
        return Observed(content=None), None
    c = content_facts(obj)
    if not c.ours:
        return Observed(content=c), None
    base: dict[str, Any] = {"content": c, "configured_clouds": tuple(sorted(ctx.clouds))}
    vsclass = sc.snapshot_classes.get(c.class_name) if c.class_name else None
    try:
        params = parse_snapshot_parameters((vsclass or {}).get("parameters"))
    except InvalidInput as e:
        if not c.deleting:
            return Observed(**base, params_error=e), None
        params = SnapshotParams()
    pv = _source_pv(ctx, c.volume_handle)
    pv_ann = ((pv or {}).get("metadata") or {}).get("annotations") or {}
    claim = (((pv or {}).get("spec") or {}).get("claimRef") or {}).get("name")
    cloud = c.cloud or params.cloud or pv_ann.get(names.ANN_CLOUD) or None
    base.update(params=params, cloud=cloud)
    if cloud and cloud not in ctx.clouds:
        return Observed(**base), claim
    needs_cinder = (c.deleting and c.our_finalizer and c.due_for_deletion and c.policy == "Delete") or (
        not c.deleting and c.our_finalizer and not c.error_message and not (c.ready and c.status_handle)
    )
    if not needs_cinder:
        return Observed(**base), claim
    hint = ctx.hints.get(c.uid or c.name)
    base["backoff"] = Backoff.of(ctx, hint)
    base["delete_sent"] = hint.error_volumes > 0  # the hint counts the deletes we sent for this content
    if (wait := ctx.cloud_wait(cloud)) > 0:
        return Observed(**base, cloud_wait=wait), claim
    if hint.next_poll_at > ctx.clock():
        return Observed(**base, not_due=hint.next_poll_at - ctx.clock()), claim
    cinder = ctx.cinder(cloud)
    backup = (c.kind or params.kind) == "backup"
    try:
        cuts: dict[str, Cut] = {}
        handle = c.status_handle or c.source_handle
        if handle and names.is_cinder_id(handle):
            try:
                found: Snapshot | Backup = (
                    cinder.get_backup(BackupId(handle)) if backup else cinder.get_snapshot(SnapshotId(handle))
                )
                cuts[handle] = _to_cut(found)
            except CinderNotFound:
                pass
        if not c.pre_provisioned:
            tags = {names.META_CLUSTER: ctx.settings.cluster_id, names.META_CONTENT_NAME: c.name}
            listed: Iterator[Snapshot] | Iterator[Backup] = (
                cinder.list_backups(metadata=tags) if backup else cinder.list_snapshots(metadata=tags)
            )
            for s in listed:
                cuts.setdefault(s.id, _to_cut(s))
        volume: Volume | None = None
        volume_looked = False
        if not c.deleting and not c.pre_provisioned and not cuts and names.is_cinder_id(c.volume_handle):
            volume_looked = True
            try:
                volume = cinder.get_volume(VolumeId(str(c.volume_handle)))
            except CinderNotFound:
                volume = None
        inuse = _inuse_needs_force(cinder.capabilities.microversion) if volume is not None else True
        if backup and volume is not None:
            base["backup_service"] = cinder.has_backup_service()
            base["previous_backup"] = params.incremental and any(
                b.status == AVAILABLE for b in cinder.list_backups(volume_id=volume.id)
            )
    except CinderError as e:
        return Observed(**base, looked=True, failure=e), claim
    return (
        Observed(
            **base,
            looked=True,
            cuts=tuple(cuts.values()),
            volume=volume,
            volume_looked=volume_looked,
            inuse_needs_force=inuse,
        ),
        claim,
    )


# --- execute -----------------------------------------------------------------------------------------


def _about(c: ContentFacts) -> Obj:
    """The object Events go to: the VolumeSnapshot (what users describe), else the content."""
    if c.ref_name and c.ref_namespace:
        meta: dict[str, Any] = {"name": c.ref_name, "namespace": c.ref_namespace, "uid": c.ref_uid}
        return {"apiVersion": SNAPSHOT_API_VERSION, "kind": "VolumeSnapshot", "metadata": meta}
    meta = {"name": c.name, "uid": c.uid}
    return {"apiVersion": SNAPSHOT_API_VERSION, "kind": "VolumeSnapshotContent", "metadata": meta}


def _kind(c: ContentFacts) -> str:
    return c.kind or "snapshot"


def execute(sc: SnapshotContext, step: Step) -> Outcome | None:
    """Perform exactly ``step``; the Outcome, or None to observe again."""
    ctx = sc.ctx
    if isinstance(step, Done):
        return DONE
    if isinstance(step, Wait):
        return requeue(step.delay, step.reason)
    if isinstance(step, Poll):
        return run_wait(ctx, ctx.hints.get(step.content.uid or step.content.name), step.wait)
    if isinstance(step, Persist):
        return _persist(ctx, step)
    if isinstance(step, Create):
        return _create(ctx, step)
    if isinstance(step, MarkReady):
        return _mark_ready(ctx, step)
    if isinstance(step, MarkFailed):
        return _mark_failed(ctx, step)
    if isinstance(step, Delete):
        return _delete(ctx, step)
    if isinstance(step, Release):
        return _release(ctx, step)
    return _run_failed(ctx, step)


def _count(ctx: Context, c: ContentFacts, operation: str, outcome: str, reason: str = "") -> None:
    ctx.metrics.snapshot_total.labels(
        kind=_kind(c), operation=operation, outcome=outcome, reason=reason
    ).inc()


def _patch_content(ctx: Context, c: ContentFacts, patch: Obj, *, status: bool = False) -> Outcome | None:
    """Merge-patch the content (``resourceVersion`` as precondition for metadata); None on success."""
    try:
        if status:
            ctx.kube.patch("volumesnapshotcontents", c.name, patch, patch_type="merge", subresource="status")
        else:
            ctx.kube.patch("volumesnapshotcontents", c.name, patch, patch_type="merge")
    except KubeNotFound:
        return DONE
    except KubeConflict as e:
        return error("conflict", f"content {c.name} changed meanwhile: {e}")
    except KubeError as e:
        return error("kube_" + type(e).__name__, str(e))
    return None


def _persist(ctx: Context, step: Persist) -> Outcome | None:
    c = step.content
    annotations: dict[str, str] = {names.ANN_SNAPSHOT_KIND: step.kind}
    if step.cloud:
        annotations[names.ANN_CLOUD] = step.cloud
    patch = {
        "metadata": {
            "finalizers": [*c.finalizers, names.CONTENT_SNAPSHOT_FINALIZER],
            "annotations": annotations,
            "resourceVersion": c.resource_version,
        }
    }
    return _patch_content(ctx, c, patch)


def _create(ctx: Context, step: Create) -> Outcome | None:
    c = step.content
    hint = ctx.hints.get(c.uid or c.name)
    try:
        cinder = ctx.cinder(step.cloud)
        made: Snapshot | Backup
        if step.kind == "backup":
            made = cinder.create_backup(
                step.volume_id,
                name=step.name,
                metadata=step.metadata,
                incremental=step.incremental,
                force=step.force,
            )
        else:
            made = cinder.create_snapshot(
                step.volume_id, name=step.name, metadata=step.metadata, force=step.force
            )
    except ProvisionerError as e:
        return _run_failed(
            ctx,
            Failed(
                content=c,
                cause=hold_or_fail(
                    e, cloud=step.cloud, event=SNAPSHOT_CREATION_FAILED, what="creating the Cinder snapshot"
                ),
            ),
        )
    ctx.checkpoint("after_snapshot_create")
    log.info(
        "snapshot_create_requested",
        content=c.name,
        kind=step.kind,
        snapshot_id=made.id,
        volume_id=step.volume_id,
        incremental=step.incremental,
    )
    return run_wait(ctx, hint, step.then.wait)


def _mark_ready(ctx: Context, step: MarkReady) -> Outcome | None:
    c, cut = step.content, step.cut
    if step.duplicates:
        cinder = ctx.cinder(step.cloud)
        try:
            for dup in step.duplicates:
                _give_back(cinder, dup.kind, dup.id)
                log.warning("snapshot_duplicate_deleted", content=c.name, snapshot_id=dup.id, kept=cut.id)
        except ProvisionerError as e:
            return _run_failed(
                ctx,
                Failed(
                    content=c,
                    cause=hold_or_fail(e, cloud=step.cloud, event="", what="deleting a duplicate snapshot"),
                ),
            )
    now = ctx.wall()
    status = {
        "status": {
            "snapshotHandle": cut.id,
            "readyToUse": True,
            "restoreSize": cut.size_gib * 2**30,
            "creationTime": int(now * 1e9),
        }
    }
    if (outcome := _patch_content(ctx, c, status, status=True)) is not None:
        return outcome
    ctx.hints.drop(c.uid or c.name)
    _count(ctx, c, "create", "success")
    if c.created_at is not None:
        ctx.metrics.snapshot_create_seconds.labels(kind=_kind(c)).observe(max(0.0, now - c.created_at))
    what = f"pre-provisioned Cinder {cut.kind}" if c.pre_provisioned else f"Cinder {cut.kind}"
    ctx.events.event(
        _about(c), "Normal", SNAPSHOT_CREATED, f"{what} {cut.id} ({cut.size_gib} GiB) is ready to use"
    )
    log.info("snapshot_ready", content=c.name, snapshot_id=cut.id)
    return DONE


def _mark_failed(ctx: Context, step: MarkFailed) -> Outcome:
    c = step.content
    when = datetime.fromtimestamp(ctx.wall()).astimezone().strftime("%Y-%m-%dT%H:%M:%SZ")
    patch = {"status": {"readyToUse": False, "error": {"message": step.message, "time": when}}}
    if (outcome := _patch_content(ctx, c, patch, status=True)) is not None and outcome.kind == "error":
        return outcome
    ctx.hints.drop(c.uid or c.name)
    _count(ctx, c, "create", "failure", step.reason)
    ctx.events.event(_about(c), "Warning", SNAPSHOT_CREATION_FAILED, step.message)
    return final(step.reason, step.message)


def _delete(ctx: Context, step: Delete) -> Outcome | None:
    c = step.content
    hint = ctx.hints.get(c.uid or c.name)
    if step.again:
        ctx.events.event(
            _about(c),
            "Normal",
            SNAPSHOT_DELETE_WAITING,
            f"Cinder kept snapshot {', '.join(step.ids)} after deletion (volumes may depend on it); retrying",
        )
    cinder = ctx.cinder(step.cloud)
    try:
        for sid in step.ids:
            _give_back(cinder, _kind(c), sid)
    except CinderConflict as e:
        ctx.events.event(
            _about(c),
            "Normal",
            SNAPSHOT_DELETE_WAITING,
            f"Cinder refuses to delete snapshot yet: {e.message}",
        )
        return error("snapshot_busy", str(e), at_least=DEPENDENTS_RETRY_SECONDS)
    except ProvisionerError as e:
        return _run_failed(
            ctx,
            Failed(
                content=c,
                cause=hold_or_fail(
                    e, cloud=step.cloud, event=SNAPSHOT_DELETE_FAILED, what="deleting the Cinder snapshot"
                ),
            ),
        )
    hint.error_volumes += 1
    ctx.checkpoint("after_snapshot_delete")
    log.info("snapshot_delete_requested", content=c.name, snapshot_ids=list(step.ids))
    if step.again:
        return error("snapshot_kept", f"Cinder kept {', '.join(step.ids)}", at_least=DEPENDENTS_RETRY_SECONDS)
    return run_wait(ctx, hint, step.then.wait)


def _give_back(cinder: CinderPort, kind: str, cut_id: str) -> None:
    if kind == "backup":
        cinder.delete_backup(BackupId(cut_id))
    else:
        cinder.delete_snapshot(SnapshotId(cut_id))


def _release(ctx: Context, step: Release) -> Outcome | None:
    c = step.content
    ctx.checkpoint("before_content_finalizer_removal")
    left = [f for f in c.finalizers if f != names.CONTENT_SNAPSHOT_FINALIZER]
    patch = {"metadata": {"finalizers": left, "resourceVersion": c.resource_version}}
    if (outcome := _patch_content(ctx, c, patch)) is not None and outcome.kind == "error":
        return outcome
    ctx.hints.drop(c.uid or c.name)
    if step.deleted:
        _count(ctx, c, "delete", "success")
        if c.deleted_at is not None:
            ctx.metrics.snapshot_delete_seconds.labels(kind=_kind(c)).observe(
                max(0.0, ctx.wall() - c.deleted_at)
            )
    log.info("snapshot_content_released", content=c.name, deleted=step.deleted)
    return DONE


def _run_failed(ctx: Context, step: Failed) -> Outcome:
    cause = step.cause
    c = step.content
    if isinstance(cause, HoldCloud):
        ctx.hold_cloud(cause.cloud, cause.seconds)
        return requeue(cause.seconds, "rate_limited")
    if isinstance(cause, Refuse):
        message = f"{cause.field}: {cause.message}"
        ctx.events.event(_about(c), "Warning", cause.event, message)
        return final("invalid_" + cause.field, message, retry_after=ctx.settings.final_retry_seconds)
    if cause.event:
        operation = "delete" if c.deleting else "create"
        _count(ctx, c, operation, "failure", cause.reason)
        ctx.events.event(_about(c), "Warning", cause.event, cause.message)
    return error(cause.reason, cause.message, at_least=cause.at_least)


def reconcile_content(sc: SnapshotContext, name: str) -> Outcome:
    """One reconcile of the VolumeSnapshotContent ``name``: observe, decide, execute (a few steps)."""
    ctx = sc.ctx
    claim: list[str | None] = [None]

    def look() -> Observed:
        observed, claim[0] = observe(sc, name)
        return observed

    def choose(o: Observed) -> Step:
        return decide(o, cluster=ctx.settings.cluster_id, claim=claim[0], identity=ctx.settings.identity)

    return drive(look, choose, lambda step: execute(sc, step))


__all__ = [
    "ContentFacts",
    "Cut",
    "Observed",
    "SnapshotContext",
    "content_facts",
    "decide",
    "execute",
    "observe",
    "reconcile_content",
]
