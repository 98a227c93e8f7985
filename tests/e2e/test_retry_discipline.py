"""Behaviour over time: a claim that keeps failing makes a bounded number of calls, writes and events.

The sandbox scenario from the controller-core issue: a StorageClass whose ``type`` names a volume type
Cinder does not have (a plain typo) is left for 60 s next to healthy work. It used to make 827 creates,
823 claim writes and 822 Warnings in 30 s.
"""

from __future__ import annotations

import time

import pytest

from tests.e2e.world import World


@pytest.mark.slow
def test_unknown_volume_type_for_a_minute_stays_inside_the_bounds(world: World) -> None:
    """60 s of a typo'd type: one Warning naming parameters.type, ≤ 12 creates and writes; others bind."""
    world.start_replica(final_retry_seconds=300.0)
    world.create_class("typo", {"type": "rdb"})
    world.create_class("good", {"type": "rbd"})
    world.create_pvc("bad", "typo")
    started = time.monotonic()
    time.sleep(40.0)
    world.create_pvc("fine", "good")
    world.wait_bound("fine", timeout=10.0)  # a healthy claim created after 40 s binds within seconds
    bound_after = time.monotonic() - started
    time.sleep(max(0.0, 60.0 - (time.monotonic() - started)))
    world.stop_replicas()
    pvc = world.pvc("bad")
    assert pvc is not None
    uid = pvc["metadata"]["uid"]
    creates = [c for c in world.emu.calls() if c.operation == "create_volume" and c.status == 404]
    writes = [
        r
        for r in world.sim.requests
        if r.method in ("PATCH", "PUT") and r.path.endswith("/persistentvolumeclaims/bad")
    ]
    warnings = [e for e in world.events_for("bad") if e["type"] == "Warning"]
    print(f"bad claim {uid}: {len(creates)} creates, {len(writes)} writes, {len(warnings)} Warning objects")
    print(f"healthy claim bound {bound_after - 40.0:.2f} s after it was created")
    assert len(creates) <= 12
    assert len(writes) <= 12
    assert 1 == len(warnings)
    assert warnings[0]["message"].startswith("parameters.type: volume type 'rdb' does not exist in cloud")
    assert "req-" not in warnings[0]["message"]
    assert not (pvc.get("spec") or {}).get("volumeName")
