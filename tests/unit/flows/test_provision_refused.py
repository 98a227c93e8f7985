"""A create Cinder refused for good leaves the claim "never created": the retry needs no lookup.

A typo'd volume type (404) or an exhausted quota (413) is final: the attempt created nothing. Its failure
record drops the intent finalizer, the step and the create mark in the same patch — tested on the mark,
so a create any replica announced since keeps them — and so every slow retry, by this replica or a new
leader, costs one create call (no lookup, no wait for another replica's in-flight create). An unknown
outcome (a 5xx) keeps everything: the next attempt must look the volume up.
"""

from __future__ import annotations

from typing import Any

import pytest

from provisioner.domain import names
from provisioner.domain.errors import CinderQuotaExceeded, CinderReferenceNotFound, CinderUnavailable
from provisioner.flows.claims import never_created
from provisioner.flows.provision import reconcile_claim
from tests.fakes.ports import FakeCinder, FakeClock, FakeEvents, FakeKube, make_context

UID = "0e572045-ae5a-491c-83e4-6b55e6dfa8be"
RETRY = 30.0


def _claim() -> dict[str, Any]:
    return {
        "metadata": {"name": "data", "namespace": "ns", "uid": UID},
        "spec": {
            "storageClassName": "typo",
            "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": "1Gi"}},
        },
    }


def _world(kube: FakeKube | None = None, **kw: Any) -> Any:
    fresh = kube is None
    kw.setdefault("clouds", {"default": FakeCinder(name="default")})
    world = make_context(kube=kube, final_retry_seconds=RETRY, **kw)
    if fresh:
        world.kube.put(
            "storageclasses",
            {
                "metadata": {"name": "typo"},
                "provisioner": names.DEFAULT_PROVISIONER_NAME,
                "parameters": {"type": "no-such-type"},
            },
        )
        world.kube.put("persistentvolumeclaims", _claim())
    return world


def _no_type() -> CinderReferenceNotFound:
    return CinderReferenceNotFound("Volume type no-such-type could not be found.", reference="volume_type")


def _live(world: Any) -> dict[str, Any]:
    obj: dict[str, Any] = world.kube.find("persistentvolumeclaims", "data", "ns")
    return obj


def _claim_patches(world: Any) -> int:
    return sum(1 for c in world.kube.calls if c[0] == "patch" and c[1] == "persistentvolumeclaims")


@pytest.mark.parametrize(
    "refusal",
    [
        pytest.param(_no_type(), id="unknown-volume-type-404"),
        pytest.param(CinderQuotaExceeded("VolumeLimitExceeded", status_code=413), id="quota-413"),
    ],
)
def test_a_definite_refusal_records_the_failure_and_drops_the_intent_in_one_patch(refusal: Exception) -> None:
    world = _world()
    world.cinder.fail("create_volume", refusal)
    outcome = reconcile_claim(world.ctx, "ns/data")
    assert "final" == outcome.kind
    assert ["create_volume"] == world.cinder.methods_called()
    assert 2 == _claim_patches(world)  # the intent + mark before the send, then failure + release
    meta = _live(world)["metadata"]
    assert names.PVC_PROVISIONING_FINALIZER not in (meta.get("finalizers") or [])
    assert names.ANN_CREATE_ATTEMPT not in meta["annotations"]
    assert names.ANN_PROVISIONING_STEP not in meta["annotations"]
    assert names.ANN_FINAL_FAILURE in meta["annotations"]
    assert never_created(world.ctx, _live(world))


def test_each_slow_retry_is_one_create_call_and_two_claim_writes() -> None:
    world = _world()
    world.cinder.fail("create_volume", _no_type())  # every create
    for _ in range(4):
        reconcile_claim(world.ctx, "ns/data")
        world.clock.advance(RETRY + 1.0)
    assert ["create_volume"] * 4 == world.cinder.methods_called()
    assert 8 == _claim_patches(world)
    assert 1 == len({(e.reason, e.message) for e in world.events.calls})


def test_a_new_leader_honours_the_record_and_then_creates_without_a_lookup_or_an_in_flight_wait() -> None:
    """Leader churn: each replica has its own identity and hints; the claim carries what they need."""
    kube, clock, cinder = FakeKube(), FakeClock(), FakeCinder(name="default")
    cinder.fail("create_volume", _no_type())
    first = _world(clouds={"default": cinder}, clock=clock, events=FakeEvents())
    kube = first.kube
    reconcile_claim(first.ctx, "ns/data")
    second = _world(kube, clouds={"default": cinder}, clock=clock, identity="replica-1")
    outcome = reconcile_claim(second.ctx, "ns/data")
    assert ("requeue", "final_failure_not_due") == (outcome.kind, outcome.reason)
    clock.advance(RETRY + 1.0)
    reconcile_claim(second.ctx, "ns/data")
    assert ["create_volume", "create_volume"] == cinder.methods_called()


class _RacedCinder(FakeCinder):
    """While our create is refused, another replica marks the claim for its own create."""

    def __init__(self, kube: FakeKube) -> None:
        super().__init__(name="default")
        self.kube = kube

    def create_volume(self, request: Any, *, before_send: Any = None) -> Any:
        if before_send is not None:
            before_send()
        self.calls.append(("create_volume", request.name))
        self.kube.patch(
            "persistentvolumeclaims",
            "data",
            {"metadata": {"annotations": {names.ANN_CREATE_ATTEMPT: "replica-9 1.000"}}},
            namespace="ns",
        )
        raise _no_type()


def test_a_create_announced_since_keeps_the_intent() -> None:
    """Another replica re-marked the claim between our refused create and our record: its create may be
    in flight, so our record leaves finalizer, step and mark alone (the next attempt looks up)."""
    kube = FakeKube()
    world = _world(kube, clouds={"default": _RacedCinder(kube)})
    kube.put(
        "storageclasses",
        {
            "metadata": {"name": "typo"},
            "provisioner": names.DEFAULT_PROVISIONER_NAME,
            "parameters": {"type": "no-such-type"},
        },
    )
    kube.put("persistentvolumeclaims", _claim())
    assert "final" == reconcile_claim(world.ctx, "ns/data").kind
    meta = _live(world)["metadata"]
    assert names.PVC_PROVISIONING_FINALIZER in meta["finalizers"]
    assert "replica-9 1.000" == meta["annotations"][names.ANN_CREATE_ATTEMPT]
    assert names.ANN_FINAL_FAILURE in meta["annotations"]
    assert not never_created(world.ctx, _live(world))


def test_an_unknown_outcome_keeps_the_intent_and_the_retry_looks_up() -> None:
    world = _world()
    world.cinder.fail("create_volume", CinderUnavailable("injected 503", status_code=503), times=1)
    assert "error" == reconcile_claim(world.ctx, "ns/data").kind
    meta = _live(world)["metadata"]
    assert names.PVC_PROVISIONING_FINALIZER in meta["finalizers"]
    assert names.ANN_CREATE_ATTEMPT in meta["annotations"]
    world.cinder.fail("create_volume", _no_type())
    reconcile_claim(world.ctx, "ns/data")
    assert ["create_volume", "find_volume", "create_volume"] == world.cinder.methods_called()
    assert never_created(world.ctx, _live(world))  # the refused retry released it
