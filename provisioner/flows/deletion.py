"""The delete flow (DESIGN.md "Delete"): a Released PV with policy Delete gives its Cinder volume back.

Order: unexport (attachment delete / terminate) → delete the volume (404 = success) → wait by requeue until
it is gone → remove our PV finalizer and delete the PV. Secrets go with the PV (ownerReference). A volume
with snapshots is not an error the user caused: a Normal event and a slow retry, unless the class allows
cascade. A PV deleted directly by an admin with reclaimPolicy Retain keeps its volume.

Shape (STYLE.md "Decide, then act"): ``observe`` reads the caches and Cinder into ``Observed``;
``decide`` is a pure function of it; ``execute`` performs exactly the step decided.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog

from provisioner.domain import names
from provisioner.domain.errors import (
    CinderConflict,
    CinderError,
    CinderNotFound,
    InvalidInput,
    KubeNotFound,
    ProvisionerError,
)
from provisioner.domain.model import DELETING, AttachmentId, ExportMode, Volume, VolumeId
from provisioner.domain.outcome import DONE, Outcome, error, requeue
from provisioner.domain.params import parse_class_parameters
from provisioner.flows.context import Context, Obj
from provisioner.flows.duplicates import remove_duplicates, volumes_of_claim
from provisioner.flows.export import unexport
from provisioner.flows.giveback import (
    FOREIGN_RETRY_SECONDS,
    SNAPSHOT_RETRY_SECONDS,
    Backoff,
    Done,
    Fail,
    HoldCloud,
    Refuse,
    Target,
    Wait,
    hold_or_fail,
    run_fail,
    run_hold,
    run_refuse,
    run_wait,
)
from provisioner.flows.steps import drive
from provisioner.telemetry.events import VOLUME_DELETE_WAITING, VOLUME_FAILED_DELETE

log = structlog.get_logger(__name__)


def is_our_pv(pv: Obj, provisioner_name: str) -> bool:
    """Provisioned by us (its volume annotation is checked by the flow, which reports a bad one)."""
    ann = pv["metadata"].get("annotations") or {}
    return bool(ann.get(names.ANN_PROVISIONED_BY) == provisioner_name)


# --- observed ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class PVFacts:
    """The fields of a PV the delete flow depends on (annotation values raw, as found)."""

    name: str
    target: Target
    hint_key: str
    ours: bool = True
    policy: str = "Delete"
    phase: str | None = "Released"
    deleting: bool = False
    our_finalizer: bool = True
    volume_id: Any = None
    attachment_id: Any = None
    export_mode: Any = None
    cloud: str | None = None
    storage_class: str = ""
    claim_uid: str | None = None
    #: (name, namespace) of the provisioner-owned Secrets the PV references
    owned_secrets: tuple[tuple[str, str], ...] = ()

    @property
    def mode(self) -> ExportMode:
        mode = self.export_mode if self.export_mode is not None else "attachment"
        return "attachment" if mode == "attachment" and self.attachment_id else "legacy"


@dataclass(frozen=True, slots=True, kw_only=True)
class Observed:
    """What one look at the PV, its class and Cinder found."""

    pv: PVFacts | None
    cascade: bool = False
    configured_clouds: tuple[str, ...] = ()
    cloud_wait: float = 0.0
    #: Cinder was read (only when the PV is due and its annotations are sound)
    looked: bool = False
    volume: Volume | None = None
    #: other volumes of the same claim (a duplicate created during a leader change)
    leftovers: tuple[Volume, ...] = ()
    #: a Cinder read that failed
    failure: ProvisionerError | None = None
    now: float = 0.0
    backoff: Backoff = field(default_factory=Backoff)
    deadline: float = 600.0


# --- steps -------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class DropFinalizer:
    """Retain: the admin deleted the PV object; let it go and keep the volume."""

    pv_name: str


@dataclass(frozen=True, slots=True, kw_only=True)
class WaitDeleting:
    """The volume is being deleted (by us): poll again; once past the deadline, warn once."""

    pv: Target
    hint_key: str
    wait: Wait


@dataclass(frozen=True, slots=True, kw_only=True)
class RefuseForeignAttachments:
    """The volume has attachments we did not make: never detach someone else's host."""

    pv: Target
    volume_id: VolumeId
    ids: tuple[AttachmentId, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class UnexportAndDelete:
    """Unexport (our attachment, or terminate + unreserve), then start deleting the volume."""

    pv: Target
    hint_key: str
    storage_class: str
    cloud: str | None
    volume_id: VolumeId
    attachment_id: AttachmentId | None
    mode: ExportMode
    cascade: bool
    then: Wait


@dataclass(frozen=True, slots=True, kw_only=True)
class WaitForSnapshots:
    """Cinder keeps a volume that has snapshots (no cascade): a Normal event and a slow retry."""

    pv: Target
    volume_id: VolumeId


@dataclass(frozen=True, slots=True, kw_only=True)
class SweepDuplicates:
    """The PV's volume is gone but the claim has other volumes (duplicates): give them back too."""

    pv: Target
    hint_key: str
    storage_class: str
    cloud: str | None
    volumes: tuple[Volume, ...]
    then: Wait

    @property
    def ids(self) -> tuple[VolumeId, ...]:
        return tuple(v.id for v in self.volumes)


@dataclass(frozen=True, slots=True, kw_only=True)
class Failed:
    """A call failed: hold the cloud (429), or a Warning and a retry, or a final refusal."""

    pv: Target
    storage_class: str
    cause: HoldCloud | Fail | Refuse


@dataclass(frozen=True, slots=True, kw_only=True)
class Finish:
    """The volume is gone: delete the PV's Secrets, drop our finalizer, delete the PV."""

    pv_name: str
    uid: str
    hint_key: str
    storage_class: str
    volume_id: VolumeId
    secrets: tuple[tuple[str, str], ...]
    drop_finalizer: bool
    delete_pv: bool


Step = (
    Done
    | DropFinalizer
    | Wait
    | WaitDeleting
    | RefuseForeignAttachments
    | UnexportAndDelete
    | WaitForSnapshots
    | SweepDuplicates
    | Failed
    | Finish
)


# --- decide (pure) -----------------------------------------------------------------------------------


def due(pv: PVFacts) -> bool:
    """The volume behind ``pv`` is to be given back now (never for a Bound PV, nor with Retain)."""
    if not pv.ours or pv.policy != "Delete":
        return False
    if pv.phase == "Bound":
        return False  # never delete the volume of a bound PV, even one an admin asked to delete
    return pv.phase == "Released" or pv.deleting


def annotation_problem(pv: PVFacts, configured_clouds: Sequence[str]) -> Refuse | None:
    """A malformed annotation that makes deleting impossible, named (or None)."""
    if not names.is_cinder_id(pv.volume_id):
        what = "missing" if pv.volume_id in (None, "") else f"not a Cinder volume id: {pv.volume_id!r}"
        return Refuse(field=names.ANN_VOLUME_ID, message=what, event=VOLUME_FAILED_DELETE)
    if pv.attachment_id not in (None, "") and not names.is_cinder_id(pv.attachment_id):
        return Refuse(
            field=names.ANN_ATTACHMENT_ID,
            message=f"not a Cinder attachment id: {pv.attachment_id!r}",
            event=VOLUME_FAILED_DELETE,
        )
    if pv.cloud and pv.cloud not in configured_clouds:
        return Refuse(
            field=names.ANN_CLOUD,
            message=f"no cloud named {pv.cloud!r}; configured: {', '.join(sorted(configured_clouds))}",
            event=VOLUME_FAILED_DELETE,
        )
    return None


def _deleting_wait(o: Observed) -> Wait:
    warn = o.now - o.backoff.started > o.deadline and not o.backoff.deadline_warned
    return Wait(delay=o.backoff.delay(), reason="deleting", warn_deadline=warn)


def decide(o: Observed) -> Step:
    """The next step for one PV, from what was observed. Pure."""
    pv = o.pv
    if pv is None or not pv.ours:
        return Done()
    if pv.policy != "Delete":
        return DropFinalizer(pv_name=pv.name) if pv.deleting and pv.our_finalizer else Done()
    if not due(pv):
        return Done()
    if (problem := annotation_problem(pv, o.configured_clouds)) is not None:
        return Failed(pv=pv.target, storage_class=pv.storage_class, cause=problem)
    if o.cloud_wait > 0:
        return Wait(delay=o.cloud_wait, reason="rate_limited", poll=False)
    volume_id = VolumeId(pv.volume_id)
    if o.failure is not None:
        return _failed(pv, volume_id, o.failure)
    volume = o.volume
    if volume is not None:
        if volume.status == DELETING:
            return WaitDeleting(pv=pv.target, hint_key=pv.hint_key, wait=_deleting_wait(o))
        foreign = tuple(a for a in volume.attachment_ids if a != pv.attachment_id)
        if foreign and pv.mode == "attachment":
            return RefuseForeignAttachments(pv=pv.target, volume_id=volume_id, ids=foreign)
        return UnexportAndDelete(
            pv=pv.target,
            hint_key=pv.hint_key,
            storage_class=pv.storage_class,
            cloud=pv.cloud,
            volume_id=volume_id,
            attachment_id=AttachmentId(pv.attachment_id) if pv.attachment_id else None,
            mode=pv.mode,
            cascade=o.cascade,
            then=_deleting_wait(o),
        )
    leftovers = tuple(v for v in o.leftovers if v.id != volume_id)
    if leftovers:
        return SweepDuplicates(
            pv=pv.target,
            hint_key=pv.hint_key,
            storage_class=pv.storage_class,
            cloud=pv.cloud,
            volumes=leftovers,
            then=Wait(delay=o.backoff.delay(), reason="deleting_duplicates"),
        )
    return Finish(
        pv_name=pv.name,
        uid=pv.target.uid,
        hint_key=pv.hint_key,
        storage_class=pv.storage_class,
        volume_id=volume_id,
        secrets=pv.owned_secrets,
        drop_finalizer=pv.our_finalizer,
        delete_pv=not pv.deleting,
    )


def _failed(pv: PVFacts, volume_id: VolumeId, e: ProvisionerError) -> Failed:
    """The step for an error a Cinder call about ``pv`` raised. Pure."""
    cause = hold_or_fail(
        e, cloud=pv.cloud, event=VOLUME_FAILED_DELETE, what=f"deleting Cinder volume {volume_id}"
    )
    return Failed(pv=pv.target, storage_class=pv.storage_class, cause=cause)


def failed_step(
    step: UnexportAndDelete | SweepDuplicates, e: ProvisionerError, *, has_snapshots: bool = False
) -> Failed | WaitForSnapshots:
    """The step for an error ``step``'s calls raised. Pure.

    Cinder refuses to delete a volume with snapshots with the same 400 it gives for an attached or busy
    volume (one message lists every reason), so the text says nothing: ``has_snapshots`` is what Cinder
    answered when asked for the volume's snapshots after the refusal.
    """
    if isinstance(step, UnexportAndDelete) and isinstance(e, CinderConflict) and has_snapshots:
        return WaitForSnapshots(pv=step.pv, volume_id=step.volume_id)
    what = (
        f"deleting Cinder volume {step.volume_id}"
        if isinstance(step, UnexportAndDelete)
        else f"deleting duplicate Cinder volumes {', '.join(step.ids)}"
    )
    cause = hold_or_fail(e, cloud=step.cloud, event=VOLUME_FAILED_DELETE, what=what)
    return Failed(pv=step.pv, storage_class=step.storage_class, cause=cause)


# --- observe -----------------------------------------------------------------------------------------


def pv_facts(pv: Obj, provisioner_name: str) -> PVFacts:
    """The facts of a PV object (no I/O)."""
    from provisioner.mapping.build import secret_name_for

    meta = pv["metadata"]
    spec = pv.get("spec") or {}
    ann = meta.get("annotations") or {}
    name = str(meta["name"])
    secrets = tuple(
        (str(ref["name"]), str(ref["namespace"]))
        for ref in _secret_refs(spec)
        if ref.get("name") == secret_name_for(name) and ref.get("namespace")
    )
    return PVFacts(
        name=name,
        target=Target.of(pv),
        ours=is_our_pv(pv, provisioner_name),
        hint_key=str(meta.get("uid", name)),
        policy=str(spec.get("persistentVolumeReclaimPolicy", "Retain")),
        phase=(pv.get("status") or {}).get("phase"),
        deleting=bool(meta.get("deletionTimestamp")),
        our_finalizer=names.PV_VOLUME_FINALIZER in (meta.get("finalizers") or []),
        volume_id=ann.get(names.ANN_VOLUME_ID),
        attachment_id=ann.get(names.ANN_ATTACHMENT_ID),
        export_mode=ann.get(names.ANN_EXPORT_MODE),
        cloud=ann.get(names.ANN_CLOUD) or None,
        storage_class=str(spec.get("storageClassName") or ""),
        claim_uid=(spec.get("claimRef") or {}).get("uid") or None,
        owned_secrets=secrets,
    )


def observe(ctx: Context, pv_name: str) -> Observed:
    """Read the PV, its class and (only when the PV is due) Cinder."""
    pv = ctx.pvs.get(pv_name)
    if pv is None:
        return Observed(pv=None)
    facts = pv_facts(pv, ctx.settings.provisioner_name)
    hint = ctx.hints.get(facts.hint_key) if due(facts) else None
    base: dict[str, Any] = {
        "pv": facts,
        "configured_clouds": tuple(sorted(ctx.clouds)),
        "now": ctx.clock(),
        "deadline": ctx.settings.delete_deadline_seconds,
    }
    if hint is None:
        return Observed(**base)
    base["backoff"] = Backoff.of(ctx, hint)
    base["cascade"] = _cascade(ctx, facts.storage_class)
    if annotation_problem(facts, base["configured_clouds"]) is not None:
        return Observed(**base)
    if (wait := ctx.cloud_wait(facts.cloud)) > 0:
        return Observed(**base, cloud_wait=wait)
    cinder = ctx.cinder(facts.cloud)
    volume: Volume | None = None
    leftovers: tuple[Volume, ...] = ()
    try:
        try:
            volume = cinder.get_volume(VolumeId(facts.volume_id))
        except CinderNotFound:
            volume = None
        if volume is None and facts.claim_uid:
            leftovers = tuple(volumes_of_claim(ctx, cinder, facts.claim_uid))
    except CinderError as e:
        return Observed(**base, looked=True, failure=e)
    return Observed(**base, looked=True, volume=volume, leftovers=leftovers)


def _cascade(ctx: Context, sc_name: str) -> bool:
    sc = ctx.classes.get(sc_name) if sc_name else None
    if sc is None:
        return False
    try:
        return parse_class_parameters(
            sc.get("parameters"), default_secret_namespace=ctx.settings.secret_namespace
        ).cascade_delete
    except InvalidInput:
        return False


def _secret_refs(spec: Obj) -> list[dict[str, Any]]:
    refs = []
    for source, key in (("rbd", "secretRef"), ("iscsi", "secretRef"), ("csi", "nodeStageSecretRef")):
        ref = (spec.get(source) or {}).get(key)
        if isinstance(ref, dict):
            refs.append(ref)
    return refs


# --- execute -----------------------------------------------------------------------------------------


def execute(ctx: Context, step: Step) -> Outcome | None:
    """Perform exactly ``step``; the Outcome, or None to observe again."""
    if isinstance(step, Done):
        return DONE
    if isinstance(step, DropFinalizer):
        _drop_finalizer(ctx, step.pv_name)
        return DONE
    if isinstance(step, Wait):
        return requeue(step.delay, step.reason)
    if isinstance(step, WaitDeleting):
        return _run_deleting_wait(ctx, step.pv, step.hint_key, step.wait)
    if isinstance(step, RefuseForeignAttachments):
        others = ", ".join(step.ids)
        msg = f"Cinder volume {step.volume_id} has attachments not made by this provisioner: {others}"
        ctx.events.event(step.pv.as_obj(), "Warning", VOLUME_FAILED_DELETE, msg)
        return error("foreign_attachment", msg, at_least=FOREIGN_RETRY_SECONDS)
    if isinstance(step, UnexportAndDelete):
        try:
            cinder = ctx.cinder(step.cloud)
            unexport(ctx, cinder, step.volume_id, step.attachment_id, step.mode)
            cinder.delete_volume(step.volume_id, cascade=step.cascade)
        except CinderConflict as e:
            return execute(ctx, failed_step(step, e, has_snapshots=_has_snapshots(ctx, step)))
        except ProvisionerError as e:
            return execute(ctx, failed_step(step, e))
        ctx.checkpoint("after_cinder_delete")
        log.info("volume_delete_requested", pv=step.pv.name, volume_id=step.volume_id)
        return _run_deleting_wait(ctx, step.pv, step.hint_key, step.then)
    if isinstance(step, WaitForSnapshots):
        ctx.events.event(
            step.pv.as_obj(),
            "Normal",
            VOLUME_DELETE_WAITING,
            f"Cinder volume {step.volume_id} has snapshots; waiting for them to be deleted "
            "(set cascadeDelete on the class to delete them with the volume)",
        )
        return requeue(SNAPSHOT_RETRY_SECONDS, "has_snapshots")
    if isinstance(step, SweepDuplicates):
        try:
            remove_duplicates(ctx, ctx.cinder(step.cloud), step.pv.as_obj(), step.volumes, keep=None)
        except ProvisionerError as e:
            return execute(ctx, failed_step(step, e))
        return run_wait(ctx, ctx.hints.get(step.hint_key), step.then)
    if isinstance(step, Failed):
        return _run_failed(ctx, step)
    return _finish(ctx, step)


def _run_deleting_wait(ctx: Context, pv: Target, hint_key: str, wait: Wait) -> Outcome:
    if wait.warn_deadline:
        ctx.events.event(
            pv.as_obj(),
            "Warning",
            VOLUME_FAILED_DELETE,
            f"Cinder volume still deleting after {ctx.settings.delete_deadline_seconds:.0f}s",
        )
    return run_wait(ctx, ctx.hints.get(hint_key), wait)


def _has_snapshots(ctx: Context, step: UnexportAndDelete) -> bool:
    """Does Cinder list a snapshot of the volume (asked after it refused the delete)? Unknown → False."""
    try:
        return any(True for _ in ctx.cinder(step.cloud).list_snapshots(volume_id=step.volume_id))
    except ProvisionerError:
        return False


def _run_failed(ctx: Context, step: Failed) -> Outcome:
    cause = step.cause
    if isinstance(cause, HoldCloud):
        return run_hold(ctx, cause)
    if cause.event:
        reason = cause.reason if isinstance(cause, Fail) else "InvalidInput"
        ctx.metrics.delete_total.labels(
            storage_class=step.storage_class, outcome="failure", reason=reason
        ).inc()
    if isinstance(cause, Refuse):
        return run_refuse(ctx, step.pv, cause)
    return run_fail(ctx, step.pv, cause)


def _finish(ctx: Context, step: Finish) -> Outcome:
    ctx.checkpoint("before_pv_finalizer_removal")
    # The volume is gone: let the PV go (and its Secret, even if a crash kept its owner reference off).
    for name, namespace in step.secrets:
        try:
            ctx.kube.delete("secrets", name, namespace=namespace)
        except KubeNotFound:
            pass
    if step.drop_finalizer:
        _drop_finalizer(ctx, step.pv_name)
    if step.delete_pv:
        try:
            ctx.kube.delete("persistentvolumes", step.pv_name, uid=step.uid or None)
        except KubeNotFound:
            pass
    ctx.hints.drop(step.hint_key)
    ctx.metrics.delete_total.labels(storage_class=step.storage_class, outcome="success", reason="").inc()
    log.info("volume_deleted", pv=step.pv_name, volume_id=step.volume_id)
    return DONE


def _drop_finalizer(ctx: Context, pv_name: str) -> None:
    patch = {"metadata": {"$deleteFromPrimitiveList/finalizers": [names.PV_VOLUME_FINALIZER]}}
    try:
        ctx.kube.patch("persistentvolumes", pv_name, patch, patch_type="strategic")
    except KubeNotFound:
        pass


def reconcile_volume(ctx: Context, pv_name: str) -> Outcome:
    """One reconcile of the PV ``pv_name``: observe, decide, execute (a few steps at most)."""
    return drive(lambda: observe(ctx, pv_name), decide, lambda step: execute(ctx, step))


__all__ = ["Observed", "PVFacts", "decide", "execute", "is_our_pv", "observe", "reconcile_volume"]
