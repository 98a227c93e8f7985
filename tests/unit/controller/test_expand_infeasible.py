"""An infeasible extend through the real Controller and the real claim flow: how many extends, over time.

CI once saw a 413 on extend followed at once by a second extend (which succeeded, so the claim never stayed
``ControllerResizeInfeasible``): the resize request arrived while the claim's step ran, the expand flow read
that newer copy, and the final failure was remembered against the copy ``process()`` had read before the
flow ran; the newer copy's event then no longer matched and the claim ran again. These tests make that
interleaving happen on purpose (the resize is delivered from inside the step) and count Cinder extends.

Fakes: Cinder and the Kubernetes writer are in-memory, the informers are the controller's own, fed one
watch event at a time (our writes reach the cache only when a test delivers their echo, as with a lagging
watch), and the clock is fake.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import pytest

from provisioner.domain import names
from provisioner.domain.errors import CinderQuotaExceeded, CinderUnavailable
from provisioner.domain.outcome import Outcome
from provisioner.flows.context import Context
from provisioner.flows.expand import CONTROLLER_INFEASIBLE, reconcile_claim_and_size
from provisioner.runtime.controller import Controller
from provisioner.runtime.informer import Informer
from tests.fakes.ports import FakeCinder, FakeClock, World, make_context
from tests.unit.controller.rig import GatedSource, ScriptedFlow
from tests.unit.flows import objects

KEY = "ns/data"
SLOW_RETRY = 300.0
Obj = dict[str, Any]


@dataclass
class Cluster:
    """A controller (one worker, stepped by hand) over fakes, running the real claim flow."""

    controller: Controller
    world: World
    clock: FakeClock
    #: called once at the start of the next claim step, before the flow reads the cache
    during_next_step: list[Callable[[], None]] = field(default_factory=list)
    #: the keys the claim flow ran for
    calls: list[str] = field(default_factory=list)

    @property
    def cinder(self) -> FakeCinder:
        return self.world.cinder

    def extends(self) -> list[int]:
        """The sizes of every Cinder extend call so far."""
        return [c[2] for c in self.cinder.calls if c[0] == "extend_volume"]

    def deliver(self, resource: str, obj: Obj, etype: str = "MODIFIED") -> None:
        """One watch event for ``obj``."""
        informer: Informer = {
            "persistentvolumeclaims": self.controller.pvcs,
            "persistentvolumes": self.controller.pvs,
            "storageclasses": self.controller.classes,
        }[resource]
        informer._apply(etype, copy.deepcopy(obj))

    def live_claim(self) -> Obj:
        found = self.world.kube.find("persistentvolumeclaims", "data", "ns")
        assert found is not None
        return found

    def echo_claim(self) -> None:
        """The watch event of the claim as the API now has it (our status writes included)."""
        self.deliver("persistentvolumeclaims", self.live_claim())

    def user_resizes(self, size: str) -> None:
        """The user edits spec.resources.requests.storage (the API's copy and its watch event)."""
        live = self.live_claim()
        live["spec"]["resources"]["requests"]["storage"] = size
        live["metadata"]["resourceVersion"] = str(int(live["metadata"]["resourceVersion"]) + 1000)
        self.deliver("persistentvolumeclaims", live)

    def resync(self, n: int, *, claims_only: bool = False) -> None:
        """``n`` informer resyncs of every cached object (or of the claims only)."""
        informers = (self.controller.classes, self.controller.pvs, self.controller.pvcs)
        for _ in range(n):
            for informer in informers[2:] if claims_only else informers:
                informer._emit_resync()

    @property
    def flow_calls(self) -> int:
        """How many times the claim flow ran."""
        return len(self.calls)

    def drain(self, limit: int = 50) -> int:
        """Worker iterations until nothing is ready; how many claim flow calls that made."""
        before = len(self.calls)
        for _ in range(limit):
            ran = len(self.calls)
            self.controller.run_once("test", timeout=0)  # get() also promotes keys whose delay is over
            if ran == len(self.calls) and self.controller.queue.depth() == 0:
                return len(self.calls) - before
        raise AssertionError("queue never drained")


def cluster(*, request: str = "1Gi") -> Cluster:
    """A bound 1 GiB claim of an expandable class, its in-use 1 GiB volume; the caches have all three."""
    clock = FakeClock()
    cinder = FakeCinder()
    made: list[World] = []

    def context(pvcs: Informer, pvs: Informer, classes: Informer) -> Context:
        world = make_context(
            clouds={"default": cinder},
            pvcs=pvcs,  # type: ignore[arg-type]
            pvs=pvs,  # type: ignore[arg-type]
            classes=classes,  # type: ignore[arg-type]
            clock=clock,
            live_caches=False,
            final_retry_seconds=SLOW_RETRY,
        )
        # make_context's ``pvcs or FakeCache()`` would take an empty informer (len 0) for no cache
        world.ctx = replace(world.ctx, pvcs=pvcs, pvs=pvs, classes=classes)
        made.append(world)
        return world.ctx

    hooks: list[Callable[[], None]] = []
    calls: list[str] = []

    def claim_flow(ctx: Context, key: str) -> Outcome:
        calls.append(key)
        while hooks:
            hooks.pop(0)()
        return reconcile_claim_and_size(ctx, key)

    controller = Controller(
        source=GatedSource(),
        make_context=context,
        workers=1,
        clock=clock,
        claim_flow=claim_flow,
        volume_flow=ScriptedFlow(),
        pause=lambda _: None,
    )
    world = made[0]
    c = Cluster(controller=controller, world=world, clock=clock, during_next_step=hooks, calls=calls)
    sc = objects.storage_class()
    sc["allowVolumeExpansion"] = True
    sc["metadata"]["resourceVersion"] = "1"
    pvc = objects.pvc(deleting=False)
    pvc["metadata"]["finalizers"] = []
    pvc["spec"].update(volumeName="pvc-u1", volumeMode="Filesystem")
    pvc["spec"]["resources"]["requests"]["storage"] = request
    pvc["status"] = {"phase": "Bound", "capacity": {"storage": "1Gi"}}
    pv = objects.pv(phase="Bound", secrets_in=None)
    pv["spec"]["capacity"] = {"storage": "1Gi"}
    pv["spec"]["csi"] = {"driver": names.CSI_DRIVER_NAME, "volumeHandle": "v1"}
    for resource, obj in (("storageclasses", sc), ("persistentvolumes", pv), ("persistentvolumeclaims", pvc)):
        world.kube.put(resource, obj)
        c.deliver(resource, obj, "ADDED")
    cinder.add_volume("v1", status="in-use", size_gib=1)
    return c


def resize_arrives_during_a_step(c: Cluster, size: str = "5Gi") -> None:
    """A claim step starts on the 1 GiB copy; the user's resize reaches the cache before the flow reads it.

    This is the interleaving from CI: the claim was being processed (its PV's event) when the resize came.
    """
    c.during_next_step.append(lambda: c.user_resizes(size))
    c.controller.queue.add(("claim", KEY))
    c.drain()


def status_of(c: Cluster) -> Any:
    return (c.live_claim().get("status") or {}).get("allocatedResourceStatuses")


def test_an_infeasible_extend_of_a_resize_that_arrived_during_the_step_is_not_retried_at_once() -> None:
    """413 on an extend decided on a copy newer than process() read: one extend, the claim stays
    infeasible; the redelivery of the key (the resize's event came during the step) extends nothing.
    Before the fix the failure was remembered against the older copy and the second extend followed."""
    c = cluster()
    assert 1 == c.drain()  # the claim's ADDED event: nothing to do at 1 GiB
    c.cinder.fail("extend_volume", CinderQuotaExceeded("413 quota", operation="volume_extend"), times=1)
    resize_arrives_during_a_step(c)
    assert [5] == c.extends()
    assert {"storage": CONTROLLER_INFEASIBLE} == status_of(c)
    assert 2 == c.flow_calls  # the redelivery (the resize's event came during the step) ran no flow


def test_events_and_resyncs_after_an_infeasible_extend_make_no_more_extends() -> None:
    """After the infeasible answer: our writes' echoes, the PV's events and 50 resyncs, 0 further extends
    until the slow retry is due (then exactly one, as the resizer's slow set retries the same size)."""
    c = cluster()
    c.drain()
    c.cinder.fail("extend_volume", CinderQuotaExceeded("413 quota", operation="volume_extend"), times=1)
    resize_arrives_during_a_step(c)
    for _ in range(10):
        c.echo_claim()
        pv = c.world.kube.find("persistentvolumes", "pvc-u1")
        assert pv is not None
        c.deliver("persistentvolumes", pv)
        c.resync(5)
        c.clock.advance(SLOW_RETRY / 20)
        c.drain()
    assert [5] == c.extends()
    assert {"storage": CONTROLLER_INFEASIBLE} == status_of(c)
    c.clock.advance(SLOW_RETRY / 2)
    c.drain()
    assert [5, 5] == c.extends()  # the slow retry; Cinder now accepts it


@pytest.mark.parametrize(
    ("request_", "gib"),
    [
        pytest.param("6Gi", 6, id="raised"),
        pytest.param("3Gi", 3, id="lowered-still-above-capacity"),
    ],
)
def test_a_user_changing_the_request_after_an_infeasible_extend_gets_a_fresh_attempt(
    request_: str, gib: int
) -> None:
    """Infeasible at 5 Gi, the user asks another size (above status.capacity): extended to it at once."""
    c = cluster()
    c.drain()
    c.cinder.fail("extend_volume", CinderQuotaExceeded("413 quota", operation="volume_extend"), times=1)
    resize_arrives_during_a_step(c)
    c.echo_claim()
    c.drain()
    c.user_resizes(request_)
    c.drain()
    assert [5, gib] == c.extends()
    assert {"storage": request_} == c.live_claim()["status"]["allocatedResources"]


def test_a_transient_extend_failure_is_retried_with_backoff() -> None:
    """503 on the extend: not infeasible (Resizing kept); our writes' echoes and resyncs do not retry it
    early, the backoff does (1 s, then 2 s), and the extend then goes through."""
    c = cluster()
    c.drain()
    c.cinder.fail("extend_volume", CinderUnavailable("503", operation="volume_extend"), times=2)
    c.user_resizes("5Gi")
    c.drain()
    assert [5] == c.extends()
    assert {"storage": "ControllerResizeInProgress"} == status_of(c)
    c.echo_claim()
    c.resync(5, claims_only=True)  # a PV's event queues its claim at once, backoff or not (as before)
    c.drain()
    assert [5] == c.extends()
    c.clock.advance(1.0)
    c.drain()
    assert [5, 5] == c.extends()
    c.echo_claim()
    c.clock.advance(1.9)
    c.drain()
    assert [5, 5] == c.extends()
    c.clock.advance(0.1)
    c.drain()
    assert [5, 5, 5] == c.extends()
    assert {"storage": "ControllerResizeInProgress"} == status_of(c)  # extending: polled from here on
