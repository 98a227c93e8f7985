"""Abandoning a deleted claim: which cloud (recorded, class, search), ``decide`` as a table, the executor."""

# ruff: noqa: E501 - the decision tables read one situation per line

from __future__ import annotations

from typing import Any

import pytest

from provisioner.domain import names
from provisioner.domain.errors import CinderRateLimited, CinderUnavailable
from provisioner.domain.model import AttachmentId, Volume, VolumeId
from provisioner.flows.abandon import (
    Clouds,
    Failed,
    GiveBack,
    HandOver,
    Observed,
    Poll,
    Release,
    abandon,
    clouds_to_search,
    decide,
)
from provisioner.flows.claims import persist_intent
from provisioner.flows.giveback import Backoff, Fail, HoldCloud, Refuse, Target, Wait
from provisioner.mapping.build import secret_name_for
from provisioner.telemetry.events import PROVISIONING_CLEANUP_FAILED
from tests.fakes.ports import FakeCinder, World, make_context
from tests.unit.flows import objects

# --- which cloud ----------------------------------------------------------------------------------------

CONFIGURED = ("default", "east", "west")
CLOUD_CASES: list[tuple[str, dict[str, Any], Clouds]] = [
    ("recorded on the claim wins", {"recorded": "east", "class_found": True, "class_cloud": "west"},
     Clouds(names=("east",), source="annotation")),
    ("recorded, class gone", {"recorded": "east", "class_found": False, "class_cloud": None},
     Clouds(names=("east",), source="annotation")),
    ("class names a cloud", {"recorded": None, "class_found": True, "class_cloud": "west"},
     Clouds(names=("west",), source="class")),
    ("class names none: the default", {"recorded": None, "class_found": True, "class_cloud": None},
     Clouds(names=("default",), source="class")),
    ("neither: every configured cloud, default first", {"recorded": None, "class_found": False, "class_cloud": None},
     Clouds(names=("default", "east", "west"), source="search")),
]  # fmt: skip


@pytest.mark.parametrize(("kw", "expected"), [c[1:] for c in CLOUD_CASES], ids=[c[0] for c in CLOUD_CASES])
def test_clouds_to_search(kw: dict[str, Any], expected: Clouds) -> None:
    assert expected == clouds_to_search(configured=CONFIGURED, default="default", **kw)


# --- decide ---------------------------------------------------------------------------------------------

C = Target(kind="PersistentVolumeClaim", name="data", namespace="ns", uid="u1")
EAST = Clouds(names=("east",), source="annotation")
BACKOFF = Backoff(polls=1, initial=0.25, cap=5.0)
POLL = 0.375
UNAVAILABLE = CinderUnavailable("down", status_code=503)


def vol(status: str = "available", attachments: tuple[str, ...] = ()) -> Volume:
    return Volume(
        id=VolumeId("v9"),
        name="pvc-u1",
        size_gib=1,
        status=status,
        attachment_ids=tuple(AttachmentId(a) for a in attachments),
    )


def seen(**kw: Any) -> Observed:
    values: dict[str, Any] = {
        "claim": C,
        "clouds": EAST,
        "configured_clouds": CONFIGURED,
        "secret_namespace": "netvol-system",
        "backoff": BACKOFF,
    }
    values.update(kw)
    return Observed(**values)


RELEASE = Release(claim=C, secret=secret_name_for("pvc-u1"), secret_namespace="netvol-system")

DECIDE_CASES: list[tuple[str, Observed, Any]] = [
    ("pv exists: hand over to the delete flow", seen(pv_bound=True, volume=vol(), volume_cloud="east"),
     HandOver(claim=C)),
    ("recorded cloud not configured", seen(clouds=Clouds(names=("north",), source="annotation")),
     Failed(claim=C, cause=Refuse(field=names.ANN_CLOUD, message="no cloud named 'north'; configured: default, east, west",
                                  event=PROVISIONING_CLEANUP_FAILED))),
    ("class cloud not configured", seen(clouds=Clouds(names=("north",), source="class")),
     Failed(claim=C, cause=Refuse(field="parameters.cloud",
                                  message="no cloud named 'north'; configured: default, east, west",
                                  event=PROVISIONING_CLEANUP_FAILED))),
    ("cloud rate limited", seen(cloud_wait=2.0, cloud_waiting="east"),
     Wait(delay=2.0, reason="rate_limited", poll=False)),
    ("lookup 429: hold that cloud", seen(failure=CinderRateLimited("slow", retry_after=4.0), failure_cloud="east"),
     Failed(claim=C, cause=HoldCloud(cloud="east", seconds=4.0))),
    ("lookup 503: warning and retry", seen(failure=UNAVAILABLE, failure_cloud="east"),
     Failed(claim=C, cause=Fail(reason="CinderUnavailable", message=f"cleaning up Cinder volume: {UNAVAILABLE}",
                                event=PROVISIONING_CLEANUP_FAILED))),
    ("volume deleting: poll", seen(volume=vol("deleting"), volume_cloud="east"),
     Poll(claim=C, wait=Wait(delay=POLL, reason="deleting"))),
    ("volume still creating: poll", seen(volume=vol("creating"), volume_cloud="east"),
     Poll(claim=C, wait=Wait(delay=POLL, reason="waiting_to_delete"))),
    ("exported volume: give back its attachments", seen(volume=vol("in-use", ("a1",)), volume_cloud="east"),
     GiveBack(claim=C, cloud="east", volume_id=VolumeId("v9"), attachment_ids=(AttachmentId("a1"),),
              mode="attachment", then=Wait(delay=POLL, reason="deleting"))),
    ("available volume: legacy unexport + delete", seen(volume=vol(), volume_cloud="east"),
     GiveBack(claim=C, cloud="east", volume_id=VolumeId("v9"), attachment_ids=(), mode="legacy",
              then=Wait(delay=POLL, reason="deleting"))),
    ("no volume, another replica's create may land", seen(in_flight_wait=12.0),
     Wait(delay=12.0, reason="previous_create_in_flight", poll=False)),
    ("no volume: release the claim", seen(), RELEASE),
]  # fmt: skip


@pytest.mark.parametrize(
    ("observed", "expected"), [c[1:] for c in DECIDE_CASES], ids=[c[0] for c in DECIDE_CASES]
)
def test_decide(observed: Observed, expected: Any) -> None:
    actual = decide(observed)
    assert expected == actual


# --- executor against the fakes -------------------------------------------------------------------------


def world(*, cloud: str | None = None, with_class: dict[str, str] | None = None) -> World:
    w = make_context(
        clouds={n: FakeCinder(name=n) for n in ("default", "east")},
    )
    if with_class is not None:
        w.kube.put("storageclasses", objects.storage_class(**with_class))
    w.kube.put("persistentvolumeclaims", objects.pvc(cloud=cloud))
    return w


def claim(w: World) -> dict[str, Any]:
    found = w.pvcs.get("ns/data")
    assert found is not None
    return found


def add_volume(cinder: FakeCinder, status: str = "available") -> None:
    cinder.add_volume(
        "v9",
        status=status,
        name="pvc-u1",
        metadata={**objects.claim_metadata(), names.META_PV_NAME: "pvc-u1"},
    )


def test_class_deleted_with_the_claim_on_a_non_default_cloud_deletes_there() -> None:
    w = world(cloud="east")  # the class went with `kubectl delete -f`; the claim recorded its cloud
    east, default = w.clouds["east"], w.clouds["default"]
    add_volume(east)
    out = abandon(w.ctx, claim(w))
    assert (out.kind, out.reason) == ("requeue", "deleting")
    assert east.calls == [
        ("find_volume", "pvc-u1", "cluster-a"),
        ("terminate_connection", "v9"),
        ("unreserve", "v9"),
        ("delete_volume", "v9", False),
    ]
    assert default.calls == []
    east.tick()
    assert abandon(w.ctx, claim(w)).kind == "done"
    assert "v9" not in east.volumes
    assert default.calls == []
    assert w.kube.find("persistentvolumeclaims", "data", "ns") is None  # finalizer gone: the claim went
    assert [c[:3] for c in w.kube.calls] == [
        ("delete", "secrets", secret_name_for("pvc-u1")),
        ("patch", "persistentvolumeclaims", "data"),
    ]


def test_nothing_recorded_and_no_class_searches_every_cloud_by_tag() -> None:
    w = world()
    east, default = w.clouds["east"], w.clouds["default"]
    add_volume(east)
    assert abandon(w.ctx, claim(w)).reason == "deleting"
    assert default.calls == [("list_volumes", objects.claim_metadata())]
    assert east.methods_called() == ["list_volumes", "terminate_connection", "unreserve", "delete_volume"]
    east.tick()
    assert abandon(w.ctx, claim(w)).kind == "done"
    assert default.methods_called() == ["list_volumes", "list_volumes"]


def test_class_present_names_the_cloud() -> None:
    w = world(with_class={"cloud": "east"})
    add_volume(w.clouds["east"])
    assert abandon(w.ctx, claim(w)).reason == "deleting"
    assert w.clouds["default"].calls == []


def test_class_without_cloud_uses_the_default() -> None:
    w = world(with_class={})
    add_volume(w.clouds["default"])
    assert abandon(w.ctx, claim(w)).reason == "deleting"
    assert w.clouds["east"].calls == []
    assert w.clouds["default"].methods_called()[-1] == "delete_volume"


def test_pv_exists_hands_over_without_touching_cinder() -> None:
    w = world(cloud="east")
    w.kube.put("persistentvolumes", objects.pv())
    assert abandon(w.ctx, claim(w)).kind == "done"
    assert all(c.calls == [] for c in w.clouds.values())
    assert [c[:3] for c in w.kube.calls] == [("patch", "persistentvolumeclaims", "data")]


def test_unavailable_cloud_warns_and_retries() -> None:
    w = world(cloud="east")
    w.clouds["east"].fail("find_volume", CinderUnavailable("down", status_code=503))
    out = abandon(w.ctx, claim(w))
    assert (out.kind, out.reason) == ("error", "CinderUnavailable")
    assert [(e.type, e.reason) for e in w.events.calls] == [("Warning", PROVISIONING_CLEANUP_FAILED)]
    assert w.kube.find("persistentvolumeclaims", "data", "ns") is not None  # never let go with a volume


def test_rate_limited_cloud_is_held() -> None:
    w = world(cloud="east")
    add_volume(w.clouds["east"])
    w.clouds["east"].fail("delete_volume", CinderRateLimited("slow", retry_after=5.0), times=1)
    assert abandon(w.ctx, claim(w)).reason == "rate_limited"
    w.clouds["east"].calls.clear()
    assert abandon(w.ctx, claim(w)).reason == "rate_limited"
    assert w.clouds["east"].calls == []
    assert w.events.calls == []


def test_not_leader_gives_nothing_back() -> None:
    w = world(cloud="east")
    add_volume(w.clouds["east"])
    w.leader[0] = False
    out = abandon(w.ctx, claim(w))
    assert (out.kind, out.reason) == ("error", "not_leader")
    assert w.clouds["east"].methods_called() == ["find_volume"]
    assert "v9" in w.clouds["east"].volumes


def test_create_in_flight_waits_before_letting_go() -> None:
    w = world(cloud="east")
    pvc = claim(w)
    pvc["metadata"]["annotations"][names.ANN_CREATE_ATTEMPT] = f"replica-9 {w.clock.wall() - 5.0}"
    out = abandon(w.ctx, pvc)
    assert (out.kind, out.reason) == ("requeue", "previous_create_in_flight")
    assert out.delay == pytest.approx(w.ctx.settings.create_in_flight_seconds - 5.0)
    assert w.kube.calls == []


# --- the cloud recorded with the intent -----------------------------------------------------------------


def test_persist_intent_records_the_cloud() -> None:
    w = make_context()
    w.kube.put("persistentvolumeclaims", objects.pvc(deleting=False))
    live = persist_intent(w.ctx, claim(w), "creating-volume", cloud="east")
    assert live is not None
    assert live["metadata"]["annotations"][names.ANN_CLOUD] == "east"
    assert names.PVC_PROVISIONING_FINALIZER in live["metadata"]["finalizers"]
    assert w.kube.calls[-1][4] == "json"
    # already recorded: not written again
    persist_intent(w.ctx, claim(w), "creating-volume", cloud="east")
    ops = w.kube.calls[-1][5]
    assert not any(op["path"].endswith("netvol.io~1cloud") for op in ops)


def test_persist_intent_without_cloud_writes_none() -> None:
    w = make_context()
    w.kube.put("persistentvolumeclaims", objects.pvc(deleting=False))
    live = persist_intent(w.ctx, claim(w))
    assert live is not None
    assert names.ANN_CLOUD not in live["metadata"]["annotations"]
