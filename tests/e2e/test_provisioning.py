"""End to end: PVCs on our classes become Bound PVs backed by Cinder volumes, and go away again."""

from __future__ import annotations

import pytest

from provisioner import csi_contract
from provisioner.domain import names
from tests.e2e.world import World, wait_for
from tests.k8s_schema import assert_valid

CASES = [
    ("rbd-csi", {"type": "rbd", "volumeSource": "csi"}, "csi"),
    ("rbd-intree", {"type": "rbd", "volumeSource": "in-tree"}, "rbd"),
    ("iscsi-csi", {"type": "iscsi", "volumeSource": "csi"}, "csi"),
    ("iscsi-intree", {"type": "iscsi", "volumeSource": "in-tree"}, "iscsi"),
]


def assert_everything_written_is_valid(world: World) -> None:
    for resource in ("persistentvolumes", "secrets", "events"):
        for obj in world.sim.list(resource):
            obj.setdefault("apiVersion", "v1")
            obj.setdefault(
                "kind",
                {"persistentvolumes": "PersistentVolume", "secrets": "Secret", "events": "Event"}[resource],
            )
            assert_valid(obj)


@pytest.mark.parametrize(("sc_name", "params", "source_key"), CASES, ids=[c[0] for c in CASES])
def test_provision_and_delete(world: World, sc_name: str, params: dict[str, str], source_key: str) -> None:
    """A claim gets a Bound PV backed by a tagged, exported Cinder volume; deleting it returns the volume."""
    check_provision_and_delete(world, sc_name, params, source_key)
    assert [] == world.emu.attachments()


def check_provision_and_delete(world: World, sc_name: str, params: dict[str, str], source_key: str) -> None:
    """The provision/delete round trip, shared by the emulator and the real-Cinder tier."""
    world.start_replica()
    world.create_class(sc_name, params, mount_options=["noatime"])
    world.create_pvc("data", sc_name, size="1500Mi")
    world.wait_bound("data")
    # Bound can be observed a moment before the controller removes its intent finalizer (last step).
    wait_for(
        lambda: names.PVC_PROVISIONING_FINALIZER not in (world.pvc("data") or {})["metadata"]["finalizers"],
        5,
        "intent finalizer removed",
    )
    pvc = world.pvc("data")
    assert pvc is not None
    pv = world.pv_of("data")
    assert pv is not None
    ann = pv["metadata"]["annotations"]
    volume_id = ann[names.ANN_VOLUME_ID]
    assert source_key in pv["spec"]
    assert {"storage": "2Gi"} == pv["spec"]["capacity"]
    assert ["noatime"] == pv["spec"]["mountOptions"]
    assert "Delete" == pv["spec"]["persistentVolumeReclaimPolicy"]
    assert pvc["metadata"]["uid"] == pv["spec"]["claimRef"]["uid"]
    assert names.PV_VOLUME_FINALIZER in pv["metadata"]["finalizers"]
    assert names.PVC_PROVISIONING_FINALIZER not in pvc["metadata"].get("finalizers", [])
    assert names.ANN_PROVISIONING_STEP not in pvc["metadata"].get("annotations", {})
    if source_key == "csi":
        assert names.CSI_DRIVER_NAME == pv["spec"]["csi"]["driver"]
        assert volume_id == pv["spec"]["csi"]["volumeHandle"]
        target = csi_contract.decode(pv["spec"]["csi"]["volumeAttributes"])
        assert "empty" == target.content_source
    volume = world.cinder.get_volume(volume_id)
    assert "in-use" == volume.status
    assert 2 == volume.size_gib
    assert "e2e" == volume.metadata[names.META_CLUSTER]
    assert pvc["metadata"]["uid"] == volume.metadata[names.META_PVC_UID]
    assert "r0" == volume.metadata[names.META_CREATED_BY]
    assert [ann[names.ANN_ATTACHMENT_ID]] == list(volume.attachment_ids)
    wait_for(lambda: "ProvisioningSucceeded" in [e["reason"] for e in world.events_for("data")], 5, "event")
    assert_everything_written_is_valid(world)

    world.kube.delete("persistentvolumeclaims", "data", namespace="default")
    wait_for(lambda: world.sim.get("persistentvolumes", "", pv["metadata"]["name"]) is None, 20, "PV gone")
    wait_for(lambda: not world.our_volumes(), 20, "Cinder volume gone")
    wait_for(lambda: world.pvc("data") is None, 10, "PVC gone")


def test_chap_secret_is_owned_by_pv_and_collected_with_it() -> None:
    """CHAP material lands in a kubernetes.io/iscsi-chap Secret owned by the PV; it goes with the PV."""
    from provisioner.testworld.cinder_emulator.conninfo import IscsiProfile
    from tests.e2e.world import emulator_world

    profile = IscsiProfile(auth_method="chap", auth_username="u1", auth_password="chap-pass-123456")
    with emulator_world(profiles={"iscsi-chap": profile}) as world:
        world.start_replica()
        world.create_class("chap", {"type": "iscsi-chap", "volumeSource": "in-tree"})
        world.create_pvc("data", "chap")
        world.wait_bound("data")
        pv = world.pv_of("data")
        assert pv is not None
        ref = pv["spec"]["iscsi"]["secretRef"]
        wait_for(
            lambda: (
                "ownerReferences"
                in (world.sim.get("secrets", ref["namespace"], ref["name"]) or {}).get("metadata", {})
            ),
            5,
            "secret owner",
        )
        secret = world.sim.get("secrets", ref["namespace"], ref["name"])
        assert secret is not None
        assert names.SECRET_TYPE_ISCSI_CHAP == secret["type"]
        assert [pv["metadata"]["uid"]] == [o["uid"] for o in secret["metadata"]["ownerReferences"]]
        assert pv["spec"]["iscsi"]["chapAuthSession"] is True
        assert_everything_written_is_valid(world)
        world.kube.delete("persistentvolumeclaims", "data", namespace="default")
        wait_for(lambda: world.sim.get("secrets", ref["namespace"], ref["name"]) is None, 20, "Secret gone")
        assert not world.our_volumes()


def test_retain_keeps_the_volume(world: World) -> None:
    """reclaimPolicy Retain: deleting the claim leaves the PV Released and the Cinder volume in place."""
    world.start_replica()
    world.create_class("keep", {"type": "rbd"}, reclaim="Retain")
    world.create_pvc("data", "keep")
    world.wait_bound("data")
    pv = world.pv_of("data")
    assert pv is not None
    world.kube.delete("persistentvolumeclaims", "data", namespace="default")
    wait_for(
        lambda: (
            (world.sim.get("persistentvolumes", "", pv["metadata"]["name"]) or {})
            .get("status", {})
            .get("phase")
            == "Released"
        ),
        10,
        "Released",
    )
    world.sim.wait_idle()
    assert 1 == len(world.our_volumes())
    assert world.sim.get("persistentvolumes", "", pv["metadata"]["name"]) is not None


def test_wait_for_first_consumer_waits_for_selected_node(world: World) -> None:
    """No volume is created until the scheduler sets the selected-node annotation."""
    world.start_replica()
    world.create_class("late", {"type": "rbd"}, binding="WaitForFirstConsumer")
    world.create_pvc("data", "late")
    world.sim.wait_idle()
    wait_for(world.replicas[0].controller.idle, 5, "controller idle")
    assert [] == world.our_volumes()
    world.kube.patch(
        "persistentvolumeclaims",
        "data",
        {"metadata": {"annotations": {names.ANN_SELECTED_NODE: "node-1"}}},
        namespace="default",
    )
    world.wait_bound("data")
    assert 1 == len(world.our_volumes())


def test_claim_deleted_mid_provision_leaves_no_volume() -> None:
    """A claim deleted while its volume is still creating: the volume is deleted, the claim goes away."""
    from tests.e2e.world import emulator_world

    with emulator_world(create_seconds=1.0) as world:
        world.start_replica()
        world.create_class("slow", {"type": "rbd"})
        world.create_pvc("data", "slow")
        wait_for(lambda: len(world.our_volumes()) == 1, 10, "volume creating")
        pvc = world.pvc("data")
        assert pvc is not None
        assert names.PVC_PROVISIONING_FINALIZER in pvc["metadata"]["finalizers"]
        world.kube.delete("persistentvolumeclaims", "data", namespace="default")
        wait_for(lambda: world.pvc("data") is None, 20, "claim gone")
        wait_for(lambda: not world.our_volumes(), 20, "volume gone")
        assert [] == world.sim.list("persistentvolumes")


def test_error_volume_is_cleaned_up_and_retried(world: World) -> None:
    """A volume that goes to error is deleted with a Warning, and a new one is created and bound."""
    world.emu.faults.error_on_create(count=1)
    world.start_replica()
    world.create_class("flaky", {"type": "rbd"})
    world.create_pvc("data", "flaky")
    world.wait_bound("data", timeout=30)
    creates = [c for c in world.emu.calls() if c.operation == "create_volume"]
    assert 2 == len(creates)
    assert 1 == len(world.our_volumes())
    warnings = [e for e in world.events_for("data") if e["type"] == "Warning"]
    assert any("went to error" in e["message"] for e in warnings)


def test_quota_gives_one_warning_and_no_retry_storm(world: World) -> None:
    """413: one Warning naming quota (request id in its annotation); no further create for a while."""
    world.emu.faults.fail_next("create_volume", status=413, count=100, message="VolumeLimitExceeded")
    world.start_replica()
    world.create_class("full", {"type": "rbd"})
    world.create_pvc("data", "full")
    wait_for(lambda: any(e["type"] == "Warning" for e in world.events_for("data")), 10, "warning")
    import time

    time.sleep(2.0)
    creates = [c for c in world.emu.calls() if c.operation == "create_volume"]
    assert 1 == len(creates)
    warnings = [e for e in world.events_for("data") if e["type"] == "Warning"]
    assert 1 == len(warnings)
    assert "quota" in warnings[0]["message"].lower()
    assert "req-" not in warnings[0]["message"]  # the message is what deduplication compares
    assert warnings[0]["metadata"]["annotations"]["netvol.io/request-id"].startswith("req-")
    assert 1 == warnings[0]["count"]


def test_rate_limited_create_honours_retry_after(world: World) -> None:
    """429 with Retry-After: 2 → the next create comes no sooner than 2 s later, then succeeds."""
    world.emu.faults.fail_next("create_volume", status=429, retry_after=2, count=1)
    world.start_replica()
    world.create_class("busy", {"type": "rbd"})
    world.create_pvc("data", "busy")
    world.wait_bound("data", timeout=30)
    creates = [c for c in world.emu.calls() if c.operation == "create_volume"]
    assert [429, 202] == [c.status for c in creates]
    assert creates[1].at - creates[0].at >= 2.0 - 0.05


def test_watch_drops_and_410_are_survived(world: World) -> None:
    """Dropped watches and 410 Gone mid-run: every claim still binds and then deletes cleanly."""
    replica = world.start_replica()
    world.create_class("rbd", {"type": "rbd"})
    for i in range(5):
        world.create_pvc(f"a{i}", "rbd")
    world.sim.faults.drop_watches(abrupt=True)
    for i in range(5):
        world.create_pvc(f"b{i}", "rbd")
    world.sim.faults.expire_watches()
    for i in range(5):
        world.create_pvc(f"c{i}", "rbd")
    for prefix in "abc":
        for i in range(5):
            world.wait_bound(f"{prefix}{i}", timeout=30)
    assert replica.controller.pvcs.relists >= 2
    for prefix in "abc":
        for i in range(5):
            world.kube.delete("persistentvolumeclaims", f"{prefix}{i}", namespace="default")
    world.sim.faults.drop_watches()
    wait_for(lambda: not world.our_volumes() and not world.sim.list("persistentvolumes"), 30, "all gone")


def test_stale_claim_is_not_reprovisioned_into_a_leak(world: World) -> None:
    """A stale cached copy of a claim whose PV was already deleted creates no Cinder volume."""
    replica = world.start_replica()
    world.create_class("rbd", {"type": "rbd"})
    created = world.create_pvc("data", "rbd")
    world.wait_bound("data")
    world.kube.delete("persistentvolumeclaims", "data", namespace="default")
    wait_for(lambda: not world.our_volumes() and not world.sim.list("persistentvolumes"), 20, "deleted")
    wait_for(lambda: world.pvc("data") is None, 10, "claim gone")
    # Replay the stale, unbound copy as if the cache lagged (the 2026 external-provisioner bug).
    meta = created["metadata"]
    annotations = {names.ANN_STORAGE_PROVISIONER: names.DEFAULT_PROVISIONER_NAME}
    stale = {
        **created,
        "metadata": {**meta, "finalizers": ["kubernetes.io/pvc-protection"], "annotations": annotations},
    }
    replica.controller.pvcs._cache["default/data"] = stale
    outcome = replica.controller.process(("claim", "default/data"))
    assert outcome is not None
    # Either the intent patch found the claim gone, or the (equally stale) PV cache still had its PV:
    # both stop before any Cinder create.
    assert outcome.reason in ("claim_changed", ""), outcome
    assert [] == world.our_volumes()
    assert [] == [c for c in world.emu.calls() if c.operation == "create_volume"][1:]


def test_bad_class_parameter_fails_once_then_recovers_when_class_is_fixed(world: World) -> None:
    """An unknown class parameter: one Warning naming it, no Cinder call; a fixed class provisions."""
    world.start_replica()
    world.create_class("typo", {"tpye": "rbd"})
    world.create_pvc("data", "typo")
    wait_for(lambda: any(e["type"] == "Warning" for e in world.events_for("data")), 10, "warning")
    world.sim.wait_idle()
    warnings = [e for e in world.events_for("data") if e["type"] == "Warning"]
    assert 1 == len(warnings)
    assert "parameters.tpye" in warnings[0]["message"]
    assert [] == [c for c in world.emu.calls() if c.operation == "create_volume"]
    # StorageClass parameters are immutable: the admin deletes and recreates the class.
    world.kube.delete("storageclasses", "typo")
    world.create_class("typo", {"type": "rbd"})
    world.wait_bound("data", timeout=20)


def test_old_cloud_exports_with_initialize_connection() -> None:
    """A cloud without the attachments API (3.26): reserve + initialize_connection, terminate on delete."""
    from tests.e2e.world import emulator_world

    with emulator_world(max_version="3.26") as world:
        world.start_replica()
        world.create_class("old", {"type": "iscsi", "volumeSource": "in-tree"})
        world.create_pvc("data", "old")
        world.wait_bound("data")
        pv = world.pv_of("data")
        assert pv is not None
        ann = pv["metadata"]["annotations"]
        assert "legacy" == ann[names.ANN_EXPORT_MODE]
        assert names.ANN_ATTACHMENT_ID not in ann
        ops = [c.operation for c in world.emu.calls()]
        assert "initialize_connection" in ops
        assert "create_attachment" not in ops
        world.kube.delete("persistentvolumeclaims", "data", namespace="default")
        wait_for(lambda: not world.our_volumes() and not world.sim.list("persistentvolumes"), 20, "deleted")
        ops = [c.operation for c in world.emu.calls()]
        assert "terminate_connection" in ops


def test_quota_final_failure_is_retried_slowly_and_then_provisions(world: World) -> None:
    """413 is final but not forever: after the slow-retry interval the claim is tried again and binds."""
    world.emu.faults.fail_next("create_volume", status=413, count=1, message="VolumeLimitExceeded")
    world.start_replica(final_retry_seconds=1.5)
    world.create_class("full", {"type": "rbd"})
    world.create_pvc("data", "full")
    world.wait_bound("data", timeout=20)
    creates = [c for c in world.emu.calls() if c.operation == "create_volume"]
    assert [413, 202] == [c.status for c in creates]
    assert creates[1].at - creates[0].at >= 1.4
