"""Claim-level helpers shared by the provision and abandon flows.

Which claims are ours, the intent finalizer (persisted with a uid test before any Cinder create, removed
last), and the lookup of a claim's Cinder volume by remembered id or by name + cluster tag.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from provisioner.domain import names
from provisioner.domain.errors import CinderNotFound, KubeConflict, KubeInvalid, KubeNotFound
from provisioner.domain.model import AVAILABLE, CREATING, Volume
from provisioner.flows.context import Context, Hint, Obj

EXPORTABLE = frozenset({AVAILABLE, "reserved", "in-use", "attaching"})
WAITING = frozenset({CREATING, "downloading", "restoring-backup", "maintenance", "retyping", "extending"})


def other_create_in_flight(ctx: Context, pvc: Obj) -> float:
    """Seconds to wait before our own create: another replica's create may still be landing.

    Fencing stops a replica from *sending* Cinder mutations once it is unsure it leads, but a create it
    sent just before may reach Cinder after a new leader has looked the volume up — a duplicate. So every
    create first records "<identity> <time>" on the claim, and a different replica waits until that
    attempt can no longer land (``create_in_flight_seconds``) before it looks up and creates.
    """
    raw = (pvc["metadata"].get("annotations") or {}).get(names.ANN_CREATE_ATTEMPT, "")
    who, _, when = raw.partition(" ")
    if not who or who == ctx.settings.identity:
        return 0.0
    try:
        sent = float(when)
    except ValueError:
        return 0.0
    return max(0.0, sent + ctx.settings.create_in_flight_seconds - ctx.wall())


def never_created(ctx: Context, pvc: Obj) -> bool:
    """No replica can have sent a create for this claim: the lookup by name may be skipped.

    Every create is preceded, in the same patch, by our intent finalizer, the step annotation and the
    ``create-attempt`` mark (``_create`` → ``persist_intent``). ``drop_intent`` removes the first two
    once the PV exists or the claim is bound, never the mark; only the failure record of an attempt
    Cinder refused for good removes all three, tested on that attempt's mark
    (``provision_execute._release_refused``). So a claim carrying none of the three has no volume of
    ours, *if* the copy is current: the caller proves that by making its intent patch conditional on
    this copy's ``resourceVersion`` (``persist_intent(expect_version=…)``). Without an identity no
    attempt mark is ever written, so nothing is proven.
    """
    meta = pvc["metadata"]
    ann = meta.get("annotations") or {}
    return bool(
        ctx.settings.identity
        and meta.get("resourceVersion")
        and names.PVC_PROVISIONING_FINALIZER not in (meta.get("finalizers") or [])
        and names.ANN_CREATE_ATTEMPT not in ann
        and names.ANN_PROVISIONING_STEP not in ann
    )


def class_name_of(pvc: Obj) -> str:
    """The claim's StorageClass name: the beta annotation wins, like kube-controller-manager."""
    ann = pvc["metadata"].get("annotations") or {}
    return str(ann.get(names.ANN_BETA_STORAGE_CLASS) or (pvc.get("spec") or {}).get("storageClassName") or "")


def is_ours(pvc: Obj, storage_class: Obj | None, provisioner_name: str) -> bool:
    """The handshake annotation (or, without it, the class) names our provisioner."""
    ann = pvc["metadata"].get("annotations") or {}
    marked = ann.get(names.ANN_STORAGE_PROVISIONER) or ann.get(names.ANN_BETA_STORAGE_PROVISIONER)
    if marked:
        return bool(marked == provisioner_name)
    return storage_class is not None and storage_class.get("provisioner") == provisioner_name


def lookup_volume(
    ctx: Context, cinder: Any, pv_name: str, hint: Hint, *, cloud: str | None = None
) -> Volume | None:
    """The claim's volume: by remembered id, else by name + cluster tag (never a silent pick of two).

    With ``cloud``, a remembered volume still on the status board (a create answered ``creating``) is
    read from the round's shared list when one started within a poll interval of this poll's due time
    (``status_board``); otherwise, and whenever the board has no reading, by its own ``get``.
    """
    if hint.volume_id is not None:
        if cloud is not None:
            seen = ctx.board.read(
                cloud,
                hint.volume_id,
                not_before=hint.next_poll_at - ctx.settings.poll_initial_seconds,
                now=ctx.clock(),
                lister=lambda since: cinder.list_volumes(
                    metadata={names.META_CLUSTER: ctx.settings.cluster_id}, created_since=since
                ),
            )
            if seen is not None:
                return seen
        try:
            volume: Volume = cinder.get_volume(hint.volume_id)
        except CinderNotFound:
            if cloud is not None:
                ctx.board.forget(cloud, hint.volume_id)
            hint.volume_id = None
        else:
            if cloud is not None and volume.status != CREATING:
                ctx.board.forget(cloud, volume.id)
            return volume
    found: Volume | None = cinder.find_volume(name=pv_name, cluster=ctx.settings.cluster_id)
    return found


def json_pointer(key: str) -> str:
    """``key`` escaped as one JSON Pointer (RFC 6901) segment."""
    return key.replace("~", "~0").replace("/", "~1")


def persist_intent(
    ctx: Context,
    pvc: Obj,
    step: str | None = None,
    *,
    extra: Mapping[str, str] | None = None,
    cloud: str | None = None,
    expect_version: str | None = None,
) -> Obj | None:
    """Add our finalizer (+ step, ``extra`` and cloud annotations) with a uid test; the live claim, or None.

    The cloud is recorded with the intent so that abandoning the claim later finds its volume on the right
    cloud even when the StorageClass is gone by then (deleted together with the claim). With
    ``expect_version`` the patch also tests the claim's ``resourceVersion``: it applies only to exactly
    the copy the caller decided on (a failed test is a 422, ``KubeInvalid``). A copy without finalizers
    or annotations gets the same test on its own version, because adding the whole list or map would
    replace what the live claim has there; that test failing is ``KubeConflict`` (transient).
    """
    meta = pvc["metadata"]
    ops: list[dict[str, Any]] = [{"op": "test", "path": "/metadata/uid", "value": meta["uid"]}]
    finalizers = meta.get("finalizers")
    annotations = dict(extra or {})
    if cloud and (meta.get("annotations") or {}).get(names.ANN_CLOUD) != cloud:
        annotations[names.ANN_CLOUD] = cloud
    if step:
        annotations[names.ANN_PROVISIONING_STEP] = step
    # Adding a whole list or map replaces whatever the live claim has there: only for exactly this copy.
    whole = finalizers is None or (bool(annotations) and meta.get("annotations") is None)
    guard = expect_version is None and whole and bool(meta.get("resourceVersion"))
    if expect_version is not None or guard:
        version = expect_version if expect_version is not None else meta["resourceVersion"]
        ops.append({"op": "test", "path": "/metadata/resourceVersion", "value": version})
    if finalizers is None:
        ops.append({"op": "add", "path": "/metadata/finalizers", "value": [names.PVC_PROVISIONING_FINALIZER]})
    elif names.PVC_PROVISIONING_FINALIZER not in finalizers:
        ops.append({"op": "add", "path": "/metadata/finalizers/-", "value": names.PVC_PROVISIONING_FINALIZER})
    if annotations and meta.get("annotations") is None:
        ops.append({"op": "add", "path": "/metadata/annotations", "value": annotations})
    else:
        for key, value in annotations.items():
            ops.append({"op": "add", "path": "/metadata/annotations/" + json_pointer(key), "value": value})
    try:
        live = ctx.kube.patch(
            "persistentvolumeclaims", meta["name"], ops, namespace=meta["namespace"], patch_type="json"
        )
    except KubeNotFound:
        return None
    except KubeInvalid as e:
        if not guard:
            raise
        # The cached copy had no finalizers / annotations, the live claim has changed since: retry by
        # backoff (transient) once the cache caught up, never overwrite what someone else added.
        raise KubeConflict(
            f"claim {meta['namespace']}/{meta['name']} changed since it was cached: {e}"
        ) from e
    ctx.hints.intent_persisted(meta["uid"])
    lmeta = live["metadata"]
    if lmeta.get("deletionTimestamp") or (live.get("spec") or {}).get("volumeName"):
        return None
    return live


def drop_intent(ctx: Context, pvc: Obj) -> None:
    """Remove our finalizer and step annotation (strategic merge: a set operation, no stale-list race).

    The ``create-attempt`` mark stays: it is the proof that a create happened (``never_created``). A
    claim cache that sees the release before the PV cache sees the PV must not take the claim for one
    nobody created — that made a second volume for a bound claim.
    """
    meta = pvc["metadata"]
    if ctx.hints.intent_released(meta["uid"]):
        return  # already removed by us; the cached copy is just late
    patch = {
        "metadata": {
            "$deleteFromPrimitiveList/finalizers": [names.PVC_PROVISIONING_FINALIZER],
            "annotations": {names.ANN_PROVISIONING_STEP: None, names.ANN_FINAL_FAILURE: None},
        }
    }
    try:
        ctx.kube.patch(
            "persistentvolumeclaims", meta["name"], patch, namespace=meta["namespace"], patch_type="strategic"
        )
    except KubeNotFound:
        pass
    ctx.hints.mark_intent_released(meta["uid"])
