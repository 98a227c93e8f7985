"""The provision flow (DESIGN.md "Provision"): one claim, one step per call, level-based and crash-safe.

Each call re-reads the caches, decides the next step, does it and returns an Outcome. Nothing blocks: a
volume that is still ``creating`` means "requeue after a poll delay". The order of side effects is what
makes crashes harmless: the PVC finalizer (intent) is persisted before any Cinder create; the volume is
found by name + cluster tag before creating one; a PV AlreadyExists counts only if it is ours; the
finalizer is removed last.
"""

from __future__ import annotations

from typing import Any

import structlog

from provisioner.domain import names
from provisioner.domain.errors import (
    CinderAmbiguous,
    CinderQuotaExceeded,
    CinderRateLimited,
    InvalidInput,
    KubeAlreadyExists,
    KubeError,
    ProvisionerError,
)
from provisioner.domain.model import DELETING, ERROR, CreateVolumeRequest, Volume
from provisioner.domain.outcome import DONE, Outcome, error, final, requeue
from provisioner.domain.params import ClassParams, parse_class_fields, parse_class_parameters
from provisioner.domain.quantity import quantity_to_gib
from provisioner.flows.abandon import abandon
from provisioner.flows.claims import (
    EXPORTABLE,
    WAITING,
    class_name_of,
    drop_intent,
    is_ours,
    lookup_volume,
    other_create_in_flight,
    persist_intent,
)
from provisioner.flows.context import Context, Hint, Obj
from provisioner.flows.duplicates import choose_keeper, remove_duplicates, volumes_of_claim
from provisioner.flows.export import cleanup_volume, export_volume
from provisioner.flows.sources import VolumeSource, resolve_source
from provisioner.mapping.build import (
    ContentSource,
    MappedObjects,
    ProvisionedVolume,
    build_objects,
    parse_claim,
)
from provisioner.telemetry.events import PROVISIONING, PROVISIONING_FAILED, PROVISIONING_SUCCEEDED

log = structlog.get_logger(__name__)


def reconcile_claim(ctx: Context, key: str) -> Outcome:
    """One step of provisioning (or abandoning) the claim ``namespace/name``."""
    pvc = ctx.pvcs.get(key)
    if pvc is None:
        return DONE
    meta = pvc["metadata"]
    uid = meta["uid"]
    ours_finalizer = names.PVC_PROVISIONING_FINALIZER in (meta.get("finalizers") or [])
    if meta.get("deletionTimestamp"):
        return abandon(ctx, pvc) if ours_finalizer else DONE
    if (pvc.get("spec") or {}).get("volumeName"):
        if ours_finalizer:
            drop_intent(ctx, pvc)
        ctx.hints.drop(uid)
        return DONE
    sc_name = class_name_of(pvc)
    sc = ctx.classes.get(sc_name) if sc_name else None
    if not sc_name or not is_ours(pvc, sc, ctx.settings.provisioner_name):
        return DONE
    pv_name = names.pv_name_for(uid)
    existing_pv = ctx.pvs.get(pv_name)
    if existing_pv is not None:
        claim_ref = (existing_pv.get("spec") or {}).get("claimRef") or {}
        if claim_ref.get("uid") == uid:
            if ours_finalizer:
                drop_intent(ctx, pvc)
            ctx.hints.drop(uid)
            return DONE
        return _fail(
            ctx, pvc, sc_name, "pv_name_conflict", f"PV {pv_name} exists but belongs to another claim"
        )
    if sc is None:
        return _fail(ctx, pvc, sc_name, "class_not_found", f"StorageClass {sc_name!r} not found", retry=60.0)
    try:
        fields = parse_class_fields(sc)
        params = parse_class_parameters(
            sc.get("parameters"), default_secret_namespace=ctx.settings.secret_namespace
        )
    except InvalidInput as e:
        return _fail(ctx, pvc, sc_name, "invalid_parameters", f"StorageClass {sc_name}: {e}")
    try:
        parse_claim(pvc, params=params, multiattach=params.multiattach)  # refuse bad modes before Cinder
    except InvalidInput as e:
        return _fail(ctx, pvc, sc_name, "invalid_claim", f"claim: {e}")
    ann = meta.get("annotations") or {}
    if fields.volume_binding_mode == "WaitForFirstConsumer" and not ann.get(names.ANN_SELECTED_NODE):
        return DONE
    log_ = log.bind(pvc=key, pv=pv_name)
    hint = ctx.hints.get(uid)
    if (wait := ctx.cloud_wait(params.cloud)) > 0:
        return requeue(wait, "rate_limited")
    if (wait := ctx.poll_not_due(hint)) > 0 and ours_finalizer:
        return requeue(wait, "poll_not_due")  # woken by an event that changes nothing Cinder-side
    try:
        cinder = ctx.cinder(params.cloud)
        try:
            volume = lookup_volume(ctx, cinder, pv_name, hint)
        except CinderAmbiguous:
            # Only a create that landed after a leader change can do this (see duplicates.py).
            # The hint stays unset until only one is left, so the next round looks them up again.
            candidates = volumes_of_claim(ctx, cinder, uid)
            keeper = choose_keeper(candidates) if candidates else None
            remove_duplicates(ctx, cinder, pvc, candidates, keep=keeper.id if keeper else None)
            return requeue(ctx.poll_delay(hint), "duplicates")
        if volume is None:
            return _create(ctx, pvc, sc=sc, params=params, cinder=cinder, hint=hint, log_=log_)
        hint.volume_id = volume.id
        if not ours_finalizer and persist_intent(ctx, pvc) is None:
            return requeue(0.0, "claim_changed")
        return _advance(ctx, pvc, sc=sc, params=params, cinder=cinder, volume=volume, hint=hint, log_=log_)
    except CinderQuotaExceeded as e:
        return _fail(
            ctx, pvc, sc_name, "quota", f"Cinder quota exceeded: {e}", retry=ctx.settings.final_retry_seconds
        )
    except CinderRateLimited as e:
        ctx.hold_cloud(params.cloud, e.retry_after or 1.0)
        return requeue(e.retry_after or 1.0, "rate_limited")
    except ProvisionerError as e:
        if e.final:
            return _fail(ctx, pvc, sc_name, type(e).__name__, str(e))
        log_.warning("provision_step_failed", error=str(e))
        ctx.events.event(pvc, "Warning", PROVISIONING_FAILED, f"will retry: {e}")
        return error(type(e).__name__, str(e))


def _create(
    ctx: Context, pvc: Obj, *, sc: Obj, params: ClassParams, cinder: Any, hint: Hint, log_: Any
) -> Outcome:
    if (wait := other_create_in_flight(ctx, pvc)) > 0:
        return requeue(wait, "previous_create_in_flight")
    attempt = {names.ANN_CREATE_ATTEMPT: f"{ctx.settings.identity} {ctx.wall():.3f}"}
    live = persist_intent(ctx, pvc, step="creating-volume", extra=attempt if ctx.settings.identity else None)
    if live is None:
        return requeue(0.0, "claim_changed")
    meta = live["metadata"]
    spec = live.get("spec") or {}
    size = quantity_to_gib(str(((spec.get("resources") or {}).get("requests") or {}).get("storage", "")))
    source = resolve_source(ctx, live, params, cinder)
    if not ctx.is_leader():
        return error("not_leader", "lost leadership before create")
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
    volume = cinder.create_volume(
        CreateVolumeRequest(
            name=pv_name,
            size_gib=max(size, source.min_size_gib),
            volume_type=params.volume_type,
            availability_zone=params.availability_zone,
            snapshot_id=source.snapshot_id,
            source_volid=source.source_volid,
            metadata=metadata,
            description=f"Kubernetes PVC {meta['namespace']}/{meta['name']}",
        )
    )
    ctx.checkpoint("after_cinder_create")
    hint.volume_id = volume.id
    hint.polls = 0
    log_.info("volume_created", volume_id=volume.id, size_gib=volume.size_gib)
    ctx.events.event(live, "Normal", PROVISIONING, f"creating Cinder volume {volume.id} ({pv_name})")
    return requeue(ctx.poll_delay(hint), "creating")


def _advance(
    ctx: Context,
    pvc: Obj,
    *,
    sc: Obj,
    params: ClassParams,
    cinder: Any,
    volume: Volume,
    hint: Hint,
    log_: Any,
) -> Outcome:
    sc_name = sc["metadata"]["name"]
    if volume.status in WAITING:
        if ctx.clock() - hint.started > ctx.settings.create_deadline_seconds and not hint.deadline_warned:
            hint.deadline_warned = True
            ctx.events.event(
                pvc,
                "Warning",
                PROVISIONING_FAILED,
                f"Cinder volume {volume.id} still {volume.status} after "
                f"{ctx.settings.create_deadline_seconds:.0f}s; still waiting",
            )
        return requeue(ctx.poll_delay(hint), "waiting")
    if volume.status == DELETING:
        return requeue(ctx.poll_delay(hint), "deleting")
    if volume.status in (ERROR, "error_restoring", "error_extending", "error_deleting"):
        hint.error_volumes += 1
        if not ctx.is_leader():
            return error("not_leader", "lost leadership before delete")
        cinder.delete_volume(volume.id)
        hint.volume_id = None
        attempts = f"{hint.error_volumes}/{ctx.settings.max_error_retries}"
        msg = f"Cinder volume {volume.id} went to {volume.status}; deleted it (attempt {attempts})"
        if hint.error_volumes >= ctx.settings.max_error_retries:
            return _fail(
                ctx, pvc, sc_name, "volume_error", msg + "; giving up", retry=ctx.settings.final_retry_seconds
            )
        ctx.events.event(pvc, "Warning", PROVISIONING_FAILED, msg + "; retrying")
        return error("volume_error", msg)
    if volume.status not in EXPORTABLE:
        return requeue(ctx.poll_delay(hint), volume.status)
    if not ctx.is_leader():
        return error("not_leader", "lost leadership before export")
    exported = export_volume(ctx, cinder, volume)
    ctx.checkpoint("after_export")
    source_kind = resolve_content_kind(pvc, volume)
    pv_name = names.pv_name_for(pvc["metadata"]["uid"])
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
        cleanup_volume(ctx, cinder, volume.id, exported.attachment_id, exported.mode)
        hint.volume_id = None
        return _fail(ctx, pvc, sc_name, type(e).__name__, f"cannot use Cinder volume {volume.id}: {e}")
    outcome = _create_objects(
        ctx, pvc, mapped=mapped, volume=volume, cinder=cinder, exported=exported, pv_name=pv_name, log_=log_
    )
    if outcome is not None:
        return outcome
    ctx.checkpoint("after_pv_create")
    drop_intent(ctx, pvc)
    ctx.hints.drop(pvc["metadata"]["uid"])
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
            created = live
        else:
            # Not ours: never take a 409 as success (the leak the Go provisioner had). Give our volume back.
            cleanup_volume(ctx, cinder, volume.id, exported.attachment_id, exported.mode)
            ctx.hints.drop(pvc["metadata"]["uid"])
            return _fail(
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


def _needs_grow(pvc: Obj, volume: Volume) -> bool:
    return volume.snapshot_id is not None or volume.source_volid is not None


def resolve_content_kind(pvc: Obj, volume: Volume) -> ContentSource:
    """What the node agent may do with a blank device: only "empty" volumes are ever formatted."""
    if volume.snapshot_id:
        return "snapshot"
    if volume.source_volid:
        return "volume"
    if volume.metadata.get(names.META_PVC_UID) != pvc["metadata"]["uid"]:
        return "adopted"
    return "empty"


def _fail(ctx: Context, pvc: Obj, sc_name: str, reason: str, message: str, *, retry: float = 0.0) -> Outcome:
    """A final failure: one Warning (deduplicated), a metric, and no fast retry."""
    ctx.events.event(pvc, "Warning", PROVISIONING_FAILED, message)
    ctx.metrics.provision_total.labels(storage_class=sc_name, outcome="failure", reason=reason).inc()
    log.warning(
        "provisioning_failed",
        pvc=f"{pvc['metadata']['namespace']}/{pvc['metadata']['name']}",
        reason=reason,
        error=message,
    )
    return final(reason, message, retry_after=retry)


__all__ = ["VolumeSource", "abandon", "class_name_of", "is_ours", "reconcile_claim"]
