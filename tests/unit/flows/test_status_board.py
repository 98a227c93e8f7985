"""The status board: one shared Cinder list per poll round for volumes still creating.

Table tests of the board with an in-memory lister and explicit times, then the provision flow over the fake
world: how many Cinder calls a burst of claims makes (lists instead of a get per claim), and that every
unusual case (a volume the list misses, a failed list, a volume stuck creating) falls back to the claim's own
get, never to a wrong decision.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import Any

import pytest

from provisioner.domain import names
from provisioner.domain.errors import CinderUnavailable
from provisioner.domain.model import (
    AVAILABLE,
    Attachment,
    CinderCapabilities,
    ConnectionInfo,
    Connector,
    CreateVolumeRequest,
    Volume,
    VolumeId,
)
from provisioner.flows.provision import reconcile_claim
from provisioner.flows.status_board import StatusBoard, covers, list_window
from tests.fakes.ports import CAPS, FakeCinder, make_context

CLOUD = "default"


def _vol(vid: str, status: str = "creating", created_at: float | None = 1000.0) -> Volume:
    return Volume(id=VolumeId(vid), name=f"pvc-{vid}", size_gib=1, status=status, created_at=created_at)


class _Lister:
    """Answers with ``volumes`` (filtered on created_at like Cinder), counting calls and their windows."""

    def __init__(self, *volumes: Volume, fail: BaseException | None = None) -> None:
        self.volumes = list(volumes)
        self.since: list[float] = []
        self.fail = fail

    def __call__(self, since: float) -> Iterable[Volume]:
        self.since.append(since)
        if self.fail is not None:
            raise self.fail
        return [v for v in self.volumes if v.created_at is None or v.created_at >= since]


# ---- pure helpers ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("created", "expected"),
    [
        pytest.param([], None, id="nothing-waits"),
        pytest.param([1000.5], 1000.5, id="one"),
        pytest.param([1003.0, 1000.25, 1001.0], 1000.25, id="oldest-wins"),
    ],
)
def test_list_window_covers_the_oldest_waited_on_volume(created: list[float], expected: float | None) -> None:
    assert expected == list_window(created)


@pytest.mark.parametrize(
    ("started", "not_before", "expected"),
    [
        pytest.param(None, 0.0, False, id="no-round-yet"),
        pytest.param(5.0, 5.0, True, id="started-exactly-then"),
        pytest.param(5.1, 5.0, True, id="started-after"),
        pytest.param(4.9, 5.0, False, id="too-old"),
    ],
)
def test_covers(started: float | None, not_before: float, expected: bool) -> None:
    assert expected is covers(started, not_before)


# ---- the board ---------------------------------------------------------------------------------------


def test_claims_due_in_one_round_share_one_list() -> None:
    board = StatusBoard()
    a, b = _vol("a"), _vol("b", created_at=1000.4)
    lister = _Lister(replace(a, status=AVAILABLE), replace(b, status=AVAILABLE))
    board.wait_on(CLOUD, a, now=10.0)
    board.wait_on(CLOUD, b, now=10.1)
    first = board.read(CLOUD, a.id, not_before=10.2, now=10.3, lister=lister)
    second = board.read(CLOUD, b.id, not_before=10.25, now=10.35, lister=lister)
    assert (AVAILABLE, AVAILABLE) == (first and first.status, second and second.status)
    assert [1000.0] == lister.since  # one list, from the oldest waited-on created_at
    assert (1, 2) == (board.lists, board.served)
    assert 0 == board.waiting(CLOUD)  # out of creating: off the board


def test_a_round_older_than_the_callers_due_time_is_not_reused() -> None:
    board = StatusBoard()
    a, b = _vol("a"), _vol("b")
    lister = _Lister(a, b)
    board.wait_on(CLOUD, a, now=10.0)
    board.wait_on(CLOUD, b, now=10.0)
    board.read(CLOUD, a.id, not_before=10.0, now=10.25, lister=lister)
    board.read(CLOUD, b.id, not_before=10.3, now=10.55, lister=lister)
    assert 2 == len(lister.since)


def test_a_volume_still_creating_stays_on_the_board_until_it_is_too_old() -> None:
    board = StatusBoard(young_seconds=10.0)
    a = _vol("a")
    lister = _Lister(a)
    board.wait_on(CLOUD, a, now=0.0)
    seen = board.read(CLOUD, a.id, not_before=0.0, now=1.0, lister=lister)
    assert seen is not None
    assert "creating" == seen.status
    assert 1 == board.waiting(CLOUD)
    assert board.read(CLOUD, a.id, not_before=11.0, now=11.0, lister=lister) is None  # its own get now
    assert 0 == board.waiting(CLOUD)
    assert 1 == len(lister.since)
    board.wait_on(CLOUD, _vol("b"), now=11.0)
    board.read(CLOUD, VolumeId("b"), not_before=11.0, now=11.5, lister=lister)
    assert 1000.0 == lister.since[-1]  # the stuck volume no longer widens the window


@pytest.mark.parametrize(
    "volume",
    [
        pytest.param(_vol("a", status=AVAILABLE), id="already-final"),
        pytest.param(_vol("a", created_at=None), id="no-created-at"),
    ],
)
def test_only_a_creating_volume_with_a_creation_time_goes_on_the_board(volume: Volume) -> None:
    board = StatusBoard()
    board.wait_on(CLOUD, volume, now=0.0)
    lister = _Lister(volume)
    assert board.read(CLOUD, volume.id, not_before=0.0, now=1.0, lister=lister) is None
    assert [] == lister.since


def test_a_volume_the_list_misses_is_left_to_its_own_get() -> None:
    board = StatusBoard()
    a = _vol("a")
    board.wait_on(CLOUD, a, now=0.0)
    assert board.read(CLOUD, a.id, not_before=0.0, now=1.0, lister=_Lister()) is None


def test_the_leaders_list_error_propagates_and_followers_fall_back() -> None:
    """A failed list raises for the claim that sent it (the flow backs off); a claim that waited on it
    gets None and does its own get."""
    board = StatusBoard()
    a, b = _vol("a"), _vol("b")
    board.wait_on(CLOUD, a, now=0.0)
    board.wait_on(CLOUD, b, now=0.0)
    started = threading.Event()
    release = threading.Event()
    down = CinderUnavailable("503", operation="list_volumes", status_code=503)

    def slow_failing(since: float) -> Iterable[Volume]:
        started.set()
        release.wait(5)
        raise down

    errors: list[BaseException] = []

    def lead() -> None:
        try:
            board.read(CLOUD, a.id, not_before=0.0, now=1.0, lister=slow_failing)
        except CinderUnavailable as e:
            errors.append(e)

    leader = threading.Thread(target=lead)
    leader.start()
    assert started.wait(5)
    follower_result: list[Volume | None] = []
    follower = threading.Thread(
        target=lambda: follower_result.append(
            board.read(CLOUD, b.id, not_before=0.5, now=1.1, lister=_Lister(b))
        )
    )
    follower.start()
    release.set()
    leader.join(5)
    follower.join(5)
    assert [down] == errors
    assert [None] == follower_result
    assert 1 == board.lists  # the follower did not send a second list


def test_a_follower_waits_for_the_list_in_flight_instead_of_sending_its_own() -> None:
    board = StatusBoard()
    a, b = _vol("a"), _vol("b")
    board.wait_on(CLOUD, a, now=0.0)
    board.wait_on(CLOUD, b, now=0.0)
    started, release = threading.Event(), threading.Event()
    calls: list[float] = []

    def slow(since: float) -> Iterable[Volume]:
        calls.append(since)
        started.set()
        release.wait(5)
        return [replace(a, status=AVAILABLE), replace(b, status=AVAILABLE)]

    results: dict[str, Volume | None] = {}
    t1 = threading.Thread(
        target=lambda: results.update(a=board.read(CLOUD, a.id, not_before=0, now=1, lister=slow))
    )
    t1.start()
    assert started.wait(5)
    t2 = threading.Thread(
        target=lambda: results.update(b=board.read(CLOUD, b.id, not_before=1, now=1, lister=slow))
    )
    t2.start()
    release.set()
    t1.join(5)
    t2.join(5)
    assert 1 == len(calls)
    assert {AVAILABLE} == {v.status for v in results.values() if v is not None}
    assert 2 == len(results)


def test_a_follower_gives_up_on_a_list_that_takes_too_long() -> None:
    board = StatusBoard(follower_timeout=0.05)
    a, b = _vol("a"), _vol("b")
    board.wait_on(CLOUD, a, now=0.0)
    board.wait_on(CLOUD, b, now=0.0)
    started, release = threading.Event(), threading.Event()

    def hung(since: float) -> Iterable[Volume]:
        started.set()
        release.wait(5)
        return []

    t = threading.Thread(target=lambda: board.read(CLOUD, a.id, not_before=0, now=1, lister=hung))
    t.start()
    assert started.wait(5)
    assert board.read(CLOUD, b.id, not_before=1, now=1, lister=hung) is None
    release.set()
    t.join(5)


# ---- the provision flow over the fake world --------------------------------------------------------------

RBD = ConnectionInfo(
    driver_volume_type="rbd",
    data={"name": "pool/vol", "hosts": ["10.0.0.1"], "ports": ["6789"], "auth_enabled": False},
)
TIMED = replace(CAPS, microversion="3.60", time_filters=True)


class _TimedCinder(FakeCinder):
    """A 3.60 cloud whose create answers carry created_at (from the world's wall clock)."""

    def __init__(self, wall: Callable[[], float], capabilities: CinderCapabilities = TIMED) -> None:
        super().__init__(capabilities=capabilities, name="default")
        self._wall = wall

    def create_volume(
        self, request: CreateVolumeRequest, *, before_send: Callable[[], None] | None = None
    ) -> Volume:
        volume = super().create_volume(request, before_send=before_send)
        return self.add_volume(
            volume.id,
            status=volume.status,
            name=volume.name,
            size_gib=volume.size_gib,
            metadata=volume.metadata,
            created_at=self._wall(),
        )

    def create_attachment(self, volume_id: VolumeId, connector: Connector) -> Attachment:
        attachment = replace(super().create_attachment(volume_id, connector), connection_info=RBD)
        self.attachments[attachment.id] = attachment
        return attachment


def _burst(n: int, capabilities: CinderCapabilities = TIMED) -> Any:
    from tests.fakes.ports import FakeClock

    clock = FakeClock()
    cinder = _TimedCinder(clock.wall, capabilities)
    world = make_context(clouds={"default": cinder}, clock=clock)
    world.kube.put(
        "storageclasses",
        {"metadata": {"name": "fast"}, "provisioner": names.DEFAULT_PROVISIONER_NAME, "parameters": {}},
    )
    for i in range(n):
        world.kube.put(
            "persistentvolumeclaims",
            {
                "metadata": {"name": f"c{i}", "namespace": "ns", "uid": f"00000000-0000-4000-8000-{i:012d}"},
                "spec": {
                    "storageClassName": "fast",
                    "accessModes": ["ReadWriteOnce"],
                    "resources": {"requests": {"storage": "1Gi"}},
                },
            },
        )
    return world, cinder


def _pvs(world: Any) -> list[Any]:
    return [o for (resource, _ns, _name), o in world.kube.objects.items() if resource == "persistentvolumes"]


def _run_burst(world: Any, cinder: FakeCinder, n: int) -> None:
    for i in range(n):
        assert "requeue" == reconcile_claim(world.ctx, f"ns/c{i}").kind
    cinder.tick()
    world.clock.advance(world.ctx.settings.poll_initial_seconds)
    for i in range(n):
        assert "done" == reconcile_claim(world.ctx, f"ns/c{i}").kind, i


def test_a_burst_polls_with_one_list_instead_of_a_get_per_claim() -> None:
    n = 20
    world, cinder = _burst(n)
    _run_burst(world, cinder, n)
    called = cinder.methods_called()
    assert {"create_volume": n, "list_volumes": 1, "create_attachment": n, "complete_attachment": n} == {
        m: called.count(m) for m in set(called)
    }
    assert n == len(_pvs(world))
    assert 0 == world.ctx.board.waiting("default")


def test_below_microversion_3_60_each_claim_polls_with_its_own_get() -> None:
    n = 5
    world, cinder = _burst(n, replace(TIMED, microversion="3.59", time_filters=False))
    _run_burst(world, cinder, n)
    called = cinder.methods_called()
    assert (n, 0) == (called.count("get_volume"), called.count("list_volumes"))


def test_a_failed_list_is_a_transient_error_for_its_claim_and_the_next_round_recovers() -> None:
    n = 3
    world, cinder = _burst(n)
    for i in range(n):
        reconcile_claim(world.ctx, f"ns/c{i}")
    cinder.tick()
    world.clock.advance(world.ctx.settings.poll_initial_seconds)
    cinder.fail("list_volumes", CinderUnavailable("503", operation="list_volumes", status_code=503), times=1)
    outcome = reconcile_claim(world.ctx, "ns/c0")
    assert outcome.kind in {"requeue", "error"}
    world.clock.advance(60.0)
    for i in range(n):
        assert "done" == reconcile_claim(world.ctx, f"ns/c{i}").kind
    assert n == len(_pvs(world))
    assert n == cinder.methods_called().count("create_volume")  # no claim created twice


def test_a_volume_gone_from_the_list_is_read_by_its_own_get_and_never_exported_blindly() -> None:
    """The list does not show the claim's volume (deleted behind our back): its own get says 404, and the
    claim goes back to looking it up by name instead of exporting a reading it never had."""
    world, cinder = _burst(1)
    reconcile_claim(world.ctx, "ns/c0")
    (vid,) = list(cinder.volumes)
    del cinder.volumes[vid]
    world.clock.advance(world.ctx.settings.poll_initial_seconds)
    reconcile_claim(world.ctx, "ns/c0")
    called = cinder.methods_called()
    assert ["create_volume", "list_volumes", "get_volume", "find_volume"] == called[:4]
    assert [] == _pvs(world)
