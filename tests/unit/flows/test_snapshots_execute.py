"""The snapshot flow's executor against port fakes: exact Cinder calls, writes and Events over time."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from provisioner.domain import names
from provisioner.domain.errors import CinderConflict, CinderUnavailable
from provisioner.domain.model import VolumeId
from provisioner.flows.snapshot_execute import reconcile_content
from provisioner.flows.snapshots import ANN_BEING_DELETED, DEPENDENTS_RETRY_SECONDS, SnapshotContext
from tests.fakes.ports import FakeCache, FakeCinder, FakeKube, World, make_context

COMMON = "snapshot.storage.kubernetes.io/volumesnapshotcontent-bound-protection"
NAME = "snapcontent-u1"


def content(**spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "metadata": {
            "name": NAME,
            "uid": "c-uid",
            "finalizers": [COMMON],
            "creationTimestamp": "2026-01-01T00:00:00Z",
        },
        "spec": {
            "driver": names.CSI_DRIVER_NAME,
            "deletionPolicy": "Delete",
            "source": {"volumeHandle": "v1"},
            "volumeSnapshotClassName": "cinder",
            "volumeSnapshotRef": {"name": "snap", "namespace": "ns", "uid": "u1"},
        },
    }
    body["spec"].update(spec)
    return body


def setup(
    cinder: FakeCinder | None = None, *, volume: str = "available", **spec: Any
) -> tuple[World, SnapshotContext]:
    kube = FakeKube()
    world = make_context(kube=kube, clouds={"default": cinder or FakeCinder()})
    world.cinder.add_volume("v1", status=volume, size_gib=2)
    kube.put("volumesnapshotcontents", content(**spec))
    kube.put("volumesnapshotclasses", {"metadata": {"name": "cinder"}, "parameters": {}})
    sc = SnapshotContext(
        ctx=world.ctx,
        contents=FakeCache.view(kube, "volumesnapshotcontents"),
        snapshot_classes=FakeCache.view(kube, "volumesnapshotclasses"),
    )
    return world, sc


def live(world: World) -> dict[str, Any]:
    obj = world.kube.find("volumesnapshotcontents", NAME)
    assert obj is not None
    return obj


def writes(world: World) -> list[tuple[Any, ...]]:
    return [c for c in world.kube.calls if c[0] != "get"]


def test_create_then_ready_calls_and_writes_in_order() -> None:
    """Intent (finalizer, kind, cloud) → lookup by tag → get volume → create → poll → ready status + Event."""
    world, sc = setup()
    first = reconcile_content(sc, NAME)
    tags = {names.META_CLUSTER: "cluster-a", names.META_CONTENT_NAME: NAME}
    assert ("requeue", "creating") == (first.kind, first.reason)
    assert [
        ("list_snapshots", tags, None),
        ("get_volume", "v1"),
        ("create_snapshot", "v1", "snapshot-u1"),
    ] == world.cinder.calls
    assert [COMMON, names.CONTENT_SNAPSHOT_FINALIZER] == live(world)["metadata"]["finalizers"]
    assert {names.ANN_SNAPSHOT_KIND: "snapshot"} == live(world)["metadata"]["annotations"]
    (snap,) = world.cinder.snapshots.values()
    assert {
        names.META_CLUSTER: "cluster-a",
        names.META_PVC_NAMESPACE: "ns",
        names.META_SNAPSHOT_NAME: "snap",
        names.META_SNAPSHOT_UID: "u1",
        names.META_CONTENT_NAME: NAME,
        names.META_CREATED_BY: "replica-0",
    } == dict(snap.metadata)
    world.cinder.calls.clear()
    early = reconcile_content(sc, NAME)  # an echo before the poll is due: no Cinder call
    assert ([], "poll_not_due") == (world.cinder.calls, early.reason)
    world.clock.advance(first.delay)
    done = reconcile_content(sc, NAME)
    assert "done" == done.kind
    assert [("list_snapshots", tags, None)] == world.cinder.calls
    status = live(world)["status"]
    assert (snap.id, True, 2**30) == (status["snapshotHandle"], status["readyToUse"], status["restoreSize"])
    assert [("snap", "Normal", "SnapshotCreated", f"Cinder snapshot {snap.id} (1 GiB) is ready to use")] == [
        (e.object, e.type, e.reason, e.message) for e in world.events.calls
    ]
    world.cinder.calls.clear()
    assert "done" == reconcile_content(sc, NAME).kind  # ready: nothing more, no Cinder call
    assert [] == world.cinder.calls


def test_a_crash_after_create_adopts_the_tagged_snapshot() -> None:
    """The snapshot was made but not recorded (crash, new leader): found by tag, never made twice."""
    world, sc = setup()
    world.ctx.hints.drop("c-uid")
    reconcile_content(sc, NAME)
    world.ctx.hints.drop("c-uid")  # the new leader knows nothing
    assert "done" == reconcile_content(sc, NAME).kind
    assert 1 == world.cinder.methods_called().count("create_snapshot")
    assert 1 == len(world.cinder.snapshots)


def test_not_leader_never_creates() -> None:
    """Fenced: a replica unsure of its lease refuses the create (no call reaches Cinder), no Event."""
    world, sc = setup()
    world.leader[0] = False
    outcome = reconcile_content(sc, NAME)
    assert ("error", "not_leader") == (outcome.kind, outcome.reason)
    assert "create_snapshot" not in world.cinder.methods_called()
    assert [] == world.events.calls


def test_in_use_volume_on_an_old_cloud_without_force_create_is_refused() -> None:
    """Before 3.66, an in-use volume needs force: status.error naming the class parameter, final."""
    from tests.fakes.ports import LEGACY_CAPS

    world, sc = setup(FakeCinder(capabilities=LEGACY_CAPS), volume="in-use")
    outcome = reconcile_content(sc, NAME)
    assert ("final", "volume_in_use") == (outcome.kind, outcome.reason)
    assert "parameters.force-create" in live(world)["status"]["error"]["message"]
    assert False is live(world)["status"]["readyToUse"]
    assert "create_snapshot" not in world.cinder.methods_called()
    assert ["SnapshotCreationFailed"] == [e.reason for e in world.events.calls]


def test_snapshot_error_is_recorded_once_and_not_retried() -> None:
    world, sc = setup()
    reconcile_content(sc, NAME)
    (snap,) = world.cinder.snapshots.values()
    world.cinder.snapshots[snap.id] = replace(snap, status="error")
    world.clock.advance(10)
    outcome = reconcile_content(sc, NAME)
    assert ("final", "snapshot_error") == (outcome.kind, outcome.reason)
    assert (
        f"Cinder snapshot {snap.id} of volume v1 went to status error"
        == live(world)["status"]["error"]["message"]
    )
    world.cinder.calls.clear()
    assert "done" == reconcile_content(sc, NAME).kind
    assert [] == world.cinder.calls


def test_transient_failure_warns_and_backs_off() -> None:
    world, sc = setup()
    world.cinder.fail("list_snapshots", CinderUnavailable("down", status_code=503), times=1)
    reconcile_content(sc, NAME)  # persist intent, then the lookup fails
    assert ["SnapshotCreationFailed"] == [e.reason for e in world.events.calls]
    assert "status" not in live(world)


def deleted(world: World) -> None:
    obj = live(world)
    obj["metadata"]["annotations"][ANN_BEING_DELETED] = "yes"
    obj["metadata"]["deletionTimestamp"] = "2026-01-01T00:01:00Z"
    obj["metadata"]["finalizers"].remove(COMMON)


def test_deletion_deletes_the_cinder_snapshot_then_releases() -> None:
    world, sc = setup()
    reconcile_content(sc, NAME)
    world.clock.advance(10)
    reconcile_content(sc, NAME)
    (snap,) = world.cinder.snapshots.values()
    deleted(world)
    world.cinder.calls.clear()
    lookup = [
        ("get_snapshot", snap.id),
        ("list_snapshots", {names.META_CLUSTER: "cluster-a", names.META_CONTENT_NAME: NAME}, None),
    ]
    outcome = reconcile_content(sc, NAME)
    assert ("requeue", "deleting") == (outcome.kind, outcome.reason)
    assert [*lookup, ("delete_snapshot", snap.id)] == world.cinder.calls
    assert names.CONTENT_SNAPSHOT_FINALIZER in live(world)["metadata"]["finalizers"]
    world.cinder.calls.clear()
    world.clock.advance(outcome.delay)
    assert "done" == reconcile_content(sc, NAME).kind  # gone from Cinder (404, no tag): released
    assert lookup == world.cinder.calls
    assert world.kube.find("volumesnapshotcontents", NAME) is None  # last finalizer gone
    assert 1.0 == world.ctx.metrics.registry.get_sample_value(
        "cinder_provisioner_snapshot_total",
        {"kind": "snapshot", "operation": "delete", "outcome": "success", "reason": ""},
    )


def test_snapshot_with_dependents_waits_with_an_event() -> None:
    """Cinder refuses (volumes depend on it): a Normal Event and a slow retry, the finalizer stays."""
    world, sc = setup()
    reconcile_content(sc, NAME)
    world.clock.advance(10)
    reconcile_content(sc, NAME)
    deleted(world)
    world.cinder.fail(
        "delete_snapshot", CinderConflict("Invalid snapshot: has dependent volumes", status_code=400), times=1
    )
    outcome = reconcile_content(sc, NAME)
    assert ("error", DEPENDENTS_RETRY_SECONDS) == (outcome.kind, outcome.delay)
    assert names.CONTENT_SNAPSHOT_FINALIZER in live(world)["metadata"]["finalizers"]
    assert "SnapshotDeleteWaiting" == world.events.calls[-1].reason
    assert "dependent volumes" in world.events.calls[-1].message


def test_retain_keeps_the_snapshot() -> None:
    world, sc = setup(deletionPolicy="Retain")
    reconcile_content(sc, NAME)
    world.clock.advance(10)
    reconcile_content(sc, NAME)
    deleted(world)
    world.cinder.calls.clear()
    assert "done" == reconcile_content(sc, NAME).kind
    assert ([], 1) == (world.cinder.calls, len(world.cinder.snapshots))
    assert world.kube.find("volumesnapshotcontents", NAME) is None


def test_pre_provisioned_content_is_marked_ready_without_a_create() -> None:
    world, sc = setup(source={"snapshotHandle": "s9"})
    world.cinder.add_snapshot("s9", "v1")
    reconcile_content(sc, NAME)
    assert "done" == reconcile_content(sc, NAME).kind
    assert ("s9", True) == (live(world)["status"]["snapshotHandle"], live(world)["status"]["readyToUse"])
    assert "create_snapshot" not in world.cinder.methods_called()
    assert VolumeId("v1") == world.cinder.snapshots["s9"].volume_id
