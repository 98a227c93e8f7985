"""Abandoning a claim that is deleted while our intent finalizer is on it.

Give Cinder back first (unexport, delete, wait until gone), then the provisioner-owned Secret, and only
then let the claim go by removing the finalizer: a deletion mid-provision can never orphan a volume.
"""

from __future__ import annotations

from provisioner.domain import names
from provisioner.domain.errors import CinderError, InvalidInput, KubeNotFound
from provisioner.domain.model import DELETING
from provisioner.domain.outcome import DONE, Outcome, error, requeue
from provisioner.domain.params import parse_class_parameters
from provisioner.flows.claims import (
    WAITING,
    class_name_of,
    drop_intent,
    lookup_volume,
    other_create_in_flight,
)
from provisioner.flows.context import Context, Obj
from provisioner.flows.export import cleanup_volume
from provisioner.mapping.build import secret_name_for
from provisioner.telemetry.events import PROVISIONING_CLEANUP_FAILED


def abandon(ctx: Context, pvc: Obj) -> Outcome:
    """The claim is being deleted while our intent finalizer is on it: give Cinder back, then let it go."""
    meta = pvc["metadata"]
    uid = meta["uid"]
    pv_name = names.pv_name_for(uid)
    pv = ctx.pvs.get(pv_name)
    if pv is not None and ((pv.get("spec") or {}).get("claimRef") or {}).get("uid") == uid:
        drop_intent(ctx, pvc)  # the PV exists: the delete flow owns the volume from here
        ctx.hints.drop(uid)
        return DONE
    hint = ctx.hints.get(uid)
    sc = ctx.classes.get(class_name_of(pvc))
    cloud = None
    secret_namespace = ctx.settings.secret_namespace
    if sc is not None:
        try:
            params = parse_class_parameters(sc.get("parameters"), default_secret_namespace=secret_namespace)
            cloud, secret_namespace = params.cloud, params.secret_namespace
        except InvalidInput:
            pass
    try:
        cinder = ctx.cinder(cloud)
        volume = lookup_volume(ctx, cinder, pv_name, hint)
        if volume is not None:
            if volume.status == DELETING:
                return requeue(ctx.poll_delay(hint), "deleting")
            if volume.status in WAITING:
                return requeue(ctx.poll_delay(hint), "waiting_to_delete")
            if not ctx.is_leader():
                return error("not_leader", "lost leadership before delete")
            cleanup_volume(
                ctx,
                cinder,
                volume.id,
                None,
                "attachment" if volume.attachment_ids else "legacy",
                attachment_ids=volume.attachment_ids,
            )
            return requeue(ctx.poll_delay(hint), "deleting")
    except CinderError as e:
        ctx.events.event(pvc, "Warning", PROVISIONING_CLEANUP_FAILED, f"cleaning up Cinder volume: {e}")
        return error(type(e).__name__, str(e))
    if (wait := other_create_in_flight(ctx, pvc)) > 0:
        return requeue(wait, "previous_create_in_flight")  # it could still land: look again after
    _delete_owned_secret(ctx, pv_name, secret_namespace)
    drop_intent(ctx, pvc)
    ctx.hints.drop(uid)
    return DONE


def _delete_owned_secret(ctx: Context, pv_name: str, namespace: str) -> None:
    try:
        ctx.kube.delete("secrets", secret_name_for(pv_name), namespace=namespace)
    except KubeNotFound:
        pass
