"""High availability: failover after a crash and after SIGTERM, and fencing during split brain."""

from __future__ import annotations

import threading
import time
from typing import Any

from provisioner.adapters.cinder.client import make_cinder
from provisioner.config.settings import ProvisionerConfig
from provisioner.domain import names
from provisioner.domain.errors import KubeUnavailable
from provisioner.runtime.replica import Replica
from tests.e2e.world import FAST, World, config_for, wait_for

MUTATIONS = {
    "create_volume",
    "delete_volume",
    "create_attachment",
    "complete_attachment",
    "delete_attachment",
    "reserve",
    "initialize_connection",
    "terminate_connection",
    "unreserve",
    "extend_volume",
}


def replica(
    world: World, identity: str, config: ProvisionerConfig, calls: list[tuple[float, str, str]] | None = None
) -> Replica:
    clouds = None
    if calls is not None:
        cloud = config.cloud(None)
        clouds = {
            "default": make_cinder(
                cloud,
                max_in_flight=8,
                observer=lambda op, st, s: calls.append((time.monotonic(), identity, op)),
            )
        }
    r = Replica(
        config,
        client_configuration=world.sim.configuration(),
        identity=identity,
        clouds=clouds,
        resync_seconds=30.0,
        watch_timeout_seconds=20,
        **FAST,
    )
    r.start()
    world.replicas.append(r)
    world.stack.callback(r.terminate)
    return r


def defaults_config(world: World) -> ProvisionerConfig:
    """Leader election at its defaults: 15 s lease, 10 s renew deadline, 2 s retry."""
    return config_for(world.cloud, leader_election={})


def test_standby_takes_over_after_leader_crash_within_lease_duration_plus_2s(world: World) -> None:
    """Kill the leader: the standby provisions a new claim within lease duration + 2 s (defaults)."""
    config = defaults_config(world)
    world.create_class("rbd", {"type": "rbd"})
    r0 = replica(world, "r0", config)
    assert r0.leading.wait(10)
    r1 = replica(world, "r1", config)
    assert r1.controller.wait_synced(10)
    time.sleep(2.5)  # r1 has observed r0's renewals
    assert not r1.leading.is_set()
    r0.crash()
    crashed = time.monotonic()
    world.create_pvc("after-crash", "rbd")
    world.wait_bound("after-crash", timeout=25)
    took = time.monotonic() - crashed
    assert r1.leading.is_set()
    print(f"takeover after crash: {took:.2f}s")
    assert took <= config.leader_election.lease_duration + 2.0, took


def test_standby_takes_over_within_2s_after_sigterm_release(world: World) -> None:
    """Graceful stop releases the lease: the standby provisions a new claim within 2 s."""
    config = defaults_config(world)
    world.create_class("rbd", {"type": "rbd"})
    r0 = replica(world, "r0", config)
    assert r0.leading.wait(10)
    world.create_pvc("before", "rbd")
    world.wait_bound("before")
    r1 = replica(world, "r1", config)
    assert r1.controller.wait_synced(10)
    r0.terminate()
    released = time.monotonic()
    world.create_pvc("after-release", "rbd")
    world.wait_bound("after-release", timeout=10)
    took = time.monotonic() - released
    assert 0 == r0.exit_code
    print(f"takeover after release: {took:.2f}s")
    assert took <= 2.0, took


def test_split_brain_old_leader_makes_no_cinder_mutation(world: World) -> None:
    """Renewals of the leader are cut: after its renew deadline it stops all Cinder mutations and exits 1;
    the standby takes over and every claim is provisioned exactly once."""
    config = config_for(
        world.cloud, leader_election={"lease_duration": 6, "renew_deadline": 4, "retry_period": 1}
    )
    calls: list[tuple[float, str, str]] = []
    world.create_class("rbd", {"type": "rbd"})
    r0 = replica(world, "r0", config, calls)
    assert r0.leading.wait(10)
    r1 = replica(world, "r1", config, calls)
    assert r1.controller.wait_synced(10)
    assert r0.elector is not None
    lease_client: Any = r0.elector._client  # the old leader's own lease client

    def cut(*args: Any, **kwargs: Any) -> Any:
        raise KubeUnavailable("renewals cut (test)")

    lease_client.replace = cut
    cut_at = time.monotonic()
    stop = threading.Event()
    created: list[str] = []

    def keep_creating() -> None:
        i = 0
        while not stop.is_set():
            name = f"c{i}"
            world.create_pvc(name, "rbd")
            created.append(name)
            i += 1
            time.sleep(0.3)

    t = threading.Thread(target=keep_creating)
    t.start()
    assert r1.leading.wait(20), "standby never took over"
    time.sleep(2.0)
    stop.set()
    t.join()
    for name in created:
        world.wait_bound(name, timeout=20)
    assert r0.wait(5)
    assert 1 == r0.exit_code
    fence_at = cut_at + config.leader_election.renew_deadline
    late = [(at - cut_at, op) for at, who, op in calls if who == "r0" and op in MUTATIONS and at > fence_at]
    assert [] == late
    r1_became = min(at for at, who, op in calls if who == "r1")
    early = [op for at, who, op in calls if who == "r0" and op in MUTATIONS and at > r1_became]
    assert [] == early
    volumes = world.our_volumes()
    by_claim: dict[str, int] = {}
    for v in volumes:
        by_claim[v.metadata[names.META_PVC_NAME]] = by_claim.get(v.metadata[names.META_PVC_NAME], 0) + 1
    assert dict.fromkeys(created, 1) == by_claim
    wait_for(lambda: True)
