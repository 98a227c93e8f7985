"""Abandoning a claim that is deleted while our intent finalizer is on it.

Give Cinder back first (unexport, delete, wait until gone), then the provisioner-owned Secret, and only
then let the claim go by removing the finalizer: a deletion mid-provision can never orphan a volume.

Which cloud: the one recorded on the claim with the intent (``netvol.io/cloud``), else the class's, else
— the class was deleted together with the claim and nothing was recorded — every configured cloud is
searched for the claim's volume by our cluster tag and the claim's uid. Never just the default.

Shape (STYLE.md "Decide, then act"): ``observe`` → ``decide`` (pure) → ``execute``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

from provisioner.domain import names
from provisioner.domain.errors import CinderError, InvalidInput, KubeNotFound, ProvisionerError
from provisioner.domain.model import DELETING, AttachmentId, ExportMode, Volume, VolumeId
from provisioner.domain.outcome import DONE, Outcome, requeue
from provisioner.domain.params import parse_class_parameters
from provisioner.flows.adopt import adopt_volume_id
from provisioner.flows.claims import (
    WAITING,
    class_name_of,
    drop_intent,
    lookup_volume,
    other_create_in_flight,
)
from provisioner.flows.context import Context, Obj
from provisioner.flows.duplicates import volumes_of_claim
from provisioner.flows.export import cleanup_volume
from provisioner.flows.giveback import (
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
from provisioner.mapping.build import secret_name_for
from provisioner.telemetry.events import PROVISIONING_CLEANUP_FAILED

#: Where the cloud to clean up came from.
CloudSource = Literal["annotation", "class", "search"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Clouds:
    """The clouds to look in for the claim's volume, and why those."""

    names: tuple[str, ...]
    source: CloudSource


def clouds_to_search(
    *,
    recorded: str | None,
    class_found: bool,
    class_cloud: str | None,
    configured: Sequence[str],
    default: str,
) -> Clouds:
    """Recorded cloud, else the class's (its ``cloud`` or the default), else every configured one. Pure."""
    if recorded:
        return Clouds(names=(recorded,), source="annotation")
    if class_found:
        return Clouds(names=(class_cloud or default,), source="class")
    rest = sorted(c for c in configured if c != default)
    return Clouds(names=((default,) if default in configured else ()) + tuple(rest), source="search")


# --- observed ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Observed:
    """What one look at the claim, its PV, its class and Cinder found."""

    claim: Target
    #: our PV exists and is bound to this claim: the delete flow owns the volume from here
    pv_bound: bool = False
    clouds: Clouds = field(default_factory=lambda: Clouds(names=("default",), source="class"))
    configured_clouds: tuple[str, ...] = ("default",)
    #: a cloud in ``clouds`` is rate limited for this long (nothing was looked up)
    cloud_wait: float = 0.0
    cloud_waiting: str | None = None
    #: the claim's volume and the cloud it was found on
    volume: Volume | None = None
    volume_cloud: str | None = None
    failure: ProvisionerError | None = None
    failure_cloud: str | None = None
    #: seconds before another replica's create can no longer land
    in_flight_wait: float = 0.0
    secret_namespace: str = ""
    backoff: Backoff = field(default_factory=Backoff)


# --- steps -------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class HandOver:
    """The PV exists: drop our intent; the delete flow gives the volume back when the PV is released."""

    claim: Target


@dataclass(frozen=True, slots=True, kw_only=True)
class Poll:
    """Look at the claim's volume again after ``wait`` (a Cinder status poll: the backoff grows)."""

    claim: Target
    wait: Wait


@dataclass(frozen=True, slots=True, kw_only=True)
class GiveBack:
    """Unexport and start deleting the claim's volume on ``cloud``, then poll."""

    claim: Target
    cloud: str
    volume_id: VolumeId
    attachment_ids: tuple[AttachmentId, ...]
    mode: ExportMode
    then: Wait


@dataclass(frozen=True, slots=True, kw_only=True)
class Failed:
    """A call failed: hold the cloud (429), or a Warning and a retry, or a final refusal."""

    claim: Target
    cause: HoldCloud | Fail | Refuse


@dataclass(frozen=True, slots=True, kw_only=True)
class Release:
    """No volume is left: delete the provisioner-owned Secret, then remove our finalizer."""

    claim: Target
    secret: str
    secret_namespace: str


Step = Done | Wait | Poll | HandOver | GiveBack | Failed | Release


# --- decide (pure) -----------------------------------------------------------------------------------


def decide(o: Observed) -> Step:
    """The next step for a claim being deleted with our intent finalizer on it. Pure."""
    if o.pv_bound:
        return HandOver(claim=o.claim)
    unknown = [c for c in o.clouds.names if c not in o.configured_clouds]
    if unknown:
        field_ = names.ANN_CLOUD if o.clouds.source == "annotation" else "parameters.cloud"
        return Failed(
            claim=o.claim,
            cause=Refuse(
                field=field_,
                message=f"no cloud named {unknown[0]!r}; configured: {', '.join(o.configured_clouds)}",
                event=PROVISIONING_CLEANUP_FAILED,
            ),
        )
    if o.cloud_wait > 0:
        return Wait(delay=o.cloud_wait, reason="rate_limited", poll=False)
    if o.failure is not None:
        return failed_step(o.claim, o.failure_cloud, o.failure)
    volume = o.volume
    if volume is not None and o.volume_cloud is not None:
        poll = o.backoff.delay()
        if volume.status == DELETING:
            return Poll(claim=o.claim, wait=Wait(delay=poll, reason="deleting"))
        if volume.status in WAITING:
            return Poll(claim=o.claim, wait=Wait(delay=poll, reason="waiting_to_delete"))
        return GiveBack(
            claim=o.claim,
            cloud=o.volume_cloud,
            volume_id=volume.id,
            attachment_ids=volume.attachment_ids,
            mode="attachment" if volume.attachment_ids else "legacy",
            then=Wait(delay=poll, reason="deleting"),
        )
    if o.in_flight_wait > 0:
        return Wait(delay=o.in_flight_wait, reason="previous_create_in_flight", poll=False)
    return Release(
        claim=o.claim,
        secret=secret_name_for(names.pv_name_for(o.claim.uid)),
        secret_namespace=o.secret_namespace,
    )


def failed_step(claim: Target, cloud: str | None, e: ProvisionerError) -> Failed:
    """The step for an error a Cinder call about ``claim`` raised. Pure."""
    return Failed(
        claim=claim,
        cause=hold_or_fail(
            e, cloud=cloud, event=PROVISIONING_CLEANUP_FAILED, what="cleaning up Cinder volume"
        ),
    )


# --- observe -----------------------------------------------------------------------------------------


def observe(ctx: Context, pvc: Obj) -> Observed:
    """Read the claim's PV and class from the caches, and look its volume up on the right cloud(s)."""
    meta = pvc["metadata"]
    uid = meta["uid"]
    claim = Target.of(pvc)
    pv_name = names.pv_name_for(uid)
    pv = ctx.pvs.get(pv_name)
    if pv is not None and ((pv.get("spec") or {}).get("claimRef") or {}).get("uid") == uid:
        return Observed(claim=claim, pv_bound=True)
    hint = ctx.hints.get(uid)
    sc = ctx.classes.get(class_name_of(pvc))
    class_found, class_cloud = False, None
    secret_namespace = ctx.settings.secret_namespace
    if sc is not None:
        try:
            params = parse_class_parameters(sc.get("parameters"), default_secret_namespace=secret_namespace)
            class_found, class_cloud, secret_namespace = True, params.cloud, params.secret_namespace
        except InvalidInput:
            pass  # an unreadable class names no cloud we can trust: search them all
    configured = tuple(sorted(ctx.clouds))
    clouds = clouds_to_search(
        recorded=(meta.get("annotations") or {}).get(names.ANN_CLOUD) or None,
        class_found=class_found,
        class_cloud=class_cloud,
        configured=configured,
        default=ctx.settings.default_cloud,
    )
    base = Observed(
        claim=claim,
        clouds=clouds,
        configured_clouds=configured,
        in_flight_wait=other_create_in_flight(ctx, pvc),
        secret_namespace=secret_namespace,
        backoff=Backoff.of(ctx, hint),
    )
    if any(c not in configured for c in clouds.names):
        return base
    for cloud in clouds.names:
        if (wait := ctx.cloud_wait(cloud)) > 0:
            return replace(base, cloud_wait=wait, cloud_waiting=cloud)
        cinder = ctx.cinder(cloud)
        try:
            if clouds.source == "search":
                found = volumes_of_claim(ctx, cinder, uid)
                volume = found[0] if found else None
            else:
                volume = lookup_volume(ctx, cinder, pv_name, hint)
        except CinderError as e:
            return replace(base, failure=e, failure_cloud=cloud)
        if volume is not None and volume.id == adopt_volume_id(pvc):
            # An adopted volume is the admin's data: a claim deleted before its PV existed lets it go
            # untouched (it keeps the tags it got; the audit lists it). Only a PV's reclaim policy deletes it.
            return base
        if volume is not None:
            return replace(base, volume=volume, volume_cloud=cloud)
    return base


# --- execute -----------------------------------------------------------------------------------------


def execute(ctx: Context, step: Step) -> Outcome | None:
    """Perform exactly ``step``; the Outcome, or None to observe again."""
    if isinstance(step, Done):
        return DONE
    if isinstance(step, Wait):
        return requeue(step.delay, step.reason)
    if isinstance(step, Poll):
        return run_wait(ctx, ctx.hints.get(step.claim.uid), step.wait)
    if isinstance(step, HandOver):
        drop_intent(ctx, step.claim.as_obj())
        ctx.hints.drop(step.claim.uid)
        return DONE
    if isinstance(step, GiveBack):
        try:
            cleanup_volume(
                ctx,
                ctx.cinder(step.cloud),
                step.volume_id,
                None,
                step.mode,
                attachment_ids=step.attachment_ids,
            )
        except ProvisionerError as e:
            return execute(ctx, failed_step(step.claim, step.cloud, e))
        return run_wait(ctx, ctx.hints.get(step.claim.uid), step.then)
    if isinstance(step, Failed):
        cause = step.cause
        if isinstance(cause, HoldCloud):
            return run_hold(ctx, cause)
        if isinstance(cause, Refuse):
            return run_refuse(ctx, step.claim, cause)
        return run_fail(ctx, step.claim, cause)
    try:
        ctx.kube.delete("secrets", step.secret, namespace=step.secret_namespace)
    except KubeNotFound:
        pass
    drop_intent(ctx, step.claim.as_obj())
    ctx.hints.drop(step.claim.uid)
    return DONE


def abandon(ctx: Context, pvc: Obj) -> Outcome:
    """The claim is being deleted while our intent finalizer is on it: give Cinder back, then let it go."""
    return drive(lambda: observe(ctx, pvc), decide, lambda step: execute(ctx, step))
