"""Adoption end to end: an admin's existing Cinder volume becomes a claim's PV, or a clear refusal."""

from __future__ import annotations

import time

from provisioner.domain import names
from provisioner.domain.model import CreateVolumeRequest, VolumeId
from tests.e2e.world import World, wait_for


def _legacy_volume(world: World, size: int = 2) -> str:
    volume = world.cinder.create_volume(
        CreateVolumeRequest(name="legacy-data", size_gib=size, volume_type="rbd", metadata={})
    )
    wait_for(lambda: world.cinder.get_volume(volume.id).status == "available", 10, "legacy volume available")
    return str(volume.id)


def test_adopt_volume_on_a_class_that_allows_it(world: World) -> None:
    """The named volume is tagged and bound as the claim's PV; no new volume is created."""
    world.start_replica()
    vid = _legacy_volume(world)
    world.create_class("adopting", {"type": "rbd", "allowAdoption": "true"})
    world.create_pvc("data", "adopting", size="2Gi", annotations={names.ANN_ADOPT_VOLUME: vid})
    pvc = world.wait_bound("data")
    pv = world.pv_of("data")
    assert pv is not None
    assert vid == pv["metadata"]["annotations"][names.ANN_VOLUME_ID]
    volume = world.cinder.get_volume(VolumeId(vid))
    assert pvc["metadata"]["uid"] == volume.metadata[names.META_PVC_UID]
    creates = [c for c in world.emu.calls() if c.operation == "create_volume"]
    assert 1 == len(creates)  # only the test's own legacy volume


def test_adoption_without_allow_adoption_is_refused_with_one_warning(world: World) -> None:
    """Without allowAdoption: one Warning naming parameters.allowAdoption, no create, volume untouched."""
    world.start_replica()
    vid = _legacy_volume(world)
    world.create_class("plain", {"type": "rbd"})
    world.create_pvc("data", "plain", annotations={names.ANN_ADOPT_VOLUME: vid})
    wait_for(lambda: any(e["type"] == "Warning" for e in world.events_for("data")), 10, "warning")
    time.sleep(1.0)
    warnings = [e for e in world.events_for("data") if e["type"] == "Warning"]
    assert 1 == len(warnings)
    assert "parameters.allowAdoption" in warnings[0]["message"]
    assert 1 == len([c for c in world.emu.calls() if c.operation == "create_volume"])
    assert names.META_PVC_UID not in world.cinder.get_volume(VolumeId(vid)).metadata
