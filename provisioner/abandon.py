"""Abandoning a claim that is deleted while our intent finalizer is on it.

Give Cinder back first (unexport, delete, wait until gone), then the provisioner-owned Secret, and only
then let the claim go by removing the finalizer: a deletion mid-provision can never orphan a volume.
"""

from __future__ import annotations

from provisioner import names
from provisioner.claims import class_name_of, drop_intent, other_create_in_flight, params_or_none
from provisioner.context import Context, Obj
from provisioner.duplicates import remove_volumes, volumes_of_claim
from provisioner.errors import CinderError, KubeNotFound
from provisioner.events import PROVISIONING_CLEANUP_FAILED
from provisioner.mapping import secret_name_for
from provisioner.outcome import DONE, Outcome, error, requeue


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
    params = params_or_none(ctx, ctx.classes.get(class_name_of(pvc)))
    secret_namespace = params.secret_namespace if params else ctx.settings.secret_namespace
    try:
        cinder = ctx.cinder(params.cloud if params else None)
        volumes = volumes_of_claim(ctx, cinder, uid)
        if volumes:  # any status: wait until Cinder no longer lists them
            remove_volumes(ctx, cinder, pvc, volumes, keep=None, duplicates=False)
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
