"""The provision flow (DESIGN.md "Provision"): one claim, observed, decided, one step at a time.

``observe_claim`` reads the caches into a ``ClaimState``; ``decide_claim`` (pure) says what the claim
needs from its Kubernetes side alone (nothing, abandon, fail, wait, or "look the volume up");
``observe_volume`` then asks Cinder for the claim's volume (by remembered id, else name + cluster tag)
and ``decide_volume`` (pure) picks the Cinder step: persist intent, create, wait, replace an ``error``
volume, resolve duplicates, or export and bind. ``execute`` performs exactly one step through the ports.
The order of side effects is what makes crashes harmless: the PVC finalizer (intent) is persisted before
any Cinder create; the volume is found by name + cluster tag before creating one; a PV AlreadyExists
counts only if it is ours; the finalizer is removed last.

Errors are classified, never parsed here: ``outcome_for_error`` maps our error tree to an Outcome (final
configuration errors name the user's field and are retried slowly; transient ones back off; 429 closes the
cloud for Retry-After).
"""

from __future__ import annotations

import hashlib
import json
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
    CinderReferenceNotFound,
    ConfigError,
    InvalidInput,
    KubeAlreadyExists,
    KubeConflict,
    KubeError,
    KubeInvalid,
    KubeNotFound,
    ProvisionerError,
)
from provisioner.domain.model import CREATING, DELETING, ERROR, CreateVolumeRequest, Volume, VolumeId
from provisioner.domain.outcome import DONE, Outcome, error, final, requeue
from provisioner.domain.params import ClassParams, parse_class_fields, parse_class_parameters
from provisioner.domain.quantity import quantity_to_gib
from provisioner.flows.abandon import abandon
from provisioner.flows.adopt import Adopt, Refuse, adopt, adopt_volume_id, check_adoption, check_claim
from provisioner.flows.claims import (
    EXPORTABLE,
    WAITING,
    class_name_of,
    drop_intent,
    is_ours,
    lookup_volume,
    never_created,
    other_create_in_flight,
    persist_intent,
)
from provisioner.flows.context import Context, Obj, Refused
from provisioner.flows.duplicates import choose_keeper, remove_duplicates, volumes_of_claim
from provisioner.flows.export import cleanup_volume, export_volume, unexport
from provisioner.flows.sources import VolumeSource, finish_restore, resolve_source
from provisioner.flows.steps import drive
from provisioner.mapping.build import (
    ContentSource,
    MappedObjects,
    ProvisionedVolume,
    build_objects,
    parse_claim,
    requested_content,
)
from provisioner.telemetry.events import PROVISIONING, PROVISIONING_FAILED, PROVISIONING_SUCCEEDED

log = structlog.get_logger(__name__)

#: Cinder statuses after which a volume is replaced (deleted and created again, bounded).
FAILED = frozenset({ERROR, "error_restoring", "error_extending", "error_deleting"})

#: Which user-facing field a create's missing reference is about.
_REFERENCE_FIELDS = {
    "volume_type": ("parameters.type", "volume type"),
    "availability_zone": ("parameters.availability", "availability zone"),
    "source_volid": ("spec.dataSource", "source volume"),
}


# ---- what is observed ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class ClaimState:
    """The claim's Kubernetes side, as the caches show it (plus the cloud gate and poll timer)."""

    key: str
    uid: str
    deleting: bool = False
    intent: bool = False  # our intent finalizer is on the claim
    bound_to: str = ""  # spec.volumeName
    class_name: str = ""
    class_found: bool = True
    #: the class is not in our cache but the claim is only seconds old: the class's watch event may still
    #: be on its way (the PV controller, which marked the claim ours, saw it already) — wait this long
    class_grace: float = 0.0
    ours: bool = True
    pv: Literal["none", "ours", "foreign"] = "none"
    bad_class: str | None = None  # the class's parameters are invalid (message names the field)
    bad_claim: str | None = None  # the claim is invalid (message names the field)
    waits_for_node: bool = False  # WaitForFirstConsumer without a selected node
    cloud_wait: float = 0.0  # seconds until the cloud may be called again (429)
    failed_wait: float = 0.0  # a final failure recorded on the claim is not due for a retry for this long
    adopting: bool = False  # the claim names a volume to adopt (netvol.io/adopt-volume)
    refused: Refuse | None = None  # adoption refused on the claim's side alone (class, id, ambiguity)
    poll_wait: float = 0.0  # seconds until the next Cinder poll is due


@dataclass(frozen=True, slots=True, kw_only=True)
class VolumeState:
    """What Cinder said about the claim's volume, and the claim's in-memory progress."""

    volume: Volume | None = None
    duplicates: bool = False  # more than one volume carries the claim's name and our cluster tag
    in_flight_wait: float = 0.0  # another replica's create could still land for this long
    error_volumes: int = 0  # volumes of this claim that went to error and were replaced
    waited: float = 0.0  # seconds since this replica started on the claim
    deadline_warned: bool = False
    adoption: Adopt | Refuse | None = None  # for an adopting claim: the verdict on the named volume
    fresh: bool = False  # no replica can have sent a create (no lookup was made; see never_created)
    unannounced: bool = False  # no "creating Cinder volume" Event was recorded for this claim yet


@dataclass(frozen=True, slots=True, kw_only=True)
class Limits:
    """The settings the decisions read."""

    max_error_retries: int = 3
    create_deadline_seconds: float = 600.0
    final_retry_seconds: float = 300.0


# ---- steps --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Done:
    """Nothing (more) to do; ``release`` drops the intent finalizer and the hint first."""

    release: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class Abandon:
    """The claim is being deleted with our intent on it: give Cinder back (abandon flow)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Fail:
    """A final failure: one Warning, a metric, no fast retry (a slow one after ``retry`` seconds)."""

    reason: str
    message: str
    retry: float = 0.0


@dataclass(frozen=True, slots=True, kw_only=True)
class Wait:
    """Come back later; ``poll`` grows the delay like a Cinder status poll; ``warn`` is a Warning first."""

    reason: str
    delay: float = 0.0
    poll: bool = False
    warn: str | None = None
    note: str | None = None  # a Normal ``Provisioning`` Event first


@dataclass(frozen=True, slots=True, kw_only=True)
class LookUp:
    """The Kubernetes side is in order: ask Cinder for the claim's volume."""


@dataclass(frozen=True, slots=True, kw_only=True)
class PersistIntent:
    """A volume exists but our intent finalizer is not on the claim (a crash, or another replica)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ResolveDuplicates:
    """A create that landed late left more than one volume: keep one, delete the rest."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Create:
    """No volume yet: record intent and the attempt, then create it.

    ``fresh``: Cinder was not asked (the claim never carried a create mark), so the intent patch must
    apply to exactly the claim that was observed (its resourceVersion is tested).
    """

    fresh: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class ReplaceErrorVolume:
    """The volume went to ``status``: delete it; ``give_up`` after too many."""

    volume_id: str
    status: str
    attempt: int
    give_up: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class AdoptVolume:
    """Tag the admin's volume as this claim's (then it goes on like a created one)."""

    adopt: Adopt


@dataclass(frozen=True, slots=True, kw_only=True)
class Bind:
    """The volume is usable: export it, map it, create the PV (and Secret), drop the intent."""

    volume: Volume


Step = (
    Done
    | Abandon
    | Fail
    | Wait
    | LookUp
    | PersistIntent
    | ResolveDuplicates
    | Create
    | ReplaceErrorVolume
    | AdoptVolume
    | Bind
)


# ---- decisions (pure) ---------------------------------------------------------------------------------


def decide_claim(c: ClaimState) -> Step:
    """What the claim needs from its Kubernetes side alone."""
    if c.deleting:
        return Abandon() if c.intent else Done()
    if c.bound_to:
        return Done(release=True)
    if not c.class_name or not c.ours:
        return Done()
    if c.pv == "ours":
        return Done(release=True)
    pv_name = names.pv_name_for(c.uid)
    if c.pv == "foreign":
        return Fail(reason="pv_name_conflict", message=f"PV {pv_name} exists but belongs to another claim")
    if not c.class_found and c.class_grace > 0:
        return Wait(reason="class_not_in_cache", delay=min(c.class_grace, 1.0))
    if not c.class_found:
        return Fail(reason="class_not_found", message=f"StorageClass {c.class_name!r} not found", retry=60.0)
    if c.bad_class is not None:
        return Fail(reason="invalid_parameters", message=f"StorageClass {c.class_name}: {c.bad_class}")
    if c.bad_claim is not None:
        return Fail(reason="invalid_claim", message=f"claim: {c.bad_claim}")
    if c.refused is not None:
        return Fail(reason=c.refused.reason, message=str(c.refused.error()))
    if c.waits_for_node:
        return Done()
    if c.failed_wait > 0:
        return Wait(reason="final_failure_not_due", delay=c.failed_wait)
    if c.cloud_wait > 0:
        return Wait(reason="rate_limited", delay=c.cloud_wait)
    if c.poll_wait > 0 and c.intent:
        return Wait(reason="poll_not_due", delay=c.poll_wait)  # an event that changes nothing Cinder-side
    return LookUp()


def decide_volume(c: ClaimState, v: VolumeState, limits: Limits) -> Step:
    """The Cinder step for a claim whose Kubernetes side is in order."""
    if c.adopting:
        return _decide_adoption(c, v, limits)
    if v.duplicates:
        return ResolveDuplicates()
    volume = v.volume
    if volume is None:
        if v.in_flight_wait > 0:
            return Wait(reason="previous_create_in_flight", delay=v.in_flight_wait)
        return Create(fresh=v.fresh)
    if not c.intent:
        return PersistIntent()
    if volume.status in WAITING:
        warn = None
        if v.waited > limits.create_deadline_seconds and not v.deadline_warned:
            warn = (
                f"Cinder volume {volume.id} still {volume.status} after "
                f"{limits.create_deadline_seconds:.0f}s; still waiting"
            )
        note = None
        if v.unannounced and volume.status == CREATING:
            note = f"creating Cinder volume {volume.id} ({names.pv_name_for(c.uid)})"
        return Wait(reason="waiting", poll=True, warn=warn, note=note)
    if volume.status == DELETING:
        return Wait(reason="deleting", poll=True)
    if volume.status in FAILED:
        attempt = v.error_volumes + 1
        return ReplaceErrorVolume(
            volume_id=volume.id,
            status=volume.status,
            attempt=attempt,
            give_up=attempt >= limits.max_error_retries,
        )
    if volume.status not in EXPORTABLE:
        return Wait(reason=volume.status, poll=True)
    return Bind(volume=volume)


def _decide_adoption(c: ClaimState, v: VolumeState, limits: Limits) -> Step:
    """An adopting claim never creates, replaces or sweeps: it adopts the named volume or fails."""
    verdict = v.adoption
    if verdict is None:
        return Wait(reason="adoption_not_checked", delay=1.0)
    if isinstance(verdict, Refuse):
        return Fail(reason=verdict.reason, message=str(verdict.error()), retry=limits.final_retry_seconds)
    if not c.intent:
        return PersistIntent()
    if verdict.tags:
        return AdoptVolume(adopt=verdict)
    volume = verdict.volume
    if volume.status in EXPORTABLE:
        return Bind(volume=volume)
    if volume.status in FAILED:
        return Fail(
            reason="adopted_volume_error",
            message=f"adopted Cinder volume {volume.id} is {volume.status}; it is never replaced",
            retry=limits.final_retry_seconds,
        )
    return Wait(reason=volume.status, poll=True)


def decide(c: ClaimState, v: VolumeState | None, limits: Limits) -> Step:
    """The next step: the claim's side first; the volume's once Cinder was asked."""
    step = decide_claim(c)
    if isinstance(step, LookUp) and v is not None:
        return decide_volume(c, v, limits)
    return step


def reference_error(
    err: CinderReferenceNotFound, *, cloud: str, request: CreateVolumeRequest, pvc: Obj
) -> InvalidInput:
    """A create's missing reference as the user's field: ``parameters.type: volume type 'x' does not …``."""
    if err.reference == "snapshot_id":
        ann = pvc["metadata"].get("annotations") or {}
        field = (
            f"metadata.annotations[{names.ANN_RESTORE_FROM_SNAPSHOT}]"
            if ann.get(names.ANN_RESTORE_FROM_SNAPSHOT)
            else "spec.dataSource"
        )
        return InvalidInput(
            field, f"Cinder snapshot {request.snapshot_id!r} does not exist in cloud {cloud!r}"
        )
    if err.reference == "backup_id":
        ann = pvc["metadata"].get("annotations") or {}
        field = (
            f"metadata.annotations[{names.ANN_RESTORE_FROM_BACKUP}]"
            if ann.get(names.ANN_RESTORE_FROM_BACKUP)
            else "spec.dataSource"
        )
        return InvalidInput(field, f"Cinder backup {request.backup_id!r} does not exist in cloud {cloud!r}")
    field, what = _REFERENCE_FIELDS.get(err.reference, ("parameters", err.reference))
    value = {
        "volume_type": request.volume_type,
        "availability_zone": request.availability_zone,
        "source_volid": request.source_volid,
    }.get(err.reference)
    return InvalidInput(field, f"{what} {value!r} does not exist in cloud {cloud!r}")


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
            _requested_gib(pvc)  # nor a zero, negative or malformed storage request
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
_OURS = frozenset(
    {names.ANN_PROVISIONING_STEP, names.ANN_CREATE_ATTEMPT, names.ANN_CLOUD, names.ANN_FINAL_FAILURE}
)


def claim_shape(pvc: Obj, sc: Obj | None) -> str:
    """A digest of the claim as the user shaped it and of its class (our own annotations left out)."""
    meta = pvc["metadata"]
    annotations = {k: v for k, v in (meta.get("annotations") or {}).items() if k not in _OURS}
    shape = [
        meta.get("uid"),
        annotations,
        pvc.get("spec"),
        ((sc or {}).get("metadata") or {}).get("resourceVersion"),
    ]
    return hashlib.sha256(json.dumps(shape, sort_keys=True).encode()).hexdigest()[:16]


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
    if hint.volume_id is None and not hint.look_up and never_created(ctx, pvc):
        return replace(base, fresh=True)  # no create mark: nothing to look up (the intent patch proves it)
    try:
        volume = lookup_volume(ctx, cinder, names.pv_name_for(uid), hint)
    except CinderAmbiguous:
        return replace(base, duplicates=True)
    if volume is None:
        return replace(base, in_flight_wait=other_create_in_flight(ctx, pvc))
    hint.volume_id = volume.id
    return replace(base, volume=volume)


def _requested_gib(pvc: Obj) -> int:
    """The claim's storage request in GiB, rounded up (what a create asks for, what adoption needs)."""
    spec = pvc.get("spec") or {}
    return quantity_to_gib(str(((spec.get("resources") or {}).get("requests") or {}).get("storage", "")))


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
        requested_gib=_requested_gib(pvc),
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
        return _fail(
            ctx,
            s.pvc,
            sc_name,
            "quota",
            f"Cinder quota exceeded: {e}",
            retry=ctx.settings.final_retry_seconds,
        )
    if isinstance(e, InvalidInput | ConfigError):
        # A configuration error: retried slowly (an admin may create the type; the claim may change).
        return _fail(
            ctx, s.pvc, sc_name, "invalid_configuration", str(e), retry=ctx.settings.final_retry_seconds
        )
    if e.final:
        return _fail(ctx, s.pvc, sc_name, type(e).__name__, str(e), retry=ctx.settings.final_retry_seconds)
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
        return _fail(ctx, pvc, s.claim.class_name, step.reason, step.message, retry=step.retry)
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
        return _create(ctx, pvc, sc=s.sc, params=s.params, cinder=cinder, fresh=step.fresh)
    if isinstance(step, ReplaceErrorVolume):
        hint = ctx.hints.get(uid)
        hint.error_volumes += 1
        cinder.delete_volume(VolumeId(step.volume_id))
        hint.volume_id = None
        attempts = f"{step.attempt}/{ctx.settings.max_error_retries}"
        msg = f"Cinder volume {step.volume_id} went to {step.status}; deleted it (attempt {attempts})"
        if step.give_up:
            return _fail(
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
        return _bind(ctx, pvc, sc=s.sc, params=s.params, cinder=cinder, volume=step.volume)
    return error("unexpected_step", f"no executor for {type(step).__name__}")  # LookUp never gets here


class _ClaimChanged(Exception):
    """Raised by the create mark when the live claim is not the one the create was built for: not sent."""


def _create(
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
        ctx.hints.get(meta["uid"]).look_up = True
        return requeue(0.0, "claim_changed")
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
    log.info(
        "volume_created",
        pvc=f"{meta['namespace']}/{meta['name']}",
        volume_id=volume.id,
        size_gib=volume.size_gib,
    )
    if volume.status in EXPORTABLE and not _restores_backup(live, volume):
        # Cinder's answer is already final: no status poll (a get) before the export.
        return _bind(ctx, live, sc=sc, params=params, cinder=cinder, volume=volume)
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
        size_gib=max(_requested_gib(pvc), source.min_size_gib),
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


def _bind(ctx: Context, pvc: Obj, *, sc: Obj, params: ClassParams, cinder: Any, volume: Volume) -> Outcome:
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
        return _fail(ctx, pvc, sc_name, type(e).__name__, f"cannot use Cinder volume {volume.id}: {e}")
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


def _fail(ctx: Context, pvc: Obj, sc_name: str, reason: str, message: str, *, retry: float = 0.0) -> Outcome:
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
        {"op": "test", "path": ann + _pointer(names.ANN_CREATE_ATTEMPT), "value": refused.mark},
        {"op": "test", "path": "/metadata/finalizers", "value": list(refused.finalizers)},
        {"op": "replace", "path": "/metadata/finalizers", "value": kept},
        {"op": "remove", "path": ann + _pointer(names.ANN_CREATE_ATTEMPT)},
        {"op": "remove", "path": ann + _pointer(names.ANN_PROVISIONING_STEP)},
        {"op": "add", "path": ann + _pointer(names.ANN_FINAL_FAILURE), "value": value},
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


def _pointer(key: str) -> str:
    return key.replace("~", "~0").replace("/", "~1")


__all__ = ["VolumeSource", "abandon", "class_name_of", "is_ours", "reconcile_claim"]
