"""The provision flow's decisions (pure): what is observed, the steps, and which step comes next.

``ClaimState`` is the claim's Kubernetes side from the caches, ``VolumeState`` what Cinder said of its
volume; ``decide_claim`` says what the claim needs from its Kubernetes side alone, ``decide_volume`` picks
the Cinder step. No port is called here: ``provision.py`` observes and dispatches, ``provision_execute.py``
performs the steps. Table-tested in ``tests/unit/flows/test_provision_decide.py``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Literal

import structlog

from provisioner.domain import names
from provisioner.domain.errors import (
    CinderReferenceNotFound,
    InvalidInput,
)
from provisioner.domain.model import CREATING, DELETING, ERROR, CreateVolumeRequest, Volume
from provisioner.domain.quantity import quantity_to_gib
from provisioner.flows.adopt import Adopt, Refuse
from provisioner.flows.claims import (
    EXPORTABLE,
    WAITING,
)
from provisioner.flows.context import Obj

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


def requested_gib(pvc: Obj) -> int:
    """The claim's storage request in GiB, rounded up (what a create asks for, what adoption needs)."""
    spec = pvc.get("spec") or {}
    return quantity_to_gib(str(((spec.get("resources") or {}).get("requests") or {}).get("storage", "")))


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
