"""Backup → restore end to end: controller + Kubernetes simulator + Cinder emulator, content marker kept.

A claim is provisioned, a marker is written on its volume, a Cinder backup of it (tagged like ours) is
restored into a new claim through ``netvol.io/restore-from-backup``: on a 3.47 cloud by create-from-backup,
on an older one by creating the volume and restoring into it. The restored claim's volume holds the
marker, carries our tags again (Cinder's restore replaced them with the source's) and is never formatted.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from provisioner import csi_contract
from provisioner.domain import names
from tests.e2e.world import World, emulator_world, wait_for


@pytest.fixture(params=["3.71", "3.46"])
def bworld(request: pytest.FixtureRequest) -> Iterator[World]:
    with emulator_world(max_version=request.param) as world:
        world.start_replica()
        world.create_class("rbd", {"type": "rbd"})
        world.create_pvc("src", "rbd", size="2Gi")
        world.wait_bound("src")
        yield world


def _volume_id(world: World, claim: str) -> str:
    pv = world.pv_of(claim)
    assert pv is not None
    return str(pv["metadata"]["annotations"][names.ANN_VOLUME_ID])


def _backup(world: World, *, namespace: str = "default") -> Any:
    src = _volume_id(world, "src")
    world.emu.write_content(src, "data-of-src")
    backup = world.cinder.create_backup(
        src,
        name="b-src",
        metadata={names.META_CLUSTER: "e2e", names.META_PVC_NAMESPACE: namespace},
        force=True,
    )
    wait_for(lambda: world.cinder.get_backup(backup.id).status == "available", 10, "backup available")
    return backup


def test_backup_restores_into_a_new_claim_with_its_content(bworld: World) -> None:
    """restore-from-backup: bound, same content marker, our tags, content 'snapshot' (never formatted)."""
    world = bworld
    backup = _backup(world)
    world.create_pvc("restored", "rbd", size="3Gi", annotations={names.ANN_RESTORE_FROM_BACKUP: backup.id})
    world.wait_bound("restored", timeout=30)
    vid = _volume_id(world, "restored")
    volume = world.cinder.get_volume(vid)
    pv = world.pv_of("restored")
    assert pv is not None
    assert "data-of-src" == world.emu.content(vid)
    assert (world.pvc("restored") or {})["metadata"]["uid"] == volume.metadata[names.META_PVC_UID]
    assert backup.id == volume.metadata[names.META_RESTORED_FROM_BACKUP]
    assert "snapshot" == csi_contract.decode(pv["spec"]["csi"]["volumeAttributes"]).content_source


def test_backup_of_another_namespace_is_refused(bworld: World) -> None:
    """The guard: a backup taken in another namespace gives a Warning naming the annotation; no volume."""
    world = bworld
    backup = _backup(world, namespace="other-team")
    before = len(world.our_volumes())
    world.create_pvc("stolen", "rbd", annotations={names.ANN_RESTORE_FROM_BACKUP: backup.id})
    wait_for(lambda: any(e["type"] == "Warning" for e in world.events_for("stolen")), 10, "warning")
    warning = next(e for e in world.events_for("stolen") if e["type"] == "Warning")
    assert names.ANN_RESTORE_FROM_BACKUP in warning["message"]
    assert "namespace" in warning["message"]
    assert before == len(world.our_volumes())
