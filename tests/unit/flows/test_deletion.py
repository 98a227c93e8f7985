"""The delete flow: ``decide`` as a table (observed in → step out), the executor against port fakes."""

# ruff: noqa: E501 - the decision tables read one situation per line

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from provisioner.domain import names
from provisioner.domain.errors import (
    CinderConflict,
    CinderRateLimited,
    CinderUnavailable,
    NotLeader,
    ProvisionerError,
)
from provisioner.domain.model import AttachmentId, Volume, VolumeId
from provisioner.flows import deletion
from provisioner.flows.deletion import (
    DropFinalizer,
    Failed,
    Finish,
    Observed,
    PVFacts,
    RefuseForeignAttachments,
    SweepDuplicates,
    UnexportAndDelete,
    WaitDeleting,
    WaitForSnapshots,
    decide,
    failed_step,
    reconcile_volume,
)
from provisioner.flows.giveback import Backoff, Done, Fail, HoldCloud, Refuse, Target, Wait
from provisioner.mapping.build import secret_name_for
from provisioner.telemetry.events import VOLUME_DELETE_WAITING, VOLUME_FAILED_DELETE
from tests.fakes.ports import CINDER_DELETE_REFUSED, FakeCinder, World, make_context
from tests.unit.flows import objects

# --- decide: one case per branch ---------------------------------------------------------------------

T = Target(kind="PersistentVolume", name="pvc-u1", uid="pv-uid")
PV = PVFacts(
    name="pvc-u1",
    target=T,
    hint_key="pv-uid",
    volume_id="v1",
    attachment_id="a1",
    export_mode="attachment",
    cloud="default",
    storage_class="fast",
    claim_uid="u1",
    owned_secrets=(("pvc-u1-secret", "netvol-system"),),
)
CLOUDS = ("default", "east")
BACKOFF = Backoff(polls=2, started=100.0, initial=0.25, cap=5.0)  # next poll: 0.5625s
POLL = 0.25 * 1.5**2


def vol(status: str = "available", attachments: tuple[str, ...] = ("a1",), vid: str = "v1") -> Volume:
    return Volume(
        id=VolumeId(vid),
        name="pvc-u1",
        size_gib=1,
        status=status,
        attachment_ids=tuple(AttachmentId(a) for a in attachments),
    )


def seen(pv: PVFacts | None = PV, **kw: Any) -> Observed:
    values: dict[str, Any] = {
        "pv": pv,
        "configured_clouds": CLOUDS,
        "looked": True,
        "volume": vol(),
        "now": 200.0,
        "backoff": BACKOFF,
        "deadline": 600.0,
    }
    values.update(kw)
    return Observed(**values)


def refuse(field: str, message: str) -> Failed:
    return Failed(
        pv=T, storage_class="fast", cause=Refuse(field=field, message=message, event=VOLUME_FAILED_DELETE)
    )


def delete_step(**kw: Any) -> UnexportAndDelete:
    values: dict[str, Any] = {
        "pv": T,
        "hint_key": "pv-uid",
        "storage_class": "fast",
        "cloud": "default",
        "volume_id": VolumeId("v1"),
        "attachment_id": AttachmentId("a1"),
        "mode": "attachment",
        "cascade": False,
        "then": Wait(delay=POLL, reason="deleting"),
    }
    values.update(kw)
    return UnexportAndDelete(**values)


UNAVAILABLE = CinderUnavailable("Service Unavailable", operation="volume_get", status_code=503)
RATE_LIMITED = CinderRateLimited("slow down", retry_after=7.0, status_code=429)

FINISH = Finish(
    pv_name="pvc-u1",
    uid="pv-uid",
    hint_key="pv-uid",
    storage_class="fast",
    volume_id=VolumeId("v1"),
    secrets=(("pvc-u1-secret", "netvol-system"),),
    drop_finalizer=True,
    delete_pv=True,
)

DECIDE_CASES: list[tuple[str, Observed, Any]] = [
    ("pv not in cache", Observed(pv=None), Done()),
    ("pv not ours", seen(replace(PV, ours=False)), Done()),
    ("retain, pv being deleted: drop finalizer, keep volume", seen(replace(PV, policy="Retain", deleting=True)),
     DropFinalizer(pv_name="pvc-u1")),
    ("retain, deleted, finalizer already gone", seen(replace(PV, policy="Retain", deleting=True, our_finalizer=False)),
     Done()),
    ("retain, released", seen(replace(PV, policy="Retain")), Done()),
    ("bound pv is never deleted", seen(replace(PV, phase="Bound", deleting=True)), Done()),
    ("available pv is not due", seen(replace(PV, phase="Available")), Done()),
    ("volume id annotation missing", seen(replace(PV, volume_id=None), looked=False, volume=None),
     refuse(names.ANN_VOLUME_ID, "missing")),
    ("volume id annotation weird", seen(replace(PV, volume_id="../volumes/x"), looked=False, volume=None),
     refuse(names.ANN_VOLUME_ID, "not a Cinder volume id: '../volumes/x'")),
    ("volume id annotation not a string", seen(replace(PV, volume_id=42), looked=False, volume=None),
     refuse(names.ANN_VOLUME_ID, "not a Cinder volume id: 42")),
    ("attachment id annotation weird", seen(replace(PV, attachment_id="a/b"), looked=False, volume=None),
     refuse(names.ANN_ATTACHMENT_ID, "not a Cinder attachment id: 'a/b'")),
    ("cloud annotation names no configured cloud", seen(replace(PV, cloud="west"), looked=False, volume=None),
     refuse(names.ANN_CLOUD, "no cloud named 'west'; configured: default, east")),
    ("cloud rate limited: wait, no poll", seen(cloud_wait=3.0, looked=False, volume=None),
     Wait(delay=3.0, reason="rate_limited", poll=False)),
    ("get_volume 429: hold the cloud", seen(volume=None, failure=RATE_LIMITED),
     Failed(pv=T, storage_class="fast", cause=HoldCloud(cloud="default", seconds=7.0))),
    ("get_volume 503: warning and retry", seen(volume=None, failure=UNAVAILABLE),
     Failed(pv=T, storage_class="fast", cause=Fail(
         reason="CinderUnavailable", message=f"deleting Cinder volume v1: {UNAVAILABLE}", event=VOLUME_FAILED_DELETE))),
    ("volume deleting: poll", seen(volume=vol("deleting")),
     WaitDeleting(pv=T, hint_key="pv-uid", wait=Wait(delay=POLL, reason="deleting"))),
    ("volume deleting past the deadline: warn once", seen(volume=vol("deleting"), now=800.0),
     WaitDeleting(pv=T, hint_key="pv-uid", wait=Wait(delay=POLL, reason="deleting", warn_deadline=True))),
    ("volume deleting past the deadline, warned already",
     seen(volume=vol("deleting"), now=800.0, backoff=replace(BACKOFF, deadline_warned=True)),
     WaitDeleting(pv=T, hint_key="pv-uid", wait=Wait(delay=POLL, reason="deleting"))),
    ("foreign attachment: refuse", seen(volume=vol(attachments=("a1", "x9"))),
     RefuseForeignAttachments(pv=T, volume_id=VolumeId("v1"), ids=(AttachmentId("x9"),))),
    ("our attachment: unexport and delete", seen(), delete_step()),
    ("cascade from the class", seen(cascade=True), delete_step(cascade=True)),
    ("legacy export ignores attachments", seen(replace(PV, export_mode="legacy"), volume=vol(attachments=("x9",))),
     delete_step(mode="legacy")),
    ("attachment mode without attachment id is legacy", seen(replace(PV, attachment_id=None), volume=vol(attachments=())),
     delete_step(mode="legacy", attachment_id=None)),
    ("volume gone, a duplicate left", seen(volume=None, leftovers=(vol(vid="v1"), vol(vid="v2", attachments=()))),
     SweepDuplicates(pv=T, hint_key="pv-uid", storage_class="fast", cloud="default",
                     volumes=(vol(vid="v2", attachments=()),), then=Wait(delay=POLL, reason="deleting_duplicates"))),
    ("volume gone: finish", seen(volume=None), FINISH),
    ("volume gone, pv being deleted: keep the delete, drop the finalizer",
     seen(replace(PV, deleting=True), volume=None), replace(FINISH, delete_pv=False)),
    ("volume gone, finalizer already gone", seen(replace(PV, our_finalizer=False), volume=None),
     replace(FINISH, drop_finalizer=False)),
]  # fmt: skip


@pytest.mark.parametrize(
    ("observed", "expected"), [c[1:] for c in DECIDE_CASES], ids=[c[0] for c in DECIDE_CASES]
)
def test_decide(observed: Observed, expected: Any) -> None:
    actual = decide(observed)
    assert expected == actual


REFUSED = CinderConflict(CINDER_DELETE_REFUSED, status_code=400)
BUSY = CinderConflict("Volume is in use", status_code=400)
SWEEP = SweepDuplicates(
    pv=T,
    hint_key="pv-uid",
    storage_class="fast",
    cloud="east",
    volumes=(vol(vid="v2"),),
    then=Wait(delay=1, reason="x"),
)
FAILED_CASES: list[tuple[str, Any, ProvisionerError, Any]] = [
    ("refused, no snapshots (the same words): a warning, not 'has snapshots'", delete_step(), REFUSED,
     Failed(pv=T, storage_class="fast", cause=Fail(
         reason="CinderConflict", message=f"deleting Cinder volume v1: {REFUSED}", event=VOLUME_FAILED_DELETE))),
    ("other conflict: warning", delete_step(), BUSY,
     Failed(pv=T, storage_class="fast", cause=Fail(
         reason="CinderConflict", message=f"deleting Cinder volume v1: {BUSY}", event=VOLUME_FAILED_DELETE))),
    ("429: hold this cloud", delete_step(cloud="east"), RATE_LIMITED,
     Failed(pv=T, storage_class="fast", cause=HoldCloud(cloud="east", seconds=7.0))),
    ("429 without Retry-After: one second", delete_step(), CinderRateLimited("slow"),
     Failed(pv=T, storage_class="fast", cause=HoldCloud(cloud="default", seconds=1.0))),
    ("lost the lease: retry, no event", delete_step(), NotLeader("delete_volume"),
     Failed(pv=T, storage_class="fast", cause=Fail(reason="not_leader", message=str(NotLeader("delete_volume"))))),
    ("sweep failure names the duplicates", SWEEP, UNAVAILABLE,
     Failed(pv=T, storage_class="fast", cause=Fail(
         reason="CinderUnavailable", message=f"deleting duplicate Cinder volumes v2: {UNAVAILABLE}",
         event=VOLUME_FAILED_DELETE))),
]  # fmt: skip


@pytest.mark.parametrize(
    ("step", "err", "expected"), [c[1:] for c in FAILED_CASES], ids=[c[0] for c in FAILED_CASES]
)
def test_failed_step(step: Any, err: ProvisionerError, expected: Any) -> None:
    assert expected == failed_step(step, err)


def test_refused_delete_with_snapshots_listed_waits_for_them() -> None:
    """Only what Cinder lists decides "has snapshots"; a refusal of a sweep never does."""
    assert WaitForSnapshots(pv=T, volume_id=VolumeId("v1")) == failed_step(
        delete_step(), REFUSED, has_snapshots=True
    )
    assert isinstance(failed_step(delete_step(), UNAVAILABLE, has_snapshots=True), Failed)
    assert isinstance(failed_step(SWEEP, REFUSED, has_snapshots=True), Failed)


# --- executor against the fakes ----------------------------------------------------------------------


def world(**pv_kw: Any) -> World:
    w = make_context(clouds={"default": FakeCinder(name="default"), "east": FakeCinder(name="east")})
    w.kube.put("storageclasses", objects.storage_class())
    w.kube.put("persistentvolumes", objects.pv(**pv_kw))
    w.kube.put(
        "secrets", {"metadata": {"name": secret_name_for("pvc-u1"), "namespace": "netvol-system", "uid": "s"}}
    )
    w.cinder.add_volume("v1", attachment_ids=["a1"], metadata=objects.claim_metadata())
    return w


def test_delete_over_time_exact_calls() -> None:
    w = world()
    first = reconcile_volume(w.ctx, "pvc-u1")
    assert (first.kind, first.reason) == ("requeue", "deleting")
    assert w.cinder.calls == [
        ("get_volume", "v1"),
        ("delete_attachment", "a1"),
        ("delete_volume", "v1", False),
    ]
    assert w.kube.calls == []
    w.cinder.calls.clear()
    w.cinder.tick()
    assert reconcile_volume(w.ctx, "pvc-u1").kind == "done"
    assert w.cinder.calls == [("get_volume", "v1"), ("list_volumes", objects.claim_metadata())]
    assert [c[:3] for c in w.kube.calls] == [
        ("delete", "secrets", secret_name_for("pvc-u1")),
        ("patch", "persistentvolumes", "pvc-u1"),
        ("delete", "persistentvolumes", "pvc-u1"),
    ]
    assert w.kube.calls[1][4] == "strategic"
    assert w.kube.find("persistentvolumes", "pvc-u1") is None
    assert w.events.calls == []
    assert len(w.ctx.hints) == 0


def test_delete_legacy_export_terminates_and_unreserves() -> None:
    w = world(attachment_id=None, mode="legacy")
    w.cinder.volumes.clear()
    w.cinder.add_volume("v1", status="in-use", metadata=objects.claim_metadata())
    assert reconcile_volume(w.ctx, "pvc-u1").reason == "deleting"
    assert w.cinder.methods_called() == ["get_volume", "terminate_connection", "unreserve", "delete_volume"]


def test_503_on_delete_repeated_is_bounded_and_warns_once() -> None:
    w = world()
    n = 12
    for i in range(n):
        w.cinder.fail(
            "delete_volume",
            CinderUnavailable(
                "Service Unavailable", operation="volume_delete", status_code=503, request_id=f"req-{i}"
            ),
            times=1,
        )
    outcomes = []
    for _ in range(n):
        outcomes.append(reconcile_volume(w.ctx, "pvc-u1"))
        w.clock.advance(5.0)
    assert {(o.kind, o.reason) for o in outcomes} == {("error", "CinderUnavailable")}
    per_attempt = ["get_volume", "delete_attachment", "delete_volume"]
    assert w.cinder.methods_called() == per_attempt * n  # one attempt per reconcile, never a loop
    warnings = w.events.distinct("Warning")
    assert len(warnings) == 1
    assert warnings[0].reason == VOLUME_FAILED_DELETE
    assert warnings[0].message.startswith("deleting Cinder volume v1: Service Unavailable")
    assert len(w.events.calls) == n  # the recorder deduplicates these into one Event with a count
    assert w.kube.find("persistentvolumes", "pvc-u1") is not None
    # Cinder recovers: the next reconcile deletes, then the PV goes
    assert reconcile_volume(w.ctx, "pvc-u1").reason == "deleting"
    w.cinder.tick()
    assert reconcile_volume(w.ctx, "pvc-u1").kind == "done"


def test_429_holds_the_cloud_and_no_call_goes_out_until_retry_after() -> None:
    w = world()
    w.cinder.fail("delete_volume", CinderRateLimited("slow", retry_after=7.0, status_code=429), times=1)
    out = reconcile_volume(w.ctx, "pvc-u1")
    assert (out.kind, out.delay, out.reason) == ("requeue", 7.0, "rate_limited")
    w.cinder.calls.clear()
    w.clock.advance(3.0)
    held = reconcile_volume(w.ctx, "pvc-u1")
    assert (held.kind, held.reason) == ("requeue", "rate_limited")
    assert held.delay == pytest.approx(4.0)
    assert w.cinder.calls == []
    w.clock.advance(4.0)
    assert reconcile_volume(w.ctx, "pvc-u1").reason == "deleting"
    assert w.events.calls == []


def test_has_snapshots_normal_event_and_slow_retry() -> None:
    w = world()
    w.cinder.add_snapshot("s1", "v1")
    out = reconcile_volume(w.ctx, "pvc-u1")
    assert (out.kind, out.delay, out.reason) == ("requeue", 60.0, "has_snapshots")
    assert [(e.type, e.reason) for e in w.events.calls] == [("Normal", VOLUME_DELETE_WAITING)]
    assert "s1" in w.cinder.snapshots
    assert [c[0] for c in w.cinder.calls][-2:] == ["delete_volume", "list_snapshots"]


def test_refused_delete_of_an_attached_volume_is_not_called_has_snapshots() -> None:
    """Cinder's refusal names snapshots among every reason; with none listed it is a plain warning."""
    w = world()
    w.cinder.fail("delete_volume", REFUSED, times=1)  # e.g. attached behind our back meanwhile
    out = reconcile_volume(w.ctx, "pvc-u1")
    assert (out.kind, out.reason) == ("error", "CinderConflict")
    assert [c[0] for c in w.cinder.calls][-2:] == ["delete_volume", "list_snapshots"]
    assert [(e.type, e.reason) for e in w.events.calls] == [("Warning", VOLUME_FAILED_DELETE)]


def test_cascade_class_deletes_snapshots_with_the_volume() -> None:
    w = world()
    w.kube.put("storageclasses", objects.storage_class(cascadeDelete="true"))
    w.cinder.add_snapshot("s1", "v1")
    assert reconcile_volume(w.ctx, "pvc-u1").reason == "deleting"
    assert ("delete_volume", "v1", True) in w.cinder.calls
    assert w.events.calls == []


def test_not_leader_makes_no_mutation_and_no_event() -> None:
    w = world()
    w.leader[0] = False
    out = reconcile_volume(w.ctx, "pvc-u1")
    assert (out.kind, out.reason) == ("error", "not_leader")
    assert w.cinder.calls == [("get_volume", "v1")]
    assert w.events.calls == []
    assert w.kube.calls == []


@pytest.mark.parametrize(
    ("pv_kw", "annotation"),
    [
        ({"volume_id": None}, names.ANN_VOLUME_ID),
        ({"volume_id": "../../v2"}, names.ANN_VOLUME_ID),
        ({"attachment_id": "a?b=c"}, names.ANN_ATTACHMENT_ID),
        ({"cloud": "nowhere"}, names.ANN_CLOUD),
    ],
)
def test_malformed_annotation_is_a_final_error_naming_it(pv_kw: dict[str, Any], annotation: str) -> None:
    w = world(**pv_kw)
    out = reconcile_volume(w.ctx, "pvc-u1")
    assert out.kind == "final"
    assert out.delay == w.ctx.settings.final_retry_seconds
    assert annotation in out.message
    assert w.cinder.calls == []
    assert [(e.type, e.reason) for e in w.events.calls] == [("Warning", VOLUME_FAILED_DELETE)]
    assert annotation in w.events.calls[0].message


def test_retain_pv_deleted_by_admin_keeps_the_volume() -> None:
    w = world(policy="Retain", deleting=True)
    assert reconcile_volume(w.ctx, "pvc-u1").kind == "done"
    assert w.cinder.calls == []
    assert [c[:3] for c in w.kube.calls] == [("patch", "persistentvolumes", "pvc-u1")]
    assert "v1" in w.cinder.volumes


def test_bound_pv_is_left_alone() -> None:
    w = world(phase="Bound", deleting=True)
    assert reconcile_volume(w.ctx, "pvc-u1").kind == "done"
    assert w.cinder.calls == []
    assert w.kube.calls == []


def test_foreign_attachment_is_refused_without_mutation() -> None:
    w = world()
    w.cinder.volumes.clear()
    w.cinder.add_volume("v1", attachment_ids=["a1", "nova-1"])
    out = reconcile_volume(w.ctx, "pvc-u1")
    assert (out.kind, out.reason, out.delay) == ("error", "foreign_attachment", 60.0)
    assert w.cinder.calls == [("get_volume", "v1")]
    assert [e.type for e in w.events.calls] == ["Warning"]


def test_volume_on_named_cloud() -> None:
    w = world(cloud="east")
    w.cinder.volumes.clear()
    w.clouds["east"].add_volume("v1")
    assert reconcile_volume(w.ctx, "pvc-u1").reason == "deleting"
    assert w.clouds["east"].methods_called() == ["get_volume", "delete_attachment", "delete_volume"]
    assert w.cinder.calls == []


def test_duplicate_of_the_claim_is_swept_before_the_pv_goes() -> None:
    w = world()
    w.cinder.volumes.clear()
    w.cinder.add_volume("v2", metadata=objects.claim_metadata())
    out = reconcile_volume(w.ctx, "pvc-u1")
    assert out.reason == "deleting_duplicates"
    assert w.cinder.methods_called() == ["get_volume", "list_volumes", "terminate_connection", "unreserve",
                                         "delete_volume"]  # fmt: skip
    assert w.kube.find("persistentvolumes", "pvc-u1") is not None
    w.cinder.tick()
    assert reconcile_volume(w.ctx, "pvc-u1").kind == "done"


def test_deleting_past_deadline_warns_once() -> None:
    w = world()
    w.cinder.volumes.clear()
    w.cinder.add_volume("v1", status="deleting")
    for _ in range(5):
        assert reconcile_volume(w.ctx, "pvc-u1").reason == "deleting"
        w.clock.advance(300.0)
    assert [(e.type, e.reason) for e in w.events.calls] == [("Warning", VOLUME_FAILED_DELETE)]
    assert w.cinder.methods_called() == ["get_volume"] * 5


def test_poll_backoff_grows_on_the_hint() -> None:
    w = world()
    w.cinder.volumes.clear()
    w.cinder.add_volume("v1", status="deleting")
    delays = [reconcile_volume(w.ctx, "pvc-u1").delay for _ in range(4)]
    assert delays == [0.25, 0.375, 0.5625, 0.84375]


def test_is_our_pv() -> None:
    assert deletion.is_our_pv(objects.pv(), objects.PROVISIONER)
    assert deletion.is_our_pv(objects.pv(volume_id=None), objects.PROVISIONER)  # reported, not ignored
    assert not deletion.is_our_pv(objects.pv(), "someone/else")
