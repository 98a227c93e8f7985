"""The expand flow: a bound claim asks for more → Cinder extend → PV capacity → the resizer's PVC status.

We play the CSI external-resizer's part for our own PVs (kubernetes-csi/external-resizer with
RecoverVolumeExpansionFailure, the protocol kubelet and ``kubectl describe`` read):

1. The claim's ``spec.resources.requests.storage`` (whole GiB, rounded up) exceeds the PV's
   ``spec.capacity``. The class must say ``allowVolumeExpansion: true`` (the API server's admission
   already refuses the edit otherwise; a class changed afterwards is refused here, before any Cinder call).
2. Before Cinder is called the claim records the intent (status subresource): condition ``Resizing``,
   ``status.allocatedResources.storage`` = the new size, ``allocatedResourceStatuses.storage`` =
   ``ControllerResizeInProgress``.
3. Cinder ``os-extend``: an ``available`` volume always; an ``in-use`` one only when the negotiated
   microversion allows it (3.42, ``capabilities.inuse_extend``); otherwise a Warning that the volume
   must be detached first (stop the pods using the claim), retried slowly. Extending polls by requeue.
4. The PV's ``spec.capacity`` becomes the volume's size. For our CSI PVs the node must still grow the
   device view and the filesystem (``NodeExpandVolume``, which kubelet calls): the PV gets
   ``volume.alpha.kubernetes.io/pre-resize-capacity`` (so the PV controller keeps the claim's old
   ``status.capacity``), the claim condition ``FileSystemResizePending`` and
   ``allocatedResourceStatuses.storage`` = ``NodeResizePending``; kubelet then sets ``status.capacity``
   and removes both. In-tree ``rbd`` / ``iscsi`` PVs have no node expander of ours, so only
   ``volumeMode: Block`` ones are expanded (``status.capacity`` is set here at once); in-tree Filesystem
   claims are refused with a Warning before Cinder is called.
5. Shrinking (a request below what was allocated) is refused with a Warning; Cinder volumes only grow.
   A failed extend (quota, ``error_extending``, a refusal) removes ``Resizing``, marks
   ``ControllerResizeInfeasible`` and says why; the PV and ``status.capacity`` keep the old size. The
   same size is tried again only by the slow retry or once the claim changes (the external-resizer's slow
   set): the outcome carries the claim copy it was decided on (``Decided``) so the controller remembers
   the failure against that copy, not an older one.

Every step is decided by the pure ``decide_expansion``; ``execute`` performs exactly one step.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import structlog

from provisioner.domain import names
from provisioner.domain.errors import (
    CinderBadRequest,
    CinderConflict,
    CinderNotFound,
    CinderQuotaExceeded,
    CinderRateLimited,
    InvalidInput,
    KubeNotFound,
    ProvisionerError,
)
from provisioner.domain.model import AVAILABLE, ERROR_EXTENDING, EXTENDING, IN_USE, Volume, VolumeId
from provisioner.domain.outcome import DONE, Outcome, error, final, requeue
from provisioner.domain.quantity import gib_quantity, quantity_to_gib
from provisioner.flows.claims import class_name_of
from provisioner.flows.context import Context, Obj
from provisioner.flows.steps import drive

log = structlog.get_logger(__name__)

# PVC condition types, allocatedResourceStatuses values and Event reasons of the resize protocol.
RESIZING = "Resizing"
FS_RESIZE_PENDING = "FileSystemResizePending"
CONTROLLER_IN_PROGRESS = "ControllerResizeInProgress"
CONTROLLER_INFEASIBLE = "ControllerResizeInfeasible"
NODE_PENDING = "NodeResizePending"
EVENT_RESIZING = "Resizing"
EVENT_RESIZE_FAILED = "VolumeResizeFailed"
EVENT_FS_RESIZE_REQUIRED = "FileSystemResizeRequired"
EVENT_RESIZE_SUCCESSFUL = "VolumeResizeSuccessful"
#: The PV annotation the PV controller honours: the claim keeps this ``status.capacity`` meanwhile.
ANN_PRE_RESIZE_CAPACITY = "volume.alpha.kubernetes.io/pre-resize-capacity"
FS_PENDING_MESSAGE = "Waiting for user to (re-)start a pod to finish file system resize of volume on node."

Source = Literal["csi", "rbd", "iscsi", "other"]
#: Statuses of an exported volume (attachments API: in-use; legacy reserve + initialize_connection: attaching)
ATTACHED = frozenset({IN_USE, "attaching", "reserved"})


# ---- observed -----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class ExpandState:
    """A bound claim and its PV as the caches show them (sizes in whole GiB; 0 = not set)."""

    key: str
    uid: str = ""
    bound: bool = False  # spec.volumeName set and phase Bound
    deleting: bool = False
    pv_name: str = ""
    pv_ours: bool = False  # the PV exists, names this claim, was provisioned by us and has a volume id
    volume_id: str = ""
    source: Source = "csi"
    block: bool = False
    requested_gib: int = 0
    pv_gib: int = 0
    status_gib: int = 0
    allocated_gib: int = 0
    resizing: bool = False  # condition Resizing is True
    class_name: str = ""
    class_found: bool = True
    allow_expansion: bool = False
    cloud: str | None = None
    poll_wait: float = 0.0  # seconds until the next Cinder poll is due


@dataclass(frozen=True, slots=True, kw_only=True)
class VolumeSeen:
    """What Cinder said: the volume (None = 404) and whether it can extend in-use volumes."""

    volume: Volume | None
    inuse_extend: bool
    microversion: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Limits:
    """The settings the decision reads."""

    slow_retry_seconds: float = 300.0


# ---- steps --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Nothing:
    """No expansion to do (not ours, not bound, already at size)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Refuse:
    """A Warning and no Cinder call; a slow retry after ``retry`` seconds (0 = until the claim changes).

    ``infeasible`` also clears ``Resizing`` and marks ``ControllerResizeInfeasible`` on the claim.
    """

    reason: str
    message: str
    retry: float = 0.0
    infeasible: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class LookUp:
    """Ask Cinder for the PV's volume."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Wait:
    """Cinder is extending: poll again by requeue (``delay`` = 0: the growing poll interval)."""

    reason: str
    delay: float = 0.0


@dataclass(frozen=True, slots=True, kw_only=True)
class Extend:
    """Record the intent on the claim (``Resizing``, allocatedResources), then ``os-extend``."""

    volume_id: str
    new_gib: int


@dataclass(frozen=True, slots=True, kw_only=True)
class RecordResized:
    """Cinder has the size: PV ``spec.capacity``, then the claim's status (node step pending or done)."""

    new_gib: int
    node_expansion: bool


Step = Nothing | Refuse | LookUp | Wait | Extend | RecordResized


# ---- decision (pure) ----------------------------------------------------------------------------------


def decide_expansion(e: ExpandState, v: VolumeSeen | None, limits: Limits) -> Step:
    """The next expansion step for a claim; ``v`` is None until Cinder was asked."""
    if e.deleting or not e.bound or not e.pv_ours:
        return Nothing()
    target = e.requested_gib
    node = e.source == "csi"
    if e.resizing and e.allocated_gib and e.pv_gib >= e.allocated_gib:
        # The PV was resized but the claim's status was not written (a crash between the two writes).
        return RecordResized(new_gib=e.pv_gib, node_expansion=node)
    if target <= e.pv_gib:
        if e.allocated_gib > target:
            return Refuse(
                reason="shrink_refused",
                message=(
                    f"spec.resources.requests.storage: {target} GiB is less than the {e.allocated_gib} GiB "
                    "already allocated; Cinder volumes cannot shrink (the volume keeps "
                    f"{e.pv_gib} GiB)"
                ),
            )
        return Nothing()
    if not e.class_found:
        return Refuse(
            reason="class_not_found",
            message=f"StorageClass {e.class_name!r} not found; cannot expand the volume",
            retry=60.0,
        )
    if not e.allow_expansion:
        return Refuse(
            reason="expansion_not_allowed",
            message=(
                f"StorageClass {e.class_name!r} does not allow volume expansion (allowVolumeExpansion "
                f"is not true); the volume stays at {e.pv_gib} GiB"
            ),
        )
    if not node and not e.block:
        return Refuse(
            reason="node_expansion_unsupported",
            message=(
                f"PV {e.pv_name} is an in-tree {e.source} Filesystem volume: nothing on the node would "
                "grow its filesystem (only CSI PVs of cinder.netvol.io or volumeMode Block can be "
                f"expanded); the volume stays at {e.pv_gib} GiB"
            ),
        )
    if v is None:
        if e.poll_wait > 0:
            return Wait(reason="poll_not_due", delay=e.poll_wait)
        return LookUp()
    volume = v.volume
    if volume is None:
        return Refuse(
            reason="volume_not_found",
            message=f"Cinder volume {e.volume_id} of PV {e.pv_name} does not exist; cannot expand it",
            retry=limits.slow_retry_seconds,
            infeasible=True,
        )
    if volume.status == EXTENDING:
        return Wait(reason="extending")
    if volume.size_gib >= target and volume.status != ERROR_EXTENDING:
        return RecordResized(new_gib=volume.size_gib, node_expansion=node)
    if volume.status == ERROR_EXTENDING:
        return Refuse(
            reason="extend_failed",
            message=(
                f"Cinder failed to extend volume {volume.id} (status error_extending); the volume stays "
                f"at {volume.size_gib} GiB until a Cinder admin resets its state"
            ),
            retry=limits.slow_retry_seconds,
            infeasible=True,
        )
    if volume.status == AVAILABLE or (volume.status == IN_USE and v.inuse_extend):
        return Extend(volume_id=volume.id, new_gib=target)
    if volume.status in ATTACHED and not v.inuse_extend:
        return Refuse(
            reason="inuse_extend_unsupported",
            message=(
                f"Cinder volume {volume.id} is {volume.status} and this cloud (microversion "
                f"{v.microversion}) cannot extend attached volumes (needs 3.42): stop the pods using the "
                f"claim so the volume is detached; retrying every {limits.slow_retry_seconds:.0f}s"
            ),
            retry=limits.slow_retry_seconds,
        )
    return Refuse(
        reason="volume_not_extendable",
        message=(
            f"Cinder volume {volume.id} is {volume.status}; Cinder extends only available (or, from "
            f"microversion 3.42, in-use) volumes; retrying every {limits.slow_retry_seconds:.0f}s"
        ),
        retry=limits.slow_retry_seconds,
    )


# ---- observation --------------------------------------------------------------------------------------


def _gib(raw: Any) -> int:
    if raw is None or raw == "":
        return 0
    try:
        return quantity_to_gib(str(raw))
    except InvalidInput:
        return 0


def _conditions(pvc: Obj) -> list[dict[str, Any]]:
    return [c for c in ((pvc.get("status") or {}).get("conditions") or []) if isinstance(c, dict)]


def pv_source(pv: Obj) -> Source:
    """Which PV source the provisioner wrote: our CSI driver, in-tree rbd / iscsi, or something else."""
    spec = pv.get("spec") or {}
    if (spec.get("csi") or {}).get("driver") == names.CSI_DRIVER_NAME:
        return "csi"
    if "rbd" in spec:
        return "rbd"
    if "iscsi" in spec:
        return "iscsi"
    return "other"


def observe_claim(ctx: Context, key: str, pvc: Obj) -> ExpandState:
    """The claim and its PV from the caches (no Cinder call)."""
    meta = pvc["metadata"]
    spec = pvc.get("spec") or {}
    status = pvc.get("status") or {}
    base = ExpandState(key=key, uid=str(meta.get("uid", "")))
    pv_name = str(spec.get("volumeName") or "")
    if meta.get("deletionTimestamp"):
        return ExpandState(key=key, uid=base.uid, deleting=True)
    if not pv_name or status.get("phase") != "Bound":
        return base
    pv = ctx.pvs.get(pv_name)
    if pv is None:
        return base
    pv_meta = pv.get("metadata") or {}
    ann = pv_meta.get("annotations") or {}
    ref = (pv.get("spec") or {}).get("claimRef") or {}
    volume_id = str(ann.get(names.ANN_VOLUME_ID) or "")
    ours = (
        ann.get(names.ANN_PROVISIONED_BY) == ctx.settings.provisioner_name
        and ref.get("uid") == meta.get("uid")
        and names.is_cinder_id(volume_id)
        and not pv_meta.get("deletionTimestamp")
    )
    sc_name = class_name_of(pvc)
    sc = ctx.classes.get(sc_name) if sc_name else None
    resizing = any(c.get("type") == RESIZING and c.get("status") == "True" for c in _conditions(pvc))
    return ExpandState(
        key=key,
        uid=base.uid,
        bound=True,
        pv_name=pv_name,
        pv_ours=bool(ours),
        volume_id=volume_id,
        source=pv_source(pv),
        block=spec.get("volumeMode") == "Block",
        requested_gib=_gib(((spec.get("resources") or {}).get("requests") or {}).get("storage")),
        pv_gib=_gib(((pv.get("spec") or {}).get("capacity") or {}).get("storage")),
        status_gib=_gib((status.get("capacity") or {}).get("storage")),
        allocated_gib=_gib((status.get("allocatedResources") or {}).get("storage")),
        resizing=resizing,
        class_name=sc_name,
        class_found=sc is not None,
        allow_expansion=bool((sc or {}).get("allowVolumeExpansion") is True),
        cloud=str(ann.get(names.ANN_CLOUD) or "") or None,
        poll_wait=max(0.0, ctx.hints.get(_hint_key(base.uid)).next_poll_at - ctx.clock()),
    )


def _hint_key(uid: str) -> str:
    return f"expand/{uid}"


def observe_volume(ctx: Context, e: ExpandState) -> VolumeSeen:
    """One Cinder read: the PV's volume."""
    cinder = ctx.cinder(e.cloud)
    caps = cinder.capabilities
    try:
        volume: Volume | None = cinder.get_volume(VolumeId(e.volume_id))
    except CinderNotFound:
        volume = None
    return VolumeSeen(volume=volume, inuse_extend=caps.inuse_extend, microversion=caps.microversion)


# ---- execution ----------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Seen:
    claim: ExpandState
    volume: VolumeSeen | None
    pvc: Obj


def _patch_claim_status(ctx: Context, pvc: Obj, status: Mapping[str, Any]) -> None:
    meta = pvc["metadata"]
    ctx.kube.patch(
        "persistentvolumeclaims",
        meta["name"],
        {"status": dict(status)},
        namespace=meta["namespace"],
        patch_type="merge",
        subresource="status",
    )


def _other_conditions(pvc: Obj) -> list[dict[str, Any]]:
    return [dict(c) for c in _conditions(pvc) if c.get("type") not in (RESIZING, FS_RESIZE_PENDING)]


def _condition(type_: str, now: str, message: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {"type": type_, "status": "True", "lastTransitionTime": now}
    if message:
        out["message"] = message
    return out


def _now(ctx: Context) -> str:
    return dt.datetime.fromtimestamp(ctx.wall(), dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def execute(ctx: Context, s: _Seen, step: Step) -> Outcome | None:
    """Perform exactly ``step``; None = observe again now."""
    e = s.claim
    if isinstance(step, Nothing):
        ctx.hints.drop(_hint_key(e.uid))
        return DONE
    if isinstance(step, Refuse):
        return _refuse(ctx, s, step)
    if isinstance(step, LookUp):
        s.volume = observe_volume(ctx, e)
        return None
    hint = ctx.hints.get(_hint_key(e.uid))
    if isinstance(step, Wait):
        return requeue(step.delay if step.delay > 0 else ctx.poll_delay(hint), step.reason)
    if isinstance(step, Extend):
        return _extend(ctx, s, step)
    return _record(ctx, s, step)


def _refuse(ctx: Context, s: _Seen, step: Refuse) -> Outcome:
    if step.infeasible:
        status: dict[str, Any] = {
            "conditions": _other_conditions(s.pvc),
            "allocatedResourceStatuses": {"storage": CONTROLLER_INFEASIBLE},
        }
        try:
            _patch_claim_status(ctx, s.pvc, status)
        except KubeNotFound:
            return DONE
    ctx.events.event(s.pvc, "Warning", EVENT_RESIZE_FAILED, step.message)
    ctx.hints.drop(_hint_key(s.claim.uid))
    log.warning("expansion_refused", pvc=s.claim.key, reason=step.reason, error=step.message)
    return final(step.reason, step.message, retry_after=step.retry)


def _extend(ctx: Context, s: _Seen, step: Extend) -> Outcome:
    e, pvc = s.claim, s.pvc
    size = gib_quantity(step.new_gib)
    allocated = ((pvc.get("status") or {}).get("allocatedResources") or {}).get("storage")
    if not e.resizing or allocated != size:
        try:
            _patch_claim_status(
                ctx,
                pvc,
                {
                    "conditions": [*_other_conditions(pvc), _condition(RESIZING, _now(ctx))],
                    "allocatedResources": {"storage": size},
                    "allocatedResourceStatuses": {"storage": CONTROLLER_IN_PROGRESS},
                },
            )
        except KubeNotFound:
            return DONE
        ctx.events.event(
            pvc, "Normal", EVENT_RESIZING, f"resizing Cinder volume {step.volume_id} to {step.new_gib} GiB"
        )
    ctx.checkpoint("before_cinder_extend")
    cinder = ctx.cinder(e.cloud)
    try:
        cinder.extend_volume(VolumeId(step.volume_id), step.new_gib)
    except (CinderQuotaExceeded, CinderBadRequest, CinderConflict) as err:
        return _refuse(
            ctx,
            s,
            Refuse(
                reason=type(err).__name__,
                message=(
                    f"Cinder refused to extend volume {step.volume_id} to {step.new_gib} GiB: {err}; "
                    f"the volume stays at {e.pv_gib} GiB"
                ),
                retry=ctx.settings.final_retry_seconds,
                infeasible=True,
            ),
        )
    ctx.checkpoint("after_cinder_extend")
    hint = ctx.hints.get(_hint_key(e.uid))
    hint.polls = 0
    log.info("volume_extend_started", pvc=e.key, volume_id=step.volume_id, size_gib=step.new_gib)
    return requeue(ctx.poll_delay(hint), "extending")


def _record(ctx: Context, s: _Seen, step: RecordResized) -> Outcome:
    e, pvc = s.claim, s.pvc
    size = gib_quantity(step.new_gib)
    if e.pv_gib < step.new_gib:
        pv_patch: dict[str, Any] = {"spec": {"capacity": {"storage": size}}}
        if step.node_expansion:
            pv_patch["metadata"] = {"annotations": {ANN_PRE_RESIZE_CAPACITY: gib_quantity(e.pv_gib)}}
        ctx.kube.patch("persistentvolumes", e.pv_name, pv_patch, patch_type="merge")
        ctx.checkpoint("after_pv_resize")
    status: dict[str, Any] = {"allocatedResources": {"storage": size}}
    if step.node_expansion:
        status["conditions"] = [
            *_other_conditions(pvc),
            _condition(FS_RESIZE_PENDING, _now(ctx), FS_PENDING_MESSAGE),
        ]
        status["allocatedResourceStatuses"] = {"storage": NODE_PENDING}
    else:
        status["conditions"] = _other_conditions(pvc)
        status["capacity"] = {"storage": size}
        status["allocatedResourceStatuses"] = None
    try:
        _patch_claim_status(ctx, pvc, status)
    except KubeNotFound:
        return DONE
    ctx.hints.drop(_hint_key(e.uid))
    if step.node_expansion:
        ctx.events.event(
            pvc,
            "Normal",
            EVENT_FS_RESIZE_REQUIRED,
            f"Cinder volume {e.volume_id} is {step.new_gib} GiB; the node must grow the filesystem",
        )
    else:
        ctx.events.event(
            pvc,
            "Normal",
            EVENT_RESIZE_SUCCESSFUL,
            f"Cinder volume {e.volume_id} resized to {step.new_gib} GiB",
        )
    log.info("volume_resized", pvc=e.key, volume_id=e.volume_id, size_gib=step.new_gib)
    return DONE


# ---- the flow -----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Decided(Outcome):
    """An outcome with the copy of the claim it was decided on.

    ``process()`` remembers a final failure (and a delay) against the claim's shape; the copy it reads
    before the flow runs can be older than the one the flow then reads from the cache (a resize that
    arrived in between). Remembered against the older copy, the newer copy's watch event looked like a
    change and the infeasible extend was retried at once.
    """

    claim: Obj = field(compare=False, repr=False)


def reconcile_expansion(ctx: Context, key: str) -> Outcome:
    """One reconcile of a bound claim's size: observe, decide, execute (a few steps at most).

    The outcome is a ``Decided`` carrying the claim copy the steps were decided on (plain once the claim
    is gone from the cache).
    """
    limits = Limits(slow_retry_seconds=ctx.settings.final_retry_seconds)
    seen: list[_Seen | None] = [None]

    def observe() -> _Seen | None:
        current = seen[0]
        if current is not None and current.volume is not None:
            return current  # Cinder was just asked: decide on that answer
        pvc = ctx.pvcs.get(key)
        if pvc is None:
            seen[0] = None
            return None
        seen[0] = _Seen(claim=observe_claim(ctx, key, pvc), volume=None, pvc=pvc)
        return seen[0]

    def decide(s: _Seen | None) -> Step:
        return Nothing() if s is None else decide_expansion(s.claim, s.volume, limits)

    def run(step: Step) -> Outcome | None:
        s = seen[0]
        return DONE if s is None else execute(ctx, s, step)

    try:
        outcome = drive(observe, decide, run)
    except CinderRateLimited as err:
        s = seen[0]
        ctx.hold_cloud(s.claim.cloud if s else None, err.retry_after or 1.0)
        outcome = requeue(err.retry_after or 1.0, "rate_limited")
    except ProvisionerError as err:
        s = seen[0]
        if s is not None:
            ctx.events.event(s.pvc, "Warning", EVENT_RESIZE_FAILED, f"will retry: {err}")
        log.warning("expansion_step_failed", pvc=key, error=str(err))
        outcome = error(type(err).__name__, str(err))
    s = seen[0]
    if s is None:
        return outcome
    return Decided(
        kind=outcome.kind, delay=outcome.delay, reason=outcome.reason, message=outcome.message, claim=s.pvc
    )


def reconcile_claim_and_size(ctx: Context, key: str) -> Outcome:
    """The claim flow the controller runs: provisioning, and once the claim is bound, its size."""
    from provisioner.flows.provision import reconcile_claim  # the provision flow imports much; keep it lazy

    outcome = reconcile_claim(ctx, key)
    if outcome.kind != "done":
        return outcome
    pvc = ctx.pvcs.get(key)
    if pvc is None or not (pvc.get("spec") or {}).get("volumeName"):
        return outcome
    return reconcile_expansion(ctx, key)


__all__ = ["Decided", "decide_expansion", "reconcile_claim_and_size", "reconcile_expansion"]
