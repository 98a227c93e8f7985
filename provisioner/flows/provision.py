"""The provision flow (DESIGN.md "Provision"): one claim, observed, decided, one step at a time.

``observe_claim`` reads the caches into a ``ClaimState``; ``decide_claim`` (pure) says what the claim
needs from its Kubernetes side alone (nothing, abandon, fail, wait, or "look the volume up");
``observe_volume`` then asks Cinder for the claim's volume (by remembered id, else name + cluster tag)
and ``decide_volume`` (pure) picks the Cinder step: persist intent, create, wait, replace an ``error``
volume, resolve duplicates, or export and bind. ``execute`` performs exactly one step through the ports.
This module observes and dispatches; the states, steps and decisions are ``provision_decide`` (pure),
the executors ``provision_execute``. The order of side effects is what makes crashes harmless: the PVC
finalizer (intent) is persisted before any Cinder create; the volume is found by name + cluster tag
before creating one; a PV AlreadyExists counts only if it is ours; the finalizer is removed last.

Errors are classified, never parsed here: ``outcome_for_error`` maps our error tree to an Outcome (final
configuration errors name the user's field and are retried slowly; transient ones back off; 429 closes the
cloud for Retry-After).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Literal

import structlog

from provisioner.domain import names
from provisioner.domain.errors import (
    CinderAmbiguous,
    CinderNotFound,
    CinderQuotaExceeded,
    CinderRateLimited,
    ConfigError,
    InvalidInput,
    ProvisionerError,
)
from provisioner.domain.model import VolumeId
from provisioner.domain.outcome import DONE, Outcome, error, requeue
from provisioner.domain.params import ClassParams, parse_class_fields, parse_class_parameters
from provisioner.flows.abandon import abandon
from provisioner.flows.adopt import Adopt, Refuse, adopt, adopt_volume_id, check_adoption, check_claim
from provisioner.flows.claims import (
    class_name_of,
    drop_intent,
    is_ours,
    lookup_volume,
    never_created,
    other_create_in_flight,
    persist_intent,
)
from provisioner.flows.context import Context, Obj
from provisioner.flows.duplicates import choose_keeper, remove_duplicates, volumes_of_claim
from provisioner.flows.provision_decide import (
    Abandon,
    AdoptVolume,
    Bind,
    ClaimState,
    Create,
    Done,
    Fail,
    Limits,
    LookUp,
    PersistIntent,
    ReplaceErrorVolume,
    ResolveDuplicates,
    Step,
    VolumeState,
    Wait,
    claim_shape,
    decide,
    decide_claim,
    requested_gib,
)
from provisioner.flows.provision_execute import bind_volume, create_step, fail_claim
from provisioner.flows.sources import VolumeSource
from provisioner.flows.steps import drive
from provisioner.mapping.build import (
    parse_claim,
)
from provisioner.telemetry.events import PROVISIONING, PROVISIONING_FAILED

log = structlog.get_logger(__name__)


# ---- observation --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class _Seen:
    """One observation: the states, plus the objects the executor needs."""

    claim: ClaimState
    volume: VolumeState | None
    pvc: Obj
    sc: Obj | None
    params: ClassParams | None


#: How long a young claim waits for its StorageClass to reach our cache before "not found" is a Warning.
CLASS_CACHE_GRACE_SECONDS = 5.0


def _class_grace(created: Any, now: float) -> float:
    """Seconds left of the class-cache grace for a claim created at ``created`` (RFC 3339); 0 if unknown."""
    try:
        born = datetime.fromisoformat(str(created).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return 0.0
    return max(0.0, min(CLASS_CACHE_GRACE_SECONDS, born + CLASS_CACHE_GRACE_SECONDS - now))


def observe_claim(ctx: Context, key: str, pvc: Obj) -> tuple[ClaimState, Obj | None, ClassParams | None]:
    """The claim's Kubernetes side from the caches (no Cinder call)."""
    meta = pvc["metadata"]
    uid = meta["uid"]
    base = {
        "key": key,
        "uid": uid,
        "intent": names.PVC_PROVISIONING_FINALIZER in (meta.get("finalizers") or []),
    }
    if meta.get("deletionTimestamp"):
        return ClaimState(**base, deleting=True), None, None
    if (pvc.get("spec") or {}).get("volumeName"):
        return ClaimState(**base, bound_to=str(pvc["spec"]["volumeName"])), None, None
    sc_name = class_name_of(pvc)
    sc = ctx.classes.get(sc_name) if sc_name else None
    if not sc_name or not is_ours(pvc, sc, ctx.settings.provisioner_name):
        return ClaimState(**base, class_name=sc_name, ours=False), sc, None
    existing_pv = ctx.pvs.get(names.pv_name_for(uid))
    pv: Literal["none", "ours", "foreign"] = "none"
    if existing_pv is not None:
        claim_ref = (existing_pv.get("spec") or {}).get("claimRef") or {}
        pv = "ours" if claim_ref.get("uid") == uid else "foreign"
    elif ctx.hints.intent_released(uid):
        pv = "ours"  # we created its PV and released the claim: the PV cache is only late
    if sc is None or pv != "none":
        grace = _class_grace(meta.get("creationTimestamp"), ctx.wall()) if sc is None else 0.0
        state = ClaimState(**base, class_name=sc_name, class_found=sc is not None, class_grace=grace, pv=pv)
        return state, sc, None
    bad_class = bad_claim = None
    params: ClassParams | None = None
    waits = False
    try:
        fields = parse_class_fields(sc)
        params = parse_class_parameters(
            sc.get("parameters"), default_secret_namespace=ctx.settings.secret_namespace
        )
        waits = fields.volume_binding_mode == "WaitForFirstConsumer" and not (
            meta.get("annotations") or {}
        ).get(names.ANN_SELECTED_NODE)
    except InvalidInput as e:
        bad_class = str(e)
    if params is not None:
        try:
            parse_claim(pvc, params=params, multiattach=params.multiattach)  # bad modes never reach Cinder
            requested_gib(pvc)  # nor a zero, negative or malformed storage request
            _check_restore_annotation(pvc)
        except InvalidInput as e:
            bad_claim = str(e)
    adopt_id = adopt_volume_id(pvc)
    refused = None
    if params is not None and adopt_id is not None:
        refused = check_claim(
            adopt_id=adopt_id,
            allow=params.allow_adoption,
            storage_class=sc_name,
            has_data_source=_has_data_source(pvc),
            has_restore=bool((meta.get("annotations") or {}).get(names.ANN_RESTORE_FROM_SNAPSHOT)),
        )
    hint = ctx.hints.get(uid)
    return (
        ClaimState(
            **base,
            class_name=sc_name,
            bad_class=bad_class,
            bad_claim=bad_claim,
            waits_for_node=waits,
            cloud_wait=ctx.cloud_wait(params.cloud) if params is not None else 0.0,
            failed_wait=failure_wait(pvc, sc, now=ctx.wall()),
            adopting=adopt_id is not None,
            refused=refused,
            poll_wait=ctx.poll_not_due(hint),
        ),
        sc,
        params,
    )


#: Annotations the controller writes on a claim: not part of what the user shaped.


def failure_wait(pvc: Obj, sc: Obj | None, *, now: float) -> float:
    """Seconds until a final failure recorded on the claim is due again (0: none, due, or shape changed)."""
    raw = (pvc["metadata"].get("annotations") or {}).get(names.ANN_FINAL_FAILURE)
    if not raw:
        return 0.0
    parts = str(raw).split(" ")
    if len(parts) != 3 or parts[2] != claim_shape(pvc, sc):
        return 0.0
    if parts[1] == "-":
        return 3600.0  # final until the claim or class changes (either changes the shape)
    try:
        return max(0.0, float(parts[1]) - now)
    except ValueError:
        return 0.0


def _check_restore_annotation(pvc: Obj) -> None:
    """A restore id must look like a Cinder id before it goes anywhere near a URL."""
    raw = (pvc["metadata"].get("annotations") or {}).get(names.ANN_RESTORE_FROM_SNAPSHOT)
    if raw is not None and not names.is_cinder_id(raw):
        raise InvalidInput(
            f"metadata.annotations[{names.ANN_RESTORE_FROM_SNAPSHOT}]",
            f"{str(raw)[:80]!r} is not a Cinder snapshot id",
        )


def observe_volume(ctx: Context, pvc: Obj, params: ClassParams) -> VolumeState:
    """Ask Cinder for the claim's volume (one or two read calls; none for a claim never created)."""
    uid = pvc["metadata"]["uid"]
    hint = ctx.hints.get(uid)
    cinder = ctx.cinder(params.cloud)
    base = VolumeState(
        error_volumes=hint.error_volumes,
        waited=ctx.clock() - hint.started,
        deadline_warned=hint.deadline_warned,
        unannounced=not hint.announced,
    )
    adopt_id = adopt_volume_id(pvc)
    if adopt_id is not None:
        return replace(base, adoption=_check_named_volume(ctx, cinder, pvc, params, adopt_id))
    fresh = hint.volume_id is None and not hint.look_up and never_created(ctx, pvc)
    if fresh and pvc["metadata"].get("resourceVersion") != hint.stale_version:
        return replace(base, fresh=True)  # no create mark: nothing to look up (the intent patch proves it)
    # (a copy whose version test already failed: the cache has not caught up — ask Cinder by name)
    try:
        cloud = params.cloud or ctx.settings.default_cloud
        volume = lookup_volume(ctx, cinder, names.pv_name_for(uid), hint, cloud=cloud)
    except CinderAmbiguous:
        return replace(base, duplicates=True)
    if volume is None:
        return replace(base, in_flight_wait=other_create_in_flight(ctx, pvc))
    hint.volume_id = volume.id
    return replace(base, volume=volume)


def _has_data_source(pvc: Obj) -> bool:
    spec = pvc.get("spec") or {}
    return bool(spec.get("dataSource") or spec.get("dataSourceRef"))


def _check_named_volume(
    ctx: Context, cinder: Any, pvc: Obj, params: ClassParams, adopt_id: object
) -> Adopt | Refuse:
    """Read the volume the claim names (its id was checked on the claim's side) and judge it."""
    meta = pvc["metadata"]
    try:
        volume = cinder.get_volume(VolumeId(str(adopt_id)))
    except CinderNotFound:
        volume = None
    return check_adoption(
        adopt_id=adopt_id,
        volume=volume,
        claim_uid=meta["uid"],
        claim_namespace=meta["namespace"],
        claim_name=meta["name"],
        cluster_id=ctx.settings.cluster_id,
        requested_gib=requested_gib(pvc),
        class_type=params.volume_type,
        allow=params.allow_adoption,
        storage_class=class_name_of(pvc),
        has_data_source=_has_data_source(pvc),
        has_restore=bool((meta.get("annotations") or {}).get(names.ANN_RESTORE_FROM_SNAPSHOT)),
        identity=ctx.settings.identity,
        cloud=params.cloud or ctx.settings.default_cloud,
    )


def _observe(ctx: Context, key: str, seen: list[_Seen | None]) -> _Seen | None:
    """Observe into ``seen[0]`` (set before Cinder is asked, so an error there still knows the claim)."""
    seen[0] = None
    pvc = ctx.pvcs.get(key)
    if pvc is None:
        return None
    claim, sc, params = observe_claim(ctx, key, pvc)
    current = seen[0] = _Seen(claim=claim, volume=None, pvc=pvc, sc=sc, params=params)
    if params is not None and isinstance(decide_claim(claim), LookUp):
        current = seen[0] = replace(current, volume=observe_volume(ctx, pvc, params))
    return current


# ---- the flow -----------------------------------------------------------------------------------------


def reconcile_claim(ctx: Context, key: str) -> Outcome:
    """One reconcile of the claim ``namespace/name``: observe, decide, execute (a few steps at most)."""
    limits = Limits(
        max_error_retries=ctx.settings.max_error_retries,
        create_deadline_seconds=ctx.settings.create_deadline_seconds,
        final_retry_seconds=ctx.settings.final_retry_seconds,
    )
    seen: list[_Seen | None] = [None]

    def observe() -> _Seen | None:
        return _observe(ctx, key, seen)

    def decide_seen(s: _Seen | None) -> Step:
        return Done() if s is None else decide(s.claim, s.volume, limits)

    def execute_step(step: Step) -> Outcome | None:
        s = seen[0]
        return DONE if s is None else execute(ctx, s, step)

    try:
        return drive(observe, decide_seen, execute_step)
    except ProvisionerError as e:
        s = seen[0]
        if s is None:
            return error(type(e).__name__, str(e))
        return outcome_for_error(ctx, s, e)


def outcome_for_error(ctx: Context, s: _Seen, e: ProvisionerError) -> Outcome:
    """Our error tree → an Outcome: the class of the error decides, never its message."""
    sc_name = s.claim.class_name
    cloud = (s.params.cloud if s.params else None) or ctx.settings.default_cloud
    if isinstance(e, CinderRateLimited):
        ctx.hold_cloud(cloud, e.retry_after or 1.0)
        return requeue(e.retry_after or 1.0, "rate_limited")
    if isinstance(e, CinderQuotaExceeded):
        return fail_claim(
            ctx,
            s.pvc,
            sc_name,
            "quota",
            f"Cinder quota exceeded: {e}",
            retry=ctx.settings.final_retry_seconds,
        )
    if isinstance(e, InvalidInput | ConfigError):
        # A configuration error: retried slowly (an admin may create the type; the claim may change).
        return fail_claim(
            ctx, s.pvc, sc_name, "invalid_configuration", str(e), retry=ctx.settings.final_retry_seconds
        )
    if e.final:
        return fail_claim(
            ctx, s.pvc, sc_name, type(e).__name__, str(e), retry=ctx.settings.final_retry_seconds
        )
    log.warning("provision_step_failed", pvc=s.claim.key, error=str(e))
    ctx.events.event(s.pvc, "Warning", PROVISIONING_FAILED, f"will retry: {e}")
    return error(type(e).__name__, str(e))


def execute(ctx: Context, s: _Seen, step: Step) -> Outcome | None:
    """Perform exactly ``step``; None = it changed the world, observe again."""
    pvc, uid = s.pvc, s.claim.uid
    if isinstance(step, Done):
        if step.release:
            if s.claim.intent:
                drop_intent(ctx, pvc)
            ctx.hints.drop(uid)
        return DONE
    if isinstance(step, Abandon):
        return abandon(ctx, pvc)
    if isinstance(step, Fail):
        return fail_claim(ctx, pvc, s.claim.class_name, step.reason, step.message, retry=step.retry)
    if isinstance(step, Wait):
        hint = ctx.hints.get(uid)
        if step.note is not None:
            hint.announced = True
            ctx.events.event(pvc, "Normal", PROVISIONING, step.note)
        if step.warn is not None:
            hint.deadline_warned = True
            ctx.events.event(pvc, "Warning", PROVISIONING_FAILED, step.warn)
        return requeue(ctx.poll_delay(hint) if step.poll else step.delay, step.reason)
    # The claim's side was decided to be in order, so the class was parsed.
    assert s.sc is not None
    assert s.params is not None
    cinder = ctx.cinder(s.params.cloud)
    if isinstance(step, PersistIntent):
        live = persist_intent(ctx, pvc, cloud=s.params.cloud or ctx.settings.default_cloud)
        return requeue(0.0, "claim_changed") if live is None else None
    if isinstance(step, ResolveDuplicates):
        # Only a create that landed after a leader change can do this (see duplicates.py). The hint stays
        # unset until only one is left, so the next round looks them up again.
        candidates = volumes_of_claim(ctx, cinder, uid)
        keeper = choose_keeper(candidates) if candidates else None
        remove_duplicates(ctx, cinder, pvc, candidates, keep=keeper.id if keeper else None)
        return requeue(ctx.poll_delay(ctx.hints.get(uid)), "duplicates")
    if isinstance(step, Create):
        return create_step(ctx, pvc, sc=s.sc, params=s.params, cinder=cinder, fresh=step.fresh)
    if isinstance(step, ReplaceErrorVolume):
        hint = ctx.hints.get(uid)
        hint.error_volumes += 1
        cinder.delete_volume(VolumeId(step.volume_id))
        hint.volume_id = None
        attempts = f"{step.attempt}/{ctx.settings.max_error_retries}"
        msg = f"Cinder volume {step.volume_id} went to {step.status}; deleted it (attempt {attempts})"
        if step.give_up:
            return fail_claim(
                ctx,
                pvc,
                s.claim.class_name,
                "volume_error",
                msg + "; giving up",
                retry=ctx.settings.final_retry_seconds,
            )
        ctx.events.event(pvc, "Warning", PROVISIONING_FAILED, msg + "; retrying")
        return error("volume_error", msg)
    if isinstance(step, AdoptVolume):
        adopt(ctx, cinder, step.adopt)
        return None  # observe again: the volume now carries our tags
    if isinstance(step, Bind):
        return bind_volume(ctx, pvc, sc=s.sc, params=s.params, cinder=cinder, volume=step.volume)
    return error("unexpected_step", f"no executor for {type(step).__name__}")  # LookUp never gets here


__all__ = ["VolumeSource", "abandon", "class_name_of", "is_ours", "reconcile_claim"]
