"""One injected clock drives the whole controller: its queue, backoff, flows' context, hints and events."""

from __future__ import annotations

from provisioner.config.settings import ProvisionerConfig
from provisioner.ports import Clock
from provisioner.runtime.controller import Key
from provisioner.runtime.wiring import SystemClock, build_controller
from provisioner.testworld.objects import emulator_cloud
from tests.fakes.ports import FakeCinder, FakeClock
from tests.unit.controller.rig import GatedSource

CONFIG = ProvisionerConfig.from_mapping(
    {
        "cluster_id": "unit",
        "clouds": {"default": emulator_cloud("http://127.0.0.1:9/v3", "u", "p", "project")},
        "default_cloud": "default",
        "namespace": "kube-system",
        "secret_namespace": "kube-system",
        "leader_election": {"enabled": False},
    }
)


def test_build_controller_shares_one_clock() -> None:
    """The context, a new hint, the queue's delays and the event recorder all read the injected clock."""
    clock = FakeClock()
    source = GatedSource()
    ctrl = build_controller(CONFIG, source, clouds={"default": FakeCinder()}, clock=clock)
    try:
        assert ctrl.ctx.clock() == clock.now
        assert ctrl.ctx.wall() == clock.wall()
        clock.advance(42.0)
        assert ctrl.ctx.clock() == clock.now
        assert ctrl.ctx.hints.get("uid-1").started == clock.now

        key: Key = ("claim", "default/c")
        ctrl.queue.add_after(key, 10.0)
        assert ctrl.queue.get(timeout=0) is None  # not due: the fake clock has not moved
        assert ctrl.queue.waiting() == 1
        clock.advance(10.0)
        assert ctrl.queue.get(timeout=0) == key  # due by the fake clock alone, no real wait
        ctrl.queue.done(key)

        assert ctrl.ctx.events._clock() == clock.now
    finally:
        source.close()
        ctrl.ctx.events.close()


def test_system_clock_is_a_clock() -> None:
    """The real clock satisfies the port: monotonic never goes back, wall is seconds since the epoch."""
    clock: Clock = SystemClock()
    a = clock.monotonic()
    assert clock.monotonic() >= a
    assert clock.wall() > 1_600_000_000
