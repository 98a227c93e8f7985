"""The provision flow's fast path: no lookup for a claim never marked, no poll after a final create answer,
one Event per claim when the create is done by its first poll. Each test states what keeps it crash-safe."""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest

from provisioner.domain import names
from provisioner.domain.model import (
    AVAILABLE,
    Attachment,
    ConnectionInfo,
    Connector,
    CreateVolumeRequest,
    Volume,
    VolumeId,
)
from provisioner.flows.claims import never_created
from provisioner.flows.provision import reconcile_claim
from provisioner.flows.provision_decide import ClaimState, Create, Limits, VolumeState, Wait, decide_volume
from tests.fakes.ports import FakeCinder, make_context

UID = "0e572045-ae5a-491c-83e4-6b55e6dfa8be"
PV = names.pv_name_for(UID)
INTENT = ClaimState(key="ns/data", uid=UID, class_name="fast", intent=True)
LIMITS = Limits()


#: An RBD export the PV mapping accepts (the shared fake's has no ports).
RBD = ConnectionInfo(
    driver_volume_type="rbd",
    data={"name": "pool/vol", "hosts": ["10.0.0.1"], "ports": ["6789"], "auth_enabled": False},
)


class _Cinder(FakeCinder):
    """The shared fake, with an export the mapping accepts."""

    def create_attachment(self, volume_id: VolumeId, connector: Connector) -> Attachment:
        attachment = replace(super().create_attachment(volume_id, connector), connection_info=RBD)
        self.attachments[attachment.id] = attachment
        return attachment


def _world(**kw: Any) -> Any:
    kw.setdefault("clouds", {"default": _Cinder(name="default")})
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


def _claim_patches(world: Any) -> list[Any]:
    return [c[5] for c in world.kube.calls if c[0] == "patch" and c[1] == "persistentvolumeclaims"]


def _settle(world: Any) -> None:
    world.cinder.tick()
    world.clock.advance(60.0)


def test_a_claim_never_marked_is_created_without_a_lookup_and_the_intent_patch_tests_its_version() -> None:
    """No create mark on the claim: no find_volume; the one intent patch tests uid and resourceVersion."""
    world = _world()
    version = world.kube.find("persistentvolumeclaims", "data", "ns")["metadata"]["resourceVersion"]
    outcome = reconcile_claim(world.ctx, "ns/data")
    assert ("requeue", "creating") == (outcome.kind, outcome.reason)
    assert ["create_volume"] == world.cinder.methods_called()
    (patch,) = _claim_patches(world)
    assert {"op": "test", "path": "/metadata/uid", "value": UID} == patch[0]
    assert {"op": "test", "path": "/metadata/resourceVersion", "value": version} == patch[1]
    live = world.kube.find("persistentvolumeclaims", "data", "ns")["metadata"]
    assert [names.PVC_PROVISIONING_FINALIZER] == live["finalizers"]
    assert live["annotations"][names.ANN_CREATE_ATTEMPT].startswith("replica-0 ")


def test_a_whole_provision_is_four_cinder_calls_two_claim_patches_and_one_event() -> None:
    """Create, one status poll, attachment create + complete; intent + release; ProvisioningSucceeded only."""
    world = _world()
    reconcile_claim(world.ctx, "ns/data")
    _settle(world)
    outcome = reconcile_claim(world.ctx, "ns/data")
    assert "done" == outcome.kind
    expected = ["create_volume", "get_volume", "create_attachment", "complete_attachment"]
    assert expected == world.cinder.methods_called()
    assert 2 == len(_claim_patches(world))
    assert ["ProvisioningSucceeded"] == [e.reason for e in world.events.calls]
    assert world.kube.find("persistentvolumes", PV) is not None


def test_a_create_still_pending_at_its_first_poll_is_announced_once() -> None:
    """A slow create: the first poll that finds it creating records the Provisioning Event, later ones not."""
    world = _world()
    reconcile_claim(world.ctx, "ns/data")
    for _ in range(3):
        world.clock.advance(60.0)
        assert "requeue" == reconcile_claim(world.ctx, "ns/data").kind
    (event,) = world.events.calls
    assert ("Normal", "Provisioning") == (event.type, event.reason)
    assert f"creating Cinder volume default-vol-1 ({PV})" == event.message
    _settle(world)
    reconcile_claim(world.ctx, "ns/data")
    assert ["Provisioning", "ProvisioningSucceeded"] == [e.reason for e in world.events.calls]


def _mark_by_another_replica(world: Any) -> None:
    """Another replica's create mark on the live claim (not in our cache)."""
    other = f"replica-9 {world.ctx.wall():.3f}"
    world.kube.patch(
        "persistentvolumeclaims",
        "data",
        {"metadata": {"annotations": {names.ANN_CREATE_ATTEMPT: other}}},
        namespace="ns",
    )


def test_a_stale_cache_fails_the_version_test_and_the_next_round_looks_up() -> None:
    """Another replica marked a create the cache does not show yet: our patch is refused, no create is
    sent, and the next round asks Cinder by name (and waits out the other replica's attempt)."""
    world = _world(live_caches=False)
    world.pvcs.objects["ns/data"] = copy.deepcopy(world.kube.find("persistentvolumeclaims", "data", "ns"))
    world.classes.objects["fast"] = world.kube.find("storageclasses", "fast")
    _mark_by_another_replica(world)
    world.kube.calls.clear()
    outcome = reconcile_claim(world.ctx, "ns/data")
    assert ("requeue", "claim_changed") == (outcome.kind, outcome.reason)
    assert [] == world.cinder.methods_called()
    assert (
        world.ctx.hints.get(UID).stale_version == world.pvcs.objects["ns/data"]["metadata"]["resourceVersion"]
    )
    # The cache catches up; now the other replica's attempt is visible: wait for it, then look up.
    world.pvcs.objects["ns/data"] = copy.deepcopy(world.kube.find("persistentvolumeclaims", "data", "ns"))
    outcome = reconcile_claim(world.ctx, "ns/data")
    assert ("requeue", "previous_create_in_flight") == (outcome.kind, outcome.reason)
    world.clock.advance(world.ctx.settings.create_in_flight_seconds + 1.0)
    reconcile_claim(world.ctx, "ns/data")
    assert ["find_volume", "find_volume", "create_volume"] == world.cinder.methods_called()


def _stale_world() -> Any:
    """A claim cached at one version while the live one is newer: the PV controller's handshake
    annotation landed after the copy our informer holds (what a claim created while we run meets)."""
    world = _world(live_caches=False)
    meta = world.kube.find("persistentvolumeclaims", "data", "ns")["metadata"]
    meta["finalizers"] = ["kubernetes.io/pvc-protection"]  # as admission leaves every real claim
    meta["annotations"] = {"team": "a"}
    world.pvcs.objects["ns/data"] = copy.deepcopy(world.kube.find("persistentvolumeclaims", "data", "ns"))
    world.classes.objects["fast"] = world.kube.find("storageclasses", "fast")
    world.kube.patch(
        "persistentvolumeclaims",
        "data",
        {"metadata": {"annotations": {names.ANN_STORAGE_PROVISIONER: names.DEFAULT_PROVISIONER_NAME}}},
        namespace="ns",
    )
    world.kube.calls.clear()
    return world


def _catch_up(world: Any) -> None:
    world.pvcs.objects["ns/data"] = copy.deepcopy(world.kube.find("persistentvolumeclaims", "data", "ns"))


def test_a_handshake_newer_than_the_cache_costs_one_refused_patch_and_no_lookup() -> None:
    """The first intent patch is refused (its version test names the stale copy) and nothing is sent to
    Cinder; the newer copy still carries none of our marks, so the next round takes the fast path again —
    its own version test is the same proof — and creates without asking Cinder by name."""
    world = _stale_world()
    outcome = reconcile_claim(world.ctx, "ns/data")
    assert ("requeue", "claim_changed") == (outcome.kind, outcome.reason)
    assert outcome.delay > 0  # the newer copy's event brings it back sooner; the delay is the fallback
    assert [] == world.cinder.methods_called()
    _catch_up(world)
    reconcile_claim(world.ctx, "ns/data")
    assert ["create_volume"] == world.cinder.methods_called()
    first, second = _claim_patches(world)
    tested = [[op["value"] for op in p if op["path"] == "/metadata/resourceVersion"] for p in (first, second)]
    live = world.kube.find("persistentvolumeclaims", "data", "ns")["metadata"]
    assert tested[0] != tested[1]
    assert len(tested[1]) == 1
    assert names.ANN_CREATE_ATTEMPT in live["annotations"]


def test_a_cache_still_behind_at_the_next_round_is_looked_up_by_name() -> None:
    """The same stale copy again (its event has not arrived): no second patch on it; Cinder by name."""
    world = _stale_world()
    reconcile_claim(world.ctx, "ns/data")
    reconcile_claim(world.ctx, "ns/data")
    assert ["find_volume", "create_volume"] == world.cinder.methods_called()
    assert 2 == len(_claim_patches(world))  # the refused one, then the create's (not version-tested)
    assert all(op["path"] != "/metadata/resourceVersion" for op in _claim_patches(world)[1])


def test_a_claim_that_keeps_changing_under_us_is_looked_up_after_three_refusals() -> None:
    """Every round's copy is already stale: three refused patches, then the lookup, then one create."""
    world = _stale_world()
    for i in range(3):
        outcome = reconcile_claim(world.ctx, "ns/data")
        assert ("requeue", "claim_changed") == (outcome.kind, outcome.reason)
        _catch_up(world)
        world.kube.patch(
            "persistentvolumeclaims", "data", {"metadata": {"labels": {"n": str(i)}}}, namespace="ns"
        )
    assert world.ctx.hints.get(UID).look_up
    reconcile_claim(world.ctx, "ns/data")
    assert ["find_volume", "create_volume"] == world.cinder.methods_called()
    assert 4 == len([p for p in _claim_patches(world) if isinstance(p, list)])  # ours; the test's are maps


def test_a_newer_copy_with_another_replicas_mark_is_never_taken_for_fresh() -> None:
    """The copy the cache catches up to carries another replica's create mark: looked up, not created."""
    world = _stale_world()
    reconcile_claim(world.ctx, "ns/data")
    _mark_by_another_replica(world)
    _catch_up(world)
    outcome = reconcile_claim(world.ctx, "ns/data")
    assert ("requeue", "previous_create_in_flight") == (outcome.kind, outcome.reason)
    assert ["find_volume"] == world.cinder.methods_called()


def test_even_with_a_current_cache_a_looked_up_claim_keeps_looking_up() -> None:
    """Once a version test failed, the claim is looked up by name on every later round (no fast path)."""
    world = _world()
    meta = world.kube.find("persistentvolumeclaims", "data", "ns")["metadata"]
    meta["finalizers"] = ["kubernetes.io/pvc-protection"]  # as admission leaves every real claim
    meta["annotations"] = {"team": "a"}
    world.ctx.hints.get(UID).look_up = True
    reconcile_claim(world.ctx, "ns/data")
    assert ["find_volume", "create_volume"] == world.cinder.methods_called()
    (patch,) = _claim_patches(world)
    assert all(op["path"] != "/metadata/resourceVersion" for op in patch)


class _FinalCinder(_Cinder):
    """A cloud whose create answer is already final (``available``)."""

    def create_volume(
        self, request: CreateVolumeRequest, *, before_send: Callable[[], None] | None = None
    ) -> Volume:
        volume = super().create_volume(request, before_send=before_send)
        return self.add_volume(
            volume.id, status=AVAILABLE, name=volume.name, size_gib=volume.size_gib, metadata=volume.metadata
        )


def test_a_final_create_answer_goes_straight_to_the_export_without_a_get() -> None:
    """Create answered available: export and PV in the same reconcile, no get_volume, one Event."""
    world = _world(clouds={"default": _FinalCinder(name="default")})
    outcome = reconcile_claim(world.ctx, "ns/data")
    assert "done" == outcome.kind
    cinder = world.clouds["default"]
    assert ["create_volume", "create_attachment", "complete_attachment"] == cinder.methods_called()
    assert ["ProvisioningSucceeded"] == [e.reason for e in world.events.calls]
    assert 2 == len(_claim_patches(world))


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        pytest.param({}, True, id="pristine"),
        pytest.param({"identity": ""}, False, id="no-identity-no-marks-ever"),
        pytest.param({"finalizers": [names.PVC_PROVISIONING_FINALIZER]}, False, id="intent"),
        pytest.param({"annotations": {names.ANN_CREATE_ATTEMPT: "r 1"}}, False, id="attempt"),
        pytest.param({"annotations": {names.ANN_PROVISIONING_STEP: "creating-volume"}}, False, id="step"),
        pytest.param({"resourceVersion": ""}, False, id="no-version-to-test"),
    ],
)
def test_never_created(change: dict[str, Any], expected: bool) -> None:
    """Only a claim without any of our create marks, with a version to test, under an identity."""
    world = make_context(identity=change.pop("identity", "replica-0"))
    meta: dict[str, Any] = {"name": "data", "namespace": "ns", "uid": UID, "resourceVersion": "7"}
    meta.update(change)
    assert expected == never_created(world.ctx, {"metadata": meta})


def test_decide_volume_fast_path_steps() -> None:
    """fresh → Create(fresh); an unannounced creating volume → a Wait that notes it; announced → none."""
    assert Create(fresh=True) == decide_volume(INTENT, VolumeState(fresh=True), LIMITS)
    creating = Volume(id=VolumeId("v1"), name=PV, status="creating", size_gib=1)
    noted = decide_volume(INTENT, VolumeState(volume=creating, unannounced=True), LIMITS)
    assert Wait(reason="waiting", poll=True, note=f"creating Cinder volume v1 ({PV})") == noted
    assert Wait(reason="waiting", poll=True) == decide_volume(INTENT, VolumeState(volume=creating), LIMITS)
    restoring = replace(creating, status="restoring-backup")
    assert Wait(reason="waiting", poll=True) == decide_volume(
        INTENT, VolumeState(volume=restoring, unannounced=True), LIMITS
    )


def test_a_pv_left_by_a_crashed_attempt_records_the_attachment_that_exists_now() -> None:
    """Crash after the PV create (intent still on), PV not in the cache yet: the next attempt exports again
    (the first attachment is stale to it) and finds the PV; the PV then names the new attachment, so its
    deletion does not refuse our own attachment as foreign (a leak chaos found: in-use, 1 attachment)."""
    crash = ["after_pv_create"]

    def checkpoint(point: str) -> None:
        if point in crash:
            crash.remove(point)
            raise RuntimeError(f"crash at {point}")

    world = _world(live_caches=False)
    ctx = replace(world.ctx, checkpoint=checkpoint)
    world.classes.objects["fast"] = world.kube.find("storageclasses", "fast")

    def sync_claim() -> None:
        world.pvcs.objects["ns/data"] = copy.deepcopy(world.kube.find("persistentvolumeclaims", "data", "ns"))

    sync_claim()
    reconcile_claim(ctx, "ns/data")
    _settle(world)
    sync_claim()
    with pytest.raises(RuntimeError, match="after_pv_create"):
        reconcile_claim(ctx, "ns/data")
    first = world.kube.find("persistentvolumes", PV)["metadata"]["annotations"][names.ANN_ATTACHMENT_ID]
    sync_claim()  # the claim (intent still on) is seen again; the PV cache still lags
    assert "done" == reconcile_claim(ctx, "ns/data").kind
    (volume,) = world.cinder.volumes.values()
    live = world.kube.find("persistentvolumes", PV)["metadata"]["annotations"][names.ANN_ATTACHMENT_ID]
    assert (first not in volume.attachment_ids, [live]) == (True, list(volume.attachment_ids))


@pytest.mark.parametrize("same_replica", [True, False], ids=["same-replica", "new-leader"])
def test_a_released_claim_seen_before_its_pv_is_never_created_again(same_replica: bool) -> None:
    """The release (intent off) reaches the claim cache before the PV reaches the PV cache: the claim
    looks unbound and PV-less. Its create mark stays on after the release, so it is never mistaken for a
    claim nobody created (chaos found two volumes for one claim that way): the releasing replica knows it
    made the PV; any other looks the volume up by name — and creates nothing."""
    world = _world(live_caches=False)
    world.classes.objects["fast"] = world.kube.find("storageclasses", "fast")

    def sync_claim(w: Any) -> None:
        w.pvcs.objects["ns/data"] = copy.deepcopy(world.kube.find("persistentvolumeclaims", "data", "ns"))

    sync_claim(world)
    reconcile_claim(world.ctx, "ns/data")
    _settle(world)
    sync_claim(world)
    assert "done" == reconcile_claim(world.ctx, "ns/data").kind  # PV created, intent released
    live = world.kube.find("persistentvolumeclaims", "data", "ns")["metadata"]
    assert names.PVC_PROVISIONING_FINALIZER not in (live.get("finalizers") or [])
    assert names.ANN_CREATE_ATTEMPT in live["annotations"]  # the proof that a create happened stays
    assert not world.pvs.objects  # the PV cache lags
    other = world
    if not same_replica:
        other = make_context(
            live_caches=False, kube=world.kube, clouds=world.clouds, clock=world.clock, identity="replica-1"
        )
    other.classes.objects["fast"] = world.kube.find("storageclasses", "fast")
    sync_claim(other)
    world.cinder.calls.clear()
    reconcile_claim(other.ctx, "ns/data")
    assert "create_volume" not in world.cinder.methods_called()
    assert 1 == len(world.cinder.volumes)
    if same_replica:
        assert [] == world.cinder.methods_called()


def test_an_intent_patch_from_a_copy_without_annotations_never_overwrites_ones_added_since() -> None:
    """Adding the whole annotations map (the cached copy has none) would replace what the live claim got
    meanwhile (a user's restore annotation, the PV controller's handshake): the patch then tests the
    copy's resourceVersion, and a claim changed since is retried by backoff, nothing overwritten."""
    world = _world(live_caches=False)
    world.classes.objects["fast"] = world.kube.find("storageclasses", "fast")
    cached = copy.deepcopy(world.kube.find("persistentvolumeclaims", "data", "ns"))
    cached["metadata"]["finalizers"] = ["kubernetes.io/pvc-protection"]
    world.kube.put("persistentvolumeclaims", copy.deepcopy(cached))
    cached = copy.deepcopy(world.kube.find("persistentvolumeclaims", "data", "ns"))
    assert "annotations" not in cached["metadata"]
    world.pvcs.objects["ns/data"] = cached
    world.ctx.hints.get(UID).look_up = True  # not the fresh path: no version test of its own
    world.kube.patch(
        "persistentvolumeclaims",
        "data",
        {"metadata": {"annotations": {"example.com/owner": "team-a"}}},
        namespace="ns",
    )
    outcome = reconcile_claim(world.ctx, "ns/data")
    assert "error" == outcome.kind  # transient: backoff, then the cache has caught up
    live = world.kube.find("persistentvolumeclaims", "data", "ns")["metadata"]
    assert {"example.com/owner": "team-a"} == live["annotations"]
    assert ["kubernetes.io/pvc-protection"] == live["finalizers"]
    assert "create_volume" not in world.cinder.methods_called()
    world.pvcs.objects["ns/data"] = copy.deepcopy(world.kube.find("persistentvolumeclaims", "data", "ns"))
    reconcile_claim(world.ctx, "ns/data")
    live = world.kube.find("persistentvolumeclaims", "data", "ns")["metadata"]
    assert "team-a" == live["annotations"]["example.com/owner"]
    assert names.ANN_CREATE_ATTEMPT in live["annotations"]
