"""Secrets planted in Cinder's connection info never reach a log line, an event or a PV."""

from __future__ import annotations

import json

import structlog
from structlog.testing import capture_logs

from provisioner.testworld.cinder_emulator.conninfo import IscsiProfile, RbdProfile
from tests.e2e.world import emulator_world, wait_for

CHAP = "chap-Pl4nted-s3cret"
DISCOVERY = "disc-Pl4nted-s3cret"
CEPHX = "AQBpbGFudGVkLWNlcGh4LWtleS0xMjM0NTY3OA=="


def test_planted_secrets_appear_in_no_log_event_or_pv() -> None:
    """Provision and delete CHAP and cephx-keyring volumes with logs captured: no secret value anywhere."""
    profiles = {
        "iscsi-chap": IscsiProfile(
            auth_method="CHAP",
            auth_username="u",
            auth_password=CHAP,
            discovery_auth_method="CHAP",
            discovery_auth_username="d",
            discovery_auth_password=DISCOVERY,
        ),
        "rbd-cephx": RbdProfile(
            auth_enabled=True, auth_username="cinder", keyring=f"[client.cinder]\n\tkey = {CEPHX}\n"
        ),
    }
    with emulator_world(profiles=profiles) as world, capture_logs() as logs:
        structlog.get_logger("probe").info("probe")
        world.start_replica()
        world.create_class("chap", {"type": "iscsi-chap", "volumeSource": "csi"})
        world.create_class("cephx", {"type": "rbd-cephx", "volumeSource": "csi"})
        world.create_pvc("a", "chap")
        world.create_pvc("b", "cephx")
        world.wait_bound("a")
        world.wait_bound("b")
        pvs = world.sim.list("persistentvolumes")
        events = world.sim.list("events")
        for name in ("a", "b"):
            world.kube.delete("persistentvolumeclaims", name, namespace="default")
        wait_for(lambda: not world.our_volumes() and not world.sim.list("persistentvolumes"), 20, "deleted")
    assert len(logs) > 5
    blob = json.dumps(logs, default=str) + json.dumps(pvs) + json.dumps(events)
    for secret in (CHAP, DISCOVERY, CEPHX):
        assert secret not in blob
