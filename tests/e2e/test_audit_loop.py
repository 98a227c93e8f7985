"""The periodic audit: leader only, gauges by kind and GiB, Warning Events on broken PVs, no deletes."""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry

from provisioner.domain import names
from provisioner.domain.model import CreateVolumeRequest
from provisioner.runtime.audit_loop import AuditLoop
from tests.e2e.test_audit import bound_volume, tagged
from tests.e2e.world import World, config_for, wait_for

MUTATIONS = {
    "create_volume",
    "delete_volume",
    "extend_volume",
    "set_volume_metadata",
    "delete_attachment",
    "create_attachment",
    "delete_snapshot",
    "create_snapshot",
    "delete_backup",
}


def gauge(registry: CollectorRegistry, name: str, kind: str) -> float | None:
    return registry.get_sample_value(f"cinder_provisioner_audit_{name}", {"kind": kind})


def test_leader_audit_exports_gauges_and_warns_on_broken_pvs(world: World) -> None:
    """missing-volume and size-drift PVs get a Warning; gauges count kinds and GiB; nothing is deleted."""
    replica = world.start_replica(config=config_for(world.cloud, audit_interval_seconds=600))
    world.create_class("fast", {"type": "rbd", "volumeSource": "csi"})
    for name in ("gone", "grown", "fine"):
        world.create_pvc(name, "fast")
    gone_pv, gone = bound_volume(world, "gone")
    grown_pv, grown = bound_volume(world, "grown")
    bound_volume(world, "fine")
    world.cinder.delete_attachment(gone_pv["metadata"]["annotations"][names.ANN_ATTACHMENT_ID])
    world.cinder.delete_volume(gone)
    world.cinder.extend_volume(grown, 4)
    orphan = world.cinder.create_volume(
        CreateVolumeRequest(name="pvc-o", size_gib=2, metadata=tagged("o-uid"))
    )
    wait_for(lambda: gone not in {v["id"] for v in world.emu.volumes()}, 5, "volume gone")
    wait_for(lambda: world.cinder.get_volume(orphan.id).status == "available", 5, "orphan available")
    world.emu.clear_calls()

    report = replica.audit.run_once()

    assert report is not None
    assert {("missing-volume", gone), ("size-drift", grown), ("orphan-volume", orphan.id)} == {
        (f.kind.value, f.cinder_id) for f in report.findings
    }
    reg = replica.metrics.registry
    assert (1.0, 1.0, 1.0, 0.0) == (
        gauge(reg, "findings", "missing-volume"),
        gauge(reg, "findings", "size-drift"),
        gauge(reg, "findings", "orphan-volume"),
        gauge(reg, "findings", "duplicate"),
    )
    assert (2.0, 4.0) == (
        gauge(reg, "findings_gib", "orphan-volume"),
        gauge(reg, "findings_gib", "size-drift"),
    )
    assert 0.0 == reg.get_sample_value("cinder_provisioner_audit_errors")
    assert set() == {c.operation for c in world.emu.calls()} & MUTATIONS
    replica.controller.ctx.events.flush()

    def warnings(pv_name: str) -> set[str]:
        return {
            e["reason"]
            for e in world.sim.list("events")
            if e["involvedObject"].get("name") == pv_name and e["type"] == "Warning"
        }

    wait_for(
        lambda: {"CinderVolumeMissing"} == warnings(gone_pv["metadata"]["name"]), 5, "missing-volume Event"
    )
    wait_for(lambda: {"CinderSizeDrift"} == warnings(grown_pv["metadata"]["name"]), 5, "size-drift Event")
    assert orphan.id in {v["id"] for v in world.emu.volumes()}


def test_only_the_leader_audits_and_the_loop_repeats(world: World) -> None:
    """The loop runs every interval while leading; a replica that does not lead makes no call at all."""
    leading = {"now": True}
    world.start_replica(config=config_for(world.cloud, audit_interval_seconds=0))
    clouds = world.replicas[0].controller.ctx.clouds
    loop = AuditLoop(
        clouds=clouds,
        kube=world.kube,
        events=world.replicas[0].controller.ctx.events,
        registry=CollectorRegistry(),
        cluster_id="e2e",
        default_cloud="default",
        provisioner_name=names.DEFAULT_PROVISIONER_NAME,
        interval_seconds=0.1,
        is_leader=lambda: leading["now"],
    )
    loop.start()
    try:
        wait_for(lambda: loop.runs >= 2, 10, "two audits")
        leading["now"] = False
        time.sleep(0.3)
        runs = loop.runs
        world.emu.clear_calls()
        time.sleep(0.5)
        assert runs == loop.runs
        assert [] == world.emu.calls()
        assert None is loop.run_once()
    finally:
        loop.stop()


def test_zero_interval_turns_it_off(world: World) -> None:
    """audit_interval_seconds: 0 → the replica's loop never starts."""
    replica = world.start_replica(config=config_for(world.cloud, audit_interval_seconds=0))
    assert None is replica.audit._thread
