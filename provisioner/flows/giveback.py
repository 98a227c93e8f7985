"""What the flows that give Cinder volumes back (delete, abandon, duplicate sweeps) share.

Pure parts: the object an event is about (``Target``), the poll backoff as a function of the hint's numbers
(``Backoff``), the classification of an error by its type (``classify``), and the steps every such flow
may take (``Wait``, ``HoldCloud``, ``Fail``, ``Refuse``). Thin parts: executing those steps.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from provisioner.domain.errors import (
    CinderError,
    CinderRateLimited,
    InvalidInput,
    NotLeader,
    ProvisionerError,
)
from provisioner.domain.outcome import Outcome, error, final, requeue
from provisioner.flows.context import Context, Hint, Obj

#: How long to wait before looking again at a volume Cinder will not delete because it has snapshots.
SNAPSHOT_RETRY_SECONDS = 60.0
#: Rate-limited retry floor when a volume has attachments we did not make (an admin must act).
FOREIGN_RETRY_SECONDS = 60.0

ErrorClass = Literal["rate_limited", "not_leader", "invalid", "final", "retry"]


def classify(e: ProvisionerError) -> ErrorClass:
    """What an error means for a give-back flow, from its type (the adapter classified the response)."""
    if isinstance(e, CinderRateLimited):
        return "rate_limited"
    if isinstance(e, NotLeader):
        return "not_leader"
    if isinstance(e, InvalidInput):
        return "invalid"
    if isinstance(e, CinderError):
        return "retry"
    return "final" if e.final else "retry"


@dataclass(frozen=True, slots=True, kw_only=True)
class Target:
    """The object an event is about (PV or PVC), as plain values."""

    kind: str
    name: str
    namespace: str | None = None
    uid: str = ""
    resource_version: str | None = None

    @classmethod
    def of(cls, obj: Obj) -> Target:
        meta = obj.get("metadata") or {}
        namespace = meta.get("namespace")
        return cls(
            kind=str(obj.get("kind") or ("PersistentVolumeClaim" if namespace else "PersistentVolume")),
            name=str(meta.get("name", "")),
            namespace=namespace,
            uid=str(meta.get("uid", "")),
            resource_version=meta.get("resourceVersion"),
        )

    def as_obj(self) -> Obj:
        meta: dict[str, Any] = {"name": self.name, "uid": self.uid, "resourceVersion": self.resource_version}
        if self.namespace:
            meta["namespace"] = self.namespace
        return {"apiVersion": "v1", "kind": self.kind, "metadata": meta}


@dataclass(frozen=True, slots=True, kw_only=True)
class Backoff:
    """The hint's numbers and the poll knobs: everything the next poll delay depends on."""

    polls: int = 0
    started: float = 0.0
    deadline_warned: bool = False
    initial: float = 0.25
    cap: float = 5.0

    @classmethod
    def of(cls, ctx: Context, hint: Hint) -> Backoff:
        s = ctx.settings
        return cls(
            polls=hint.polls,
            started=hint.started,
            deadline_warned=hint.deadline_warned,
            initial=s.poll_initial_seconds,
            cap=s.poll_max_seconds,
        )

    def delay(self) -> float:
        """Same curve as ``Context.poll_delay``: x1.5 per poll from ``initial`` up to ``cap``."""
        return min(self.cap, self.initial * (1.5**self.polls))


# --- steps shared by the give-back flows -----------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Done:
    """Nothing (more) to do."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Wait:
    """Come back after ``delay``. ``poll``: it is a Cinder status poll (advances the hint's backoff).

    ``warn_deadline``: the flow has waited longer than its deadline; say so once (a Warning event).
    """

    delay: float
    reason: str
    poll: bool = True
    warn_deadline: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class HoldCloud:
    """Cinder said 429: hold every call to ``cloud`` for ``seconds`` and come back then."""

    cloud: str | None
    seconds: float


@dataclass(frozen=True, slots=True, kw_only=True)
class Fail:
    """A transient failure: a Warning event (unless ``event`` is empty) and a rate-limited retry."""

    reason: str
    message: str
    event: str = ""
    at_least: float = 0.0


@dataclass(frozen=True, slots=True, kw_only=True)
class Refuse:
    """A final failure that names what is wrong (``field``): a Warning event and a slow retry only."""

    field: str
    message: str
    event: str


def run_wait(ctx: Context, hint: Hint, step: Wait) -> Outcome:
    """Record the poll on the hint (so the backoff grows) and requeue."""
    if step.poll:
        hint.polls += 1
        hint.next_poll_at = ctx.clock() + step.delay
    if step.warn_deadline:
        hint.deadline_warned = True
    return requeue(step.delay, step.reason)


def run_hold(ctx: Context, step: HoldCloud) -> Outcome:
    ctx.hold_cloud(step.cloud, step.seconds)
    return requeue(step.seconds, "rate_limited")


def run_fail(ctx: Context, about: Target, step: Fail) -> Outcome:
    if step.event:
        ctx.events.event(about.as_obj(), "Warning", step.event, step.message)
    return error(step.reason, step.message, at_least=step.at_least)


def run_refuse(ctx: Context, about: Target, step: Refuse) -> Outcome:
    ctx.events.event(about.as_obj(), "Warning", step.event, f"{step.field}: {step.message}")
    return final(
        "invalid_" + step.field, f"{step.field}: {step.message}", retry_after=ctx.settings.final_retry_seconds
    )


def hold_or_fail(
    e: ProvisionerError, *, cloud: str | None, event: str, what: str
) -> HoldCloud | Fail | Refuse:
    """The step for an error a give-back call raised (pure): rate limit → hold, else fail or refuse."""
    kind = classify(e)
    if kind == "rate_limited":
        assert isinstance(e, CinderRateLimited)
        return HoldCloud(cloud=cloud, seconds=e.retry_after or 1.0)
    if kind == "not_leader":
        return Fail(reason="not_leader", message=str(e))
    if kind == "invalid":
        assert isinstance(e, InvalidInput)
        return Refuse(field=e.field, message=e.message, event=event)
    return Fail(reason=type(e).__name__, message=f"{what}: {e}", event=event)
