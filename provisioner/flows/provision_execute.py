"""The provision flow's executors: create, export and bind, and the failure record.

Each performs one decided step through the ports (``provision_decide`` decides, ``provision`` observes and
dispatches). The order of side effects is what makes crashes harmless (docs/architecture.md, the
crash-safety table): the intent and the create mark are written once the create holds its in-flight slot,
right before the send; the PV's AlreadyExists counts only if it is ours; the finalizer is removed last.
"""

from __future__ import annotations

from typing import Any

import structlog

from provisioner.domain import names
from provisioner.domain.errors import (
    CinderQuotaExceeded,
    CinderReferenceNotFound,
    InvalidInput,
    KubeAlreadyExists,
    KubeConflict,
    KubeError,
    KubeInvalid,
    KubeNotFound,
)
from provisioner.domain.model import CreateVolumeRequest, Volume
from provisioner.domain.outcome import DONE, Outcome, final, requeue
from provisioner.domain.params import ClassParams
from provisioner.flows.adopt import adopt_volume_id
from provisioner.flows.claims import (
    EXPORTABLE,
    class_name_of,
    drop_intent,
    json_pointer,
    persist_intent,
)
from provisioner.flows.context import Context, Obj, Refused
from provisioner.flows.export import cleanup_volume, export_volume, unexport
from provisioner.flows.provision_decide import claim_shape, reference_error, requested_gib
from provisioner.flows.sources import VolumeSource, finish_restore, resolve_source
from provisioner.mapping.build import (
    ContentSource,
    MappedObjects,
    ProvisionedVolume,
    build_objects,
    requested_content,
)
from provisioner.telemetry.events import PROVISIONING_FAILED, PROVISIONING_SUCCEEDED

log = structlog.get_logger(__name__)

#: Version-tested intent patches refused (the cache behind the live claim) before the claim is looked up
#: by name instead: a claim that keeps changing under us gets the lookup, not a patch per change.
STALE_REFUSALS = 3
#: Seconds before a claim whose intent patch found the cache stale runs again if no newer copy's event
#: brings it back sooner.
CACHE_CATCH_UP_SECONDS = 0.5


class _ClaimChanged(Exception):
    """Raised by the create mark when the live claim is not the one the create was built for: not sent."""


def create_step(
    ctx: Context, pvc: Obj, *, sc: Obj, params: ClassParams, cinder: Any, fresh: bool = False
) -> Outcome:
    """The create, with intent + attempt mark (one patch) written once its in-flight slot is held.

    The request is built from the observed claim; the patch goes out in the create's ``before_send``, so
    the ``create-attempt`` time is when the create is sent — however long the slot took — and another
    replica's ``create_in_flight_seconds`` wait from it covers the HTTP timeout (no create is ever sent
    later than its mark). The intent is still persisted before any create: a failed patch sends nothing,
    and a crash between the patch and the send leaves a mark whose wait ends with a lookup that finds
    nothing, then a create (``after_create_mark``). Straight on to the export if the answer is final.

    ``fresh``: the volume was not looked up because the observed claim carries no create mark; the patch
    tests that claim's resourceVersion, so it lands only if no replica marked a create since. If the
    test fails the cache was behind: the next round looks the volume up by name like any other.
    """
    cloud = params.cloud or ctx.settings.default_cloud
    meta = pvc["metadata"]
    source = resolve_source(ctx, pvc, params, cinder)
    request = _create_request(ctx, pvc, sc=sc, params=params, source=source)
    marked: list[Obj] = []

    def mark() -> None:
        attempt = {names.ANN_CREATE_ATTEMPT: f"{ctx.settings.identity} {ctx.wall():.3f}"}
        live = persist_intent(
            ctx,
            pvc,
            step="creating-volume",
            extra=attempt if ctx.settings.identity else None,
            cloud=cloud,
            expect_version=meta.get("resourceVersion") if fresh else None,
        )
        if live is None or not _same_request_inputs(pvc, live):
            raise _ClaimChanged
        marked.append(live)
        ctx.checkpoint("after_create_mark")

    try:
        volume = cinder.create_volume(request, before_send=mark)
    except _ClaimChanged:
        return requeue(0.0, "claim_changed")
    except (KubeInvalid, KubeConflict):
        if not fresh or marked:
            raise
        # The cache was behind the live claim (most often: the PV controller's handshake annotation on a
        # new claim). The next round takes the fast path again from a newer copy that still carries none
        # of our marks — its own version test is the same proof — and looks up by name only if the cache
        # has not caught up, or after STALE_REFUSALS refusals. The newer copy's event brings it back at
        # once (it changes the claim's shape); the delay is the fallback.
        hint = ctx.hints.get(meta["uid"])
        hint.stale_version = meta.get("resourceVersion")
        hint.stale_refusals += 1
        if hint.stale_refusals >= STALE_REFUSALS:
            hint.look_up = True
        return requeue(CACHE_CATCH_UP_SECONDS, "claim_changed")
    except CinderReferenceNotFound as e:
        _refused(ctx, marked)
        raise reference_error(e, cloud=cloud, request=request, pvc=marked[0] if marked else pvc) from e
    except CinderQuotaExceeded:
        _refused(ctx, marked)
        raise
    live = marked[0]
    ctx.checkpoint("after_cinder_create")
    hint = ctx.hints.get(meta["uid"])
    hint.volume_id = volume.id
    hint.polls = 0
    if cinder.capabilities.time_filters:
        ctx.board.wait_on(cloud, volume, now=ctx.clock())  # its polls may share one list per round
    log.debug(  # the adapter's cinder_volume_created (info) already names the volume and its id
        "volume_created",
        pvc=f"{meta['namespace']}/{meta['name']}",
        volume_id=volume.id,
        size_gib=volume.size_gib,
    )
    if volume.status in EXPORTABLE and not _restores_backup(live, volume):
        # Cinder's answer is already final: no status poll (a get) before the export.
        return bind_volume(ctx, live, sc=sc, params=params, cinder=cinder, volume=volume)
    # The "creating" Event is recorded by the first poll that still finds it creating (decide_volume):
    # a create that is done by then needs no Event besides ProvisioningSucceeded, which names the volume.
    return requeue(ctx.poll_delay(hint), "creating")


def _refused(ctx: Context, marked: list[Obj]) -> None:
    """Cinder refused the create for good: it created nothing, so the failure record may drop the
    intent this attempt's mark announced (``_release_refused``)."""
    if not marked or not ctx.settings.identity:
        return
    meta = marked[0]["metadata"]
    mark = (meta.get("annotations") or {}).get(names.ANN_CREATE_ATTEMPT)
    if mark:
        ctx.hints.get(meta["uid"]).refused = Refused(str(mark), tuple(meta.get("finalizers") or ()))


def _create_request(
    ctx: Context, pvc: Obj, *, sc: Obj, params: ClassParams, source: VolumeSource
) -> CreateVolumeRequest:
    """What Cinder is asked to create for the claim (name, size, type, zone, source, our tags)."""
    meta = pvc["metadata"]
    pv_name = names.pv_name_for(meta["uid"])
    metadata = {
        names.META_CLUSTER: ctx.settings.cluster_id,
        names.META_PVC_NAMESPACE: meta["namespace"],
        names.META_PVC_NAME: meta["name"],
        names.META_PVC_UID: meta["uid"],
        names.META_PV_NAME: pv_name,
        names.META_STORAGE_CLASS: sc["metadata"]["name"],
    }
    if ctx.settings.identity:
        metadata[names.META_CREATED_BY] = ctx.settings.identity
    metadata.update(source.backup_metadata())
    return CreateVolumeRequest(
        name=pv_name,
        size_gib=max(requested_gib(pvc), source.min_size_gib),
        volume_type=params.volume_type,
        availability_zone=params.availability_zone,
        snapshot_id=source.snapshot_id,
        source_volid=source.source_volid,
        backup_id=source.backup_id,
        metadata=metadata,
        description=f"Kubernetes PVC {meta['namespace']}/{meta['name']}",
    )


#: Claim annotations a create request is built from (its source); spec is compared whole.
_REQUEST_ANNOTATIONS = (names.ANN_RESTORE_FROM_SNAPSHOT, names.ANN_RESTORE_FROM_BACKUP)


def _same_request_inputs(observed: Obj, live: Obj) -> bool:
    """The live claim asks for what the request was built from (spec and source annotations)."""
    if observed.get("spec") != live.get("spec"):
        return False
    seen = observed["metadata"].get("annotations") or {}
    now = live["metadata"].get("annotations") or {}
    return all(seen.get(k) == now.get(k) for k in _REQUEST_ANNOTATIONS)


def bind_volume(
    ctx: Context, pvc: Obj, *, sc: Obj, params: ClassParams, cinder: Any, volume: Volume
) -> Outcome:
    sc_name = sc["metadata"]["name"]
    uid = pvc["metadata"]["uid"]
    pv_name = names.pv_name_for(uid)
    log_ = log.bind(pvc=f"{pvc['metadata']['namespace']}/{pvc['metadata']['name']}", pv=pv_name)
    if _restores_backup(pvc, volume):  # flows/sources.py: restore into it, or re-tag it after a restore
        pending = finish_restore(
            volume,
            cinder=cinder,
            claim_uid=uid,
            tags=_volume_tags(ctx, pvc, sc_name),
            backup_id=_restored_backup(ctx, pvc, params, cinder, volume),
        )
        if pending is not None:
            return pending
    exported = export_volume(ctx, cinder, volume)
    ctx.checkpoint("after_export")
    source_kind = resolve_content_kind(pvc, volume)
    try:
        mapped = build_objects(
            connection_info=exported.connection_info,
            storage_class=sc,
            pvc=pvc,
            params=params,
            volume=ProvisionedVolume(
                volume_id=volume.id,
                size_gib=volume.size_gib,
                attachment_id=exported.attachment_id,
                export_mode=exported.mode,
                cloud=params.cloud or ctx.settings.default_cloud,
                initiator_name=ctx.settings.connector.initiator,
                content_source=source_kind,
                grow_fs=source_kind != "empty" and _needs_grow(pvc, volume),
                availability_zone=volume.availability_zone,
                multiattach=volume.multiattach or params.multiattach,
            ),
            provisioner_name=ctx.settings.provisioner_name,
        )
    except InvalidInput as e:
        # Unmappable export (unsupported type, malformed data): give the volume back, fail finally.
        _give_back(ctx, pvc, cinder, volume, exported)
        ctx.hints.get(uid).volume_id = None
        return fail_claim(ctx, pvc, sc_name, type(e).__name__, f"cannot use Cinder volume {volume.id}: {e}")
    outcome = _create_objects(
        ctx, pvc, mapped=mapped, volume=volume, cinder=cinder, exported=exported, pv_name=pv_name, log_=log_
    )
    if outcome is not None:
        return outcome
    ctx.checkpoint("after_pv_create")
    drop_intent(ctx, pvc)
    ctx.hints.drop(uid)
    ctx.metrics.provision_total.labels(storage_class=sc_name, outcome="success", reason="").inc()
    ctx.events.event(
        pvc, "Normal", PROVISIONING_SUCCEEDED, f"provisioned Cinder volume {volume.id} as {pv_name}"
    )
    log_.info("provisioned", volume_id=volume.id)
    return DONE


def _create_objects(
    ctx: Context,
    pvc: Obj,
    *,
    mapped: MappedObjects,
    volume: Volume,
    cinder: Any,
    exported: Any,
    pv_name: str,
    log_: Any,
) -> Outcome | None:
    """Secret (if any), then PV, then the Secret's owner. None = all created; else the outcome to return."""
    secret = mapped.secret
    if secret is not None:
        ns = secret["metadata"]["namespace"]
        try:
            ctx.kube.create("secrets", secret, namespace=ns)
        except KubeAlreadyExists:
            ctx.kube.patch(
                "secrets",
                secret["metadata"]["name"],
                {"data": secret.get("data"), "stringData": secret.get("stringData")},
                namespace=ns,
            )
    try:
        created = ctx.kube.create("persistentvolumes", mapped.pv)
    except KubeAlreadyExists:
        live = ctx.kube.get("persistentvolumes", pv_name)
        claim_uid = ((live.get("spec") or {}).get("claimRef") or {}).get("uid")
        live_vid = (live["metadata"].get("annotations") or {}).get(names.ANN_VOLUME_ID)
        if claim_uid == pvc["metadata"]["uid"] and live_vid == volume.id:
            # An earlier attempt made this PV and died before letting the claim go; our cache had not shown
            # the PV, so this attempt exported again and removed that attempt's attachment as stale. The PV
            # must record the attachment that exists now, or its deletion would call ours foreign forever.
            recorded = (live["metadata"].get("annotations") or {}).get(names.ANN_ATTACHMENT_ID)
            if exported.attachment_id and recorded != exported.attachment_id:
                live = ctx.kube.patch(
                    "persistentvolumes",
                    pv_name,
                    {"metadata": {"annotations": {names.ANN_ATTACHMENT_ID: exported.attachment_id}}},
                )
                log_.info("pv_attachment_rerecorded", stale=recorded, attachment_id=exported.attachment_id)
            created = live
        else:
            # Not ours: never take a 409 as success (the leak the Go provisioner had). Give our volume back.
            _give_back(ctx, pvc, cinder, volume, exported)
            ctx.hints.drop(pvc["metadata"]["uid"])
            return fail_claim(
                ctx,
                pvc,
                class_name_of(pvc),
                "pv_name_conflict",
                f"PV {pv_name} already exists for another claim or volume; released {volume.id}",
            )
    if secret is not None:
        owner = {
            "apiVersion": "v1",
            "kind": "PersistentVolume",
            "name": pv_name,
            "uid": created["metadata"]["uid"],
        }
        try:
            ctx.kube.patch(
                "secrets",
                secret["metadata"]["name"],
                {"metadata": {"ownerReferences": [owner]}},
                namespace=secret["metadata"]["namespace"],
            )
        except KubeError as e:  # the PV exists; a missing owner only delays GC — log and go on
            log_.warning("secret_owner_patch_failed", error=str(e))
    return None


def _give_back(ctx: Context, pvc: Obj, cinder: Any, volume: Volume, exported: Any) -> None:
    """Undo an export that cannot be used; delete the volume only if we created it (never an adopted one)."""
    if adopt_volume_id(pvc) == volume.id:
        unexport(ctx, cinder, volume.id, exported.attachment_id, exported.mode)
    else:
        cleanup_volume(ctx, cinder, volume.id, exported.attachment_id, exported.mode)


def _needs_grow(pvc: Obj, volume: Volume) -> bool:
    restored = bool(volume.metadata.get(names.META_RESTORED_FROM_BACKUP))
    return volume.snapshot_id is not None or volume.source_volid is not None or restored


def _restores_backup(pvc: Obj, volume: Volume) -> bool:
    """The claim's volume is (being) restored from a backup: the annotation, a VolumeSnapshot source
    (its handle may be a backup) or our marker on the volume. Adopted volumes never are."""
    if adopt_volume_id(pvc) == volume.id:
        return False
    ann = pvc["metadata"].get("annotations") or {}
    source = (pvc.get("spec") or {}).get("dataSource") or {}
    return bool(
        ann.get(names.ANN_RESTORE_FROM_BACKUP)
        or volume.metadata.get(names.META_RESTORED_FROM_BACKUP)
        or (source.get("kind") == "VolumeSnapshot" and volume.snapshot_id is None)
    )


def _restored_backup(ctx: Context, pvc: Obj, params: ClassParams, cinder: Any, volume: Volume) -> Any:
    """Which backup the volume holds: our marker, else the claim's source (after Cinder wiped the marker)."""
    marked = volume.metadata.get(names.META_RESTORED_FROM_BACKUP)
    if marked and volume.metadata.get(names.META_PVC_UID) == pvc["metadata"]["uid"]:
        return marked
    source = resolve_source(ctx, pvc, params, cinder)
    return source.backup_id or source.restore_backup_id


def _volume_tags(ctx: Context, pvc: Obj, sc_name: str) -> dict[str, str]:
    """The Cinder metadata that makes a volume this claim's (what a create sets, what a re-tag restores)."""
    meta = pvc["metadata"]
    tags = {
        names.META_CLUSTER: ctx.settings.cluster_id,
        names.META_PVC_NAMESPACE: meta["namespace"],
        names.META_PVC_NAME: meta["name"],
        names.META_PVC_UID: meta["uid"],
        names.META_PV_NAME: names.pv_name_for(meta["uid"]),
        names.META_STORAGE_CLASS: sc_name,
    }
    if ctx.settings.identity:
        tags[names.META_CREATED_BY] = ctx.settings.identity
    return tags


def resolve_content_kind(pvc: Obj, volume: Volume) -> ContentSource:
    """What the node agent may do with a blank device: only "empty" volumes are ever formatted."""
    if adopt_volume_id(pvc) == volume.id:
        return "adopted"  # tagged as the claim's by adoption: still the admin's data, never formatted
    if volume.snapshot_id or volume.metadata.get(names.META_RESTORED_FROM_BACKUP):
        return "snapshot"  # a restored backup holds data like a snapshot does: never formatted
    if volume.source_volid:
        return "volume"
    if volume.metadata.get(names.META_PVC_UID) != pvc["metadata"]["uid"]:
        return "adopted"
    requested = requested_content(pvc)
    if requested != "empty":
        # The claim asked for a source Cinder does not show: never let the node format it as new.
        log.warning(
            "volume_source_not_shown",
            pvc=f"{pvc['metadata'].get('namespace')}/{pvc['metadata'].get('name')}",
            volume_id=volume.id,
            requested=requested,
        )
    return requested


def fail_claim(
    ctx: Context, pvc: Obj, sc_name: str, reason: str, message: str, *, retry: float = 0.0
) -> Outcome:
    """A final failure: one Warning (deduplicated), a metric, and no fast retry.

    It is also recorded on the claim (one write), so that a new leader honours the slow retry instead of
    trying again at once: under leader churn a typo'd class would otherwise cost calls per leader.
    """
    _record_failure(ctx, pvc, retry)
    ctx.events.event(pvc, "Warning", PROVISIONING_FAILED, message)
    ctx.metrics.provision_total.labels(storage_class=sc_name, outcome="failure", reason=reason).inc()
    log.warning(
        "provisioning_failed",
        pvc=f"{pvc['metadata']['namespace']}/{pvc['metadata']['name']}",
        reason=reason,
        error=message,
    )
    return final(reason, message, retry_after=retry)


def _record_failure(ctx: Context, pvc: Obj, retry: float) -> None:
    meta = pvc["metadata"]
    if not meta.get("uid") or meta.get("deletionTimestamp"):
        return
    sc_name = class_name_of(pvc)
    sc = ctx.classes.get(sc_name) if sc_name else None
    now = ctx.wall()
    due = f"{now + retry:.0f}" if retry > 0 else "-"
    value = f"{now:.0f} {due} {claim_shape(pvc, sc)}"
    hint = ctx.hints.get(meta["uid"])
    refused, hint.refused = hint.refused, None
    if refused is not None and _release_refused(ctx, pvc, refused, value):
        return
    old = (meta.get("annotations") or {}).get(names.ANN_FINAL_FAILURE, "")
    if old and old.split(" ")[1:] == value.split(" ")[1:]:
        return
    try:
        ctx.kube.patch(
            "persistentvolumeclaims",
            meta["name"],
            {"metadata": {"annotations": {names.ANN_FINAL_FAILURE: value}}},
            namespace=meta["namespace"],
            patch_type="merge",
        )
    except KubeError as e:  # only an optimisation for the next leader: never fail the step for it
        log.warning("final_failure_record_failed", error=str(e))


def _release_refused(ctx: Context, pvc: Obj, refused: Refused, value: str) -> bool:
    """Record the failure and drop the intent in one patch, if the claim's mark is still the refused one.

    The attempt that wrote ``refused.mark`` created nothing (Cinder refused its create for good), and any
    later create would have re-stamped the mark first: so while the test on the mark holds, no volume of
    this claim can exist and the finalizer, step and mark may go — the claim is back to "never created"
    (``never_created``), and its slow retry, or a new leader's, is one create: no lookup, no wait for an
    in-flight create. A failed test (the claim moved on) falls back to recording the failure alone.
    True if the failure was recorded.
    """
    meta = pvc["metadata"]
    kept = [f for f in refused.finalizers if f != names.PVC_PROVISIONING_FINALIZER]
    ann = "/metadata/annotations/"
    ops: list[dict[str, Any]] = [
        {"op": "test", "path": "/metadata/uid", "value": meta["uid"]},
        {"op": "test", "path": ann + json_pointer(names.ANN_CREATE_ATTEMPT), "value": refused.mark},
        {"op": "test", "path": "/metadata/finalizers", "value": list(refused.finalizers)},
        {"op": "replace", "path": "/metadata/finalizers", "value": kept},
        {"op": "remove", "path": ann + json_pointer(names.ANN_CREATE_ATTEMPT)},
        {"op": "remove", "path": ann + json_pointer(names.ANN_PROVISIONING_STEP)},
        {"op": "add", "path": ann + json_pointer(names.ANN_FINAL_FAILURE), "value": value},
    ]
    try:
        ctx.kube.patch(
            "persistentvolumeclaims", meta["name"], ops, namespace=meta["namespace"], patch_type="json"
        )
    except KubeNotFound:
        return True
    except KubeError as e:  # the claim moved on (a test failed): keep the intent, record the failure alone
        log.info("refused_intent_kept", pvc=f"{meta['namespace']}/{meta['name']}", error=str(e))
        return False
    return True
