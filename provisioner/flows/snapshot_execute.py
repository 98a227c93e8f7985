"""The snapshot flow's observe and execute halves (the pure model and ``decide`` are in ``snapshots``).

``observe`` reads the caches and Cinder into ``Observed``; ``execute`` performs exactly the step ``decide``
chose, every Cinder mutation through the fenced port (``Context.cinder``); ``reconcile_content`` drives the
two for one VolumeSnapshotContent.
"""

from __future__ import annotations

from collections.abc import Iterator
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
    Backup,
    BackupId,
    Snapshot,
    SnapshotId,
    Volume,
    VolumeId,
)
from provisioner.domain.outcome import DONE, Outcome, error, final, requeue
from provisioner.flows.context import Context, Obj
from provisioner.flows.giveback import Backoff, Done, HoldCloud, Refuse, Wait, hold_or_fail, run_wait
from provisioner.flows.snapshot_params import SnapshotParams, parse_snapshot_parameters
from provisioner.flows.snapshots import (
    ANN_BEING_DELETED,
    DEPENDENTS_RETRY_SECONDS,
    INUSE_SNAPSHOT_MICROVERSION,
    SNAPSHOT_API_VERSION,
    SNAPSHOT_CREATED,
    SNAPSHOT_CREATION_FAILED,
    SNAPSHOT_DELETE_FAILED,
    SNAPSHOT_DELETE_WAITING,
    ContentFacts,
    Create,
    Cut,
    Delete,
    Failed,
    MarkFailed,
    MarkReady,
    Observed,
    Persist,
    Poll,
    Release,
    SnapshotContext,
    Step,
    decide,
)
from provisioner.flows.steps import drive
from provisioner.ports import CinderPort

log = structlog.get_logger(__name__)


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
