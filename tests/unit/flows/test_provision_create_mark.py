"""The create mark (intent finalizer + step + ``create-attempt``, one patch) is written inside the create
call, once its in-flight slot is held: its time is the send time, so another replica's wait from it
covers the HTTP timeout however long the slot took. Nothing is sent if the patch fails or the claim
changed; a crash between the mark and the send is the "intent, no volume" state, recovered by a lookup."""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest

from provisioner.domain import names
from provisioner.domain.model import CreateVolumeRequest, Volume
from provisioner.flows.provision import reconcile_claim
from tests.fakes.ports import FakeCinder, make_context

UID = "0e572045-ae5a-491c-83e4-6b55e6dfa8be"
SNAPSHOT = "5d1c3a4e-8b7f-4c2d-9e6a-1f0b2c3d4e5f"


def _world(**kw: Any) -> Any:
    world = make_context(**kw)
    world.kube.put(
        "storageclasses",
        {"metadata": {"name": "fast"}, "provisioner": names.DEFAULT_PROVISIONER_NAME, "parameters": {}},
    )
    world.kube.put(
        "persistentvolumeclaims",
        {
            "metadata": {"name": "data", "namespace": "ns", "uid": UID},
            "spec": {
                "storageClassName": "fast",
                "accessModes": ["ReadWriteOnce"],
                "resources": {"requests": {"storage": "1Gi"}},
            },
        },
    )
    return world


def _live(world: Any) -> dict[str, Any]:
    obj: dict[str, Any] = world.kube.find("persistentvolumeclaims", "data", "ns")
    return obj


class _SlotCinder(FakeCinder):
    """Records what the claim looked like when the create call began (i.e. while waiting for a slot)."""

    def __init__(self, world_ref: list[Any], **kw: Any) -> None:
        super().__init__(**kw)
        self.world_ref = world_ref
        self.claim_at_entry: dict[str, Any] | None = None

    def create_volume(
        self, request: CreateVolumeRequest, *, before_send: Callable[[], None] | None = None
    ) -> Volume:
        self.claim_at_entry = copy.deepcopy(_live(self.world_ref[0]))
        return super().create_volume(request, before_send=before_send)


def test_the_mark_is_written_inside_the_create_call_after_the_slot_wait() -> None:
    """When the create call begins, the claim carries no finalizer and no mark; once it was sent, both,
    with the mark's time the moment the hook ran (the fake clock's wall time then)."""
    ref: list[Any] = []
    world = _world(clouds={"default": _SlotCinder(ref, name="default")})
    ref.append(world)
    world.clock.advance(7.0)
    assert "requeue" == reconcile_claim(world.ctx, "ns/data").kind
    entry = world.cinder.claim_at_entry["metadata"]
    assert (None, None) == (
        entry.get("finalizers"),
        (entry.get("annotations") or {}).get(names.ANN_CREATE_ATTEMPT),
    )
    live = _live(world)["metadata"]
    assert [names.PVC_PROVISIONING_FINALIZER] == live["finalizers"]
    assert f"replica-0 {world.ctx.wall():.3f}" == live["annotations"][names.ANN_CREATE_ATTEMPT]
    assert ["create_volume"] == world.cinder.methods_called()


def test_a_crash_between_the_mark_and_the_send_is_recovered_by_another_replica_with_one_volume() -> None:
    """Crash right after the mark (``after_create_mark``): nothing sent, intent + mark on the claim. A new
    leader waits out the dead replica's attempt, looks the volume up by name, finds none, creates one."""

    def crash(point: str) -> None:
        if point == "after_create_mark":
            raise RuntimeError("crash at after_create_mark")

    world = _world()
    with pytest.raises(RuntimeError, match="after_create_mark"):
        reconcile_claim(replace(world.ctx, checkpoint=crash), "ns/data")
    assert [] == world.cinder.methods_called()
    live = _live(world)["metadata"]
    assert [names.PVC_PROVISIONING_FINALIZER] == live["finalizers"]
    assert live["annotations"][names.ANN_CREATE_ATTEMPT].startswith("replica-0 ")
    other = make_context(kube=world.kube, clouds=world.clouds, clock=world.clock, identity="replica-1")
    outcome = reconcile_claim(other.ctx, "ns/data")
    assert ("requeue", "previous_create_in_flight") == (outcome.kind, outcome.reason)
    world.clock.advance(other.ctx.settings.create_in_flight_seconds + 1.0)
    reconcile_claim(other.ctx, "ns/data")
    assert ["find_volume", "find_volume", "create_volume"] == world.cinder.methods_called()
    assert 1 == len(world.cinder.volumes)


def test_a_claim_whose_source_changed_before_the_send_sends_nothing() -> None:
    """The cache showed the claim without a restore annotation; the live claim has one by the time the
    mark is written: the request no longer matches the claim, so no create is sent (the next round builds
    it from the claim as it is then)."""
    world = _world(live_caches=False)
    world.classes.objects["fast"] = world.kube.find("storageclasses", "fast")
    _live(world)["metadata"]["annotations"] = {"team": "a"}
    _live(world)["metadata"]["finalizers"] = ["kubernetes.io/pvc-protection"]  # as admission leaves it
    world.pvcs.objects["ns/data"] = copy.deepcopy(_live(world))
    world.ctx.hints.get(UID).look_up = True  # a marked claim: no version test, so the patch lands
    world.kube.patch(
        "persistentvolumeclaims",
        "data",
        {"metadata": {"annotations": {names.ANN_RESTORE_FROM_SNAPSHOT: SNAPSHOT}}},
        namespace="ns",
    )
    outcome = reconcile_claim(world.ctx, "ns/data")
    assert ("requeue", "claim_changed") == (outcome.kind, outcome.reason)
    assert ["find_volume"] == world.cinder.methods_called()
    assert SNAPSHOT == _live(world)["metadata"]["annotations"][names.ANN_RESTORE_FROM_SNAPSHOT]
