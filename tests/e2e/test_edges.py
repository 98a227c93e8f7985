"""Edge cases a demanding user hits: PV name clashes, several clouds, WaitForFirstConsumer + deletion."""

from __future__ import annotations

import time

from provisioner.domain import names
from provisioner.testworld.cinder_emulator.emulator import CinderEmulator
from provisioner.testworld.objects import emulator_cloud
from tests.e2e.world import World, config_for, wait_for


def test_pv_already_exists_for_another_claim_is_not_taken_as_success(world: World) -> None:
    """A 409 on PV create for a PV that is not ours: our volume is released, one Warning, no bind."""
    replica = world.start_replica()
    world.create_class("late", {"type": "rbd"}, binding="WaitForFirstConsumer")
    pvc = world.create_pvc("data", "late")
    pv_name = names.pv_name_for(pvc["metadata"]["uid"])
    world.kube.create(
        "persistentvolumes",
        {
            "apiVersion": "v1",
            "kind": "PersistentVolume",
            "metadata": {"name": pv_name, "annotations": {names.ANN_VOLUME_ID: "not-ours"}},
            "spec": {
                "capacity": {"storage": "1Gi"},
                "accessModes": ["ReadWriteOnce"],
                "persistentVolumeReclaimPolicy": "Retain",
                "storageClassName": "other",
                "claimRef": {"namespace": "default", "name": "someone-else", "uid": "0000"},
                "csi": {"driver": "other.example.com", "volumeHandle": "not-ours"},
            },
        },
    )
    # Let the simulated PV controller settle the foreign PV (it marks it Released), then our cache.
    wait_for(
        lambda: (world.sim.get("persistentvolumes", "", pv_name) or {}).get("status", {}).get("phase"),
        10,
        "phase",
    )
    world.sim.wait_idle()
    phase = world.sim.get("persistentvolumes", "", pv_name)["status"]["phase"]  # type: ignore[index]
    wait_for(
        lambda: (replica.controller.pvs.get(pv_name) or {}).get("status", {}).get("phase") == phase,
        10,
        "cached",
    )
    replica.controller.pvs._cache.pop(pv_name)  # the cache lags: only the create's 409 can tell
    world.kube.patch(
        "persistentvolumeclaims",
        "data",
        {"metadata": {"annotations": {names.ANN_SELECTED_NODE: "node-1"}}},
        namespace="default",
    )
    wait_for(lambda: any("already exists" in e["message"] for e in world.events_for("data")), 15, "warning")
    wait_for(lambda: not world.our_volumes(), 15, "our volume released")
    assert (
        "not-ours"
        == world.sim.get("persistentvolumes", "", pv_name)["metadata"]["annotations"][names.ANN_VOLUME_ID]
    )  # type: ignore[index]
    assert "Bound" != (world.pvc("data") or {}).get("status", {}).get("phase")


def test_storage_class_picks_a_named_cloud(world: World) -> None:
    """Two clouds configured: a class with cloud=second creates its volume there, deletes it there."""
    with CinderEmulator(create_seconds=0.05) as second:
        config = config_for(
            world.cloud,
            clouds={
                "default": world.cloud,
                "second": emulator_cloud(
                    second.keystone_url, second.username, second.password, second.project_id
                ),
            },
        )
        world.start_replica(config=config)
        world.create_class("elsewhere", {"type": "rbd", "cloud": "second"})
        world.create_pvc("data", "elsewhere")
        world.wait_bound("data")
        pv = world.pv_of("data")
        assert pv is not None
        assert "second" == pv["metadata"]["annotations"][names.ANN_CLOUD]
        assert [] == world.our_volumes()
        assert 1 == len(second.volumes())
        world.kube.delete("persistentvolumeclaims", "data", namespace="default")
        wait_for(lambda: not second.volumes(), 15, "deleted in the second cloud")
        world.stop_replicas()


def test_unknown_cloud_in_class_is_a_clear_final_error(world: World) -> None:
    """A class naming a cloud that is not configured: one Warning naming parameters.cloud."""
    world.start_replica()
    world.create_class("nowhere", {"type": "rbd", "cloud": "mars"})
    world.create_pvc("data", "nowhere")
    wait_for(lambda: any(e["type"] == "Warning" for e in world.events_for("data")), 10, "warning")
    warning = next(e for e in world.events_for("data") if e["type"] == "Warning")
    assert "parameters.cloud" in warning["message"]
    assert "mars" in warning["message"]


def test_duplicate_volumes_of_a_claim_are_resolved_not_a_dead_end(world: World) -> None:
    """Two tagged volumes for one claim (a create that landed late): keep one, delete the other, bind."""
    from provisioner.domain.model import CreateVolumeRequest

    world.start_replica()
    world.create_class("late", {"type": "rbd"}, binding="WaitForFirstConsumer")
    pvc = world.create_pvc("data", "late")
    uid = pvc["metadata"]["uid"]
    tags = {names.META_CLUSTER: "e2e", names.META_PVC_UID: uid, names.META_CREATED_BY: "old-leader"}
    for _ in range(2):
        world.cinder.create_volume(
            CreateVolumeRequest(name=names.pv_name_for(uid), size_gib=1, volume_type="rbd", metadata=tags)
        )
    # Every create is preceded by its mark on the claim (the crash-safety rule): the old leader's is there,
    # an hour old, so no create of it can still land and the new leader looks the volumes up at once.
    mark = f"old-leader {time.time() - 3600:.3f}"
    world.kube.patch(
        "persistentvolumeclaims",
        "data",
        {"metadata": {"annotations": {names.ANN_SELECTED_NODE: "node-1", names.ANN_CREATE_ATTEMPT: mark}}},
        namespace="default",
    )
    world.wait_bound("data", timeout=20)
    wait_for(lambda: len(world.our_volumes()) == 1, 15, "duplicate deleted")
    pv = world.pv_of("data")
    assert pv is not None
    assert [pv["metadata"]["annotations"][names.ANN_VOLUME_ID]] == [v.id for v in world.our_volumes()]
    wait_for(
        lambda: any(e["reason"] == "DuplicateVolumeDeleted" for e in world.events_for("data")), 5, "event"
    )
