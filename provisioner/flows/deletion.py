"""The delete flow (DESIGN.md "Delete"): a Released PV with policy Delete gives its Cinder volume back.

Order: unexport (attachment delete / terminate) → delete the volume (404 = success) → wait by requeue until
it is gone → remove our PV finalizer and delete the PV. Secrets go with the PV (ownerReference). A volume
with snapshots is not an error the user caused: a Normal event and a slow retry, unless the class allows
cascade. A PV deleted directly by an admin with reclaimPolicy Retain keeps its volume.
"""

from __future__ import annotations

from typing import Any

import structlog

from provisioner.domain import names
from provisioner.domain.errors import (
    CinderConflict,
    CinderError,
    CinderNotFound,
    CinderRateLimited,
    InvalidInput,
    KubeNotFound,
)
from provisioner.domain.model import DELETING, AttachmentId, ExportMode, VolumeId
from provisioner.domain.outcome import DONE, Outcome, error, requeue
from provisioner.domain.params import parse_class_parameters
from provisioner.flows.context import Context, Obj
from provisioner.flows.duplicates import remove_duplicates, volumes_of_claim
from provisioner.flows.export import unexport
from provisioner.telemetry.events import VOLUME_DELETE_WAITING, VOLUME_FAILED_DELETE

log = structlog.get_logger(__name__)


def is_our_pv(pv: Obj, provisioner_name: str) -> bool:
    """Provisioned by us and naming a Cinder volume."""
    ann = pv["metadata"].get("annotations") or {}
    return ann.get(names.ANN_PROVISIONED_BY) == provisioner_name and bool(ann.get(names.ANN_VOLUME_ID))


def reconcile_volume(ctx: Context, pv_name: str) -> Outcome:
    """One step of deleting the volume behind PV ``pv_name`` (if it is due)."""
    pv = ctx.pvs.get(pv_name)
    if pv is None or not is_our_pv(pv, ctx.settings.provisioner_name):
        return DONE
    meta = pv["metadata"]
    spec = pv.get("spec") or {}
    phase = (pv.get("status") or {}).get("phase")
    policy = spec.get("persistentVolumeReclaimPolicy", "Retain")
    deleting = bool(meta.get("deletionTimestamp"))
    ours_finalizer = names.PV_VOLUME_FINALIZER in (meta.get("finalizers") or [])
    if policy != "Delete":
        if deleting and ours_finalizer:
            _drop_finalizer(ctx, pv_name)  # Retain: the admin deleted the PV object, the volume stays
        return DONE
    if phase == "Bound" or not (phase == "Released" or deleting):
        return DONE  # never delete the volume of a bound PV, even one an admin asked to delete
    ann = meta.get("annotations") or {}
    volume_id = VolumeId(ann[names.ANN_VOLUME_ID])
    attachment_id = ann.get(names.ANN_ATTACHMENT_ID)
    mode: ExportMode = (
        "attachment"
        if ann.get(names.ANN_EXPORT_MODE, "attachment") == "attachment" and attachment_id
        else "legacy"
    )
    sc_name = str(spec.get("storageClassName") or "")
    cascade = False
    sc = ctx.classes.get(sc_name) if sc_name else None
    if sc is not None:
        try:
            cascade = parse_class_parameters(
                sc.get("parameters"), default_secret_namespace=ctx.settings.secret_namespace
            ).cascade_delete
        except InvalidInput:
            cascade = False
    hint = ctx.hints.get(meta.get("uid", pv_name))
    log_ = log.bind(pv=pv_name, volume_id=volume_id)
    if (wait := ctx.cloud_wait(ann.get(names.ANN_CLOUD))) > 0:
        return requeue(wait, "rate_limited")
    try:
        cinder = ctx.cinder(ann.get(names.ANN_CLOUD))
        try:
            volume = cinder.get_volume(volume_id)
        except CinderNotFound:
            volume = None
        if volume is not None:
            if volume.status == DELETING:
                return _wait(ctx, pv, hint)
            if not ctx.is_leader():
                return error("not_leader", "lost leadership before delete")
            foreign = [a for a in volume.attachment_ids if a != attachment_id]
            if foreign and mode == "attachment":
                others = ", ".join(foreign)
                msg = f"Cinder volume {volume_id} has attachments not made by this provisioner: {others}"
                ctx.events.event(pv, "Warning", VOLUME_FAILED_DELETE, msg)
                return error("foreign_attachment", msg, at_least=60.0)
            unexport(ctx, cinder, volume_id, AttachmentId(attachment_id) if attachment_id else None, mode)
            try:
                cinder.delete_volume(volume_id, cascade=cascade)
            except CinderConflict as e:
                if "snapshot" in str(e).lower():
                    ctx.events.event(
                        pv,
                        "Normal",
                        VOLUME_DELETE_WAITING,
                        f"Cinder volume {volume_id} has snapshots; waiting for them to be deleted "
                        "(set cascadeDelete on the class to delete them with the volume)",
                    )
                    return requeue(60.0, "has_snapshots")
                raise
            ctx.checkpoint("after_cinder_delete")
            log_.info("volume_delete_requested")
            return _wait(ctx, pv, hint)
    except CinderRateLimited as e:
        ctx.hold_cloud(ann.get(names.ANN_CLOUD), e.retry_after or 1.0)
        return requeue(e.retry_after or 1.0, "rate_limited")
    except CinderError as e:
        ctx.events.event(pv, "Warning", VOLUME_FAILED_DELETE, f"deleting Cinder volume {volume_id}: {e}")
        ctx.metrics.delete_total.labels(
            storage_class=sc_name, outcome="failure", reason=type(e).__name__
        ).inc()
        return error(type(e).__name__, str(e))
    claim_uid = (spec.get("claimRef") or {}).get("uid")
    if claim_uid:
        try:
            cinder = ctx.cinder(ann.get(names.ANN_CLOUD))
            leftovers = [v for v in volumes_of_claim(ctx, cinder, claim_uid) if v.id != volume_id]
            if leftovers and not remove_duplicates(ctx, cinder, pv, leftovers, keep=None):
                return requeue(ctx.poll_delay(hint), "deleting_duplicates")
        except CinderError as e:
            return error(type(e).__name__, str(e))
    ctx.checkpoint("before_pv_finalizer_removal")
    # The volume is gone: let the PV go (and its Secret, even if a crash kept its owner reference off).
    _delete_owned_secret(ctx, pv)
    if ours_finalizer:
        _drop_finalizer(ctx, pv_name)
    if not deleting:
        try:
            ctx.kube.delete("persistentvolumes", pv_name, uid=meta.get("uid"))
        except KubeNotFound:
            pass
    ctx.hints.drop(meta.get("uid", pv_name))
    ctx.metrics.delete_total.labels(storage_class=sc_name, outcome="success", reason="").inc()
    log_.info("volume_deleted")
    return DONE


def _wait(ctx: Context, pv: Obj, hint: Any) -> Outcome:
    if ctx.clock() - hint.started > ctx.settings.delete_deadline_seconds and not hint.deadline_warned:
        hint.deadline_warned = True
        ctx.events.event(
            pv,
            "Warning",
            VOLUME_FAILED_DELETE,
            f"Cinder volume still deleting after {ctx.settings.delete_deadline_seconds:.0f}s",
        )
    return requeue(ctx.poll_delay(hint), "deleting")


def _delete_owned_secret(ctx: Context, pv: Obj) -> None:
    from provisioner.mapping.build import secret_name_for

    spec = pv.get("spec") or {}
    pv_name = pv["metadata"]["name"]
    for ref in _secret_refs(spec):
        if ref.get("name") == secret_name_for(pv_name) and ref.get("namespace"):
            try:
                ctx.kube.delete("secrets", ref["name"], namespace=ref["namespace"])
            except KubeNotFound:
                pass


def _secret_refs(spec: Obj) -> list[dict[str, Any]]:
    refs = []
    for source, key in (("rbd", "secretRef"), ("iscsi", "secretRef"), ("csi", "nodeStageSecretRef")):
        ref = (spec.get(source) or {}).get(key)
        if isinstance(ref, dict):
            refs.append(ref)
    return refs


def _drop_finalizer(ctx: Context, pv_name: str) -> None:
    patch = {"metadata": {"$deleteFromPrimitiveList/finalizers": [names.PV_VOLUME_FINALIZER]}}
    try:
        ctx.kube.patch("persistentvolumes", pv_name, patch, patch_type="strategic")
    except KubeNotFound:
        pass
