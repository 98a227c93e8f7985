"""Retry discipline: a key waiting a delay is retried early only when the user's claim changed.

Every step writes annotations to the claim; the watch event of that write used to re-queue a failing claim
at once (827 retries in 30 s). All tests drive a real Controller with a fake clock, one worker iteration at
a time, feeding watch events through the informer.
"""

from __future__ import annotations

from typing import Any

import pytest

from provisioner.domain import names
from provisioner.domain.outcome import DONE, Outcome, error, requeue
from provisioner.runtime.controller import shape
from tests.unit.controller.rig import Rig, bump, claim, make_rig, our_pv

KEY = "default/data"
OWN_WRITES: list[dict[str, Any]] = [
    {names.ANN_PROVISIONING_STEP: "creating"},
    {names.ANN_CREATE_ATTEMPT: "replica-0 1700000000.000"},
    {names.ANN_CLOUD: "default"},
    {names.PREFIX + "written-by-a-future-step": "x"},
]


def failing_rig(outcome: Outcome) -> tuple[Rig, dict[str, Any]]:
    """A controller whose claim flow answers ``outcome``; the claim was added and processed once."""
    rig = make_rig()
    rig.claims.default = outcome
    pvc = claim()
    rig.apply("persistentvolumeclaims", pvc, "ADDED")
    assert 1 == rig.drain()
    return rig, pvc


def echo_storm(rig: Rig, pvc: dict[str, Any], n: int) -> dict[str, Any]:
    """``n`` watch events of our own writes (annotations, finalizer, status) and resyncs; the last copy."""
    for i in range(n):
        pvc = bump(pvc, OWN_WRITES[i % len(OWN_WRITES)])
        pvc["metadata"]["finalizers"] = [names.PVC_PROVISIONING_FINALIZER] if i % 2 else []
        pvc["status"] = {"phase": "Pending", "conditions": [{"n": i}]}
        rig.apply("persistentvolumeclaims", pvc)
        rig.controller._on_pvc("RESYNC", pvc, pvc)
    return pvc


@pytest.mark.parametrize(
    ("change", "same"),
    [
        ({"annotations": {names.ANN_PROVISIONING_STEP: "creating"}}, True),
        ({"annotations": {names.ANN_CREATE_ATTEMPT: "r 1"}}, True),
        ({"annotations": {names.PREFIX + "anything-new": "x"}}, True),
        ({"finalizers": [names.PVC_PROVISIONING_FINALIZER]}, True),
        ({"resourceVersion": "99"}, True),
        ({"annotations": {names.ANN_RESTORE_FROM_SNAPSHOT: "snap-1"}}, False),
        ({"annotations": {names.ANN_ADOPT_VOLUME: "vol-1"}}, False),
        ({"annotations": {names.ANN_SELECTED_NODE: "node-1"}}, False),
        ({"deletionTimestamp": "2026-01-01T00:00:00Z"}, False),
        ({"uid": "u-2"}, False),
    ],
)
def test_shape_ignores_our_writes_only(change: dict[str, Any], same: bool) -> None:
    """The claim's shape ignores our netvol.io/ annotations, finalizers and versions; not the user's."""
    before = claim()
    after = claim()
    for k, v in change.items():
        if k == "annotations":
            after["metadata"]["annotations"].update(v)
        else:
            after["metadata"][k] = v
    assert same == (shape(before) == shape(after))


def test_shape_ignores_status_but_not_spec() -> None:
    """A status change is not a shape change; a spec change is."""
    before = claim()
    assert shape(before) == shape({**before, "status": {"phase": "Lost"}})
    assert shape(before) != shape({**before, "spec": {**before["spec"], "storageClassName": "other"}})


def test_own_write_events_during_error_backoff_do_not_retry_early() -> None:
    """400 own-write and resync events while a failed claim backs off: no extra process() call."""
    rig, pvc = failing_rig(error("CinderUnavailable", "503"))
    echo_storm(rig, pvc, 200)
    assert 0 == rig.drain()
    assert 1 == rig.claims.count(KEY)
    rig.clock.advance(1.0)  # the first backoff delay
    assert 1 == rig.drain()
    assert 2 == rig.claims.count(KEY)


def test_a_user_change_during_backoff_retries_at_once() -> None:
    """A spec change (as the user shaped it) during the backoff is processed at once."""
    rig, pvc = failing_rig(error("CinderUnavailable", "503"))
    echo_storm(rig, pvc, 10)
    changed = bump(pvc)
    changed["spec"] = {**pvc["spec"], "resources": {"requests": {"storage": "2Gi"}}}
    rig.apply("persistentvolumeclaims", changed)
    assert 1 == rig.drain()


def test_a_user_annotation_during_backoff_retries_at_once() -> None:
    """A user's netvol.io/restore-from-snapshot added during the backoff is processed at once."""
    rig, pvc = failing_rig(error("CinderUnavailable", "503"))
    rig.apply("persistentvolumeclaims", bump(pvc, {names.ANN_RESTORE_FROM_SNAPSHOT: "snap-1"}))
    assert 1 == rig.drain()


def test_claim_deletion_during_backoff_is_processed_at_once() -> None:
    """A deletionTimestamp set during the backoff (the abandon flow must run) is processed at once."""
    rig, pvc = failing_rig(error("CinderUnavailable", "503"))
    rig.apply("persistentvolumeclaims", bump(pvc))  # our echo: held
    deleting = bump(pvc)
    deleting["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    rig.apply("persistentvolumeclaims", deleting)
    assert 1 == rig.drain()


def test_a_class_change_during_backoff_retries_at_once() -> None:
    """The claim's StorageClass changing during the backoff is processed at once."""
    rig, _ = failing_rig(error("CinderUnavailable", "503"))
    sc = {"metadata": {"name": "rbd", "resourceVersion": "7"}, "provisioner": names.DEFAULT_PROVISIONER_NAME}
    rig.apply("storageclasses", sc, "ADDED")
    assert 1 == rig.drain()


def test_own_write_events_during_a_poll_delay_do_not_poll_early() -> None:
    """A claim whose volume is creating (requeue after 5 s): our writes' events do not make it poll early."""
    rig, pvc = failing_rig(requeue(5.0, "poll"))
    echo_storm(rig, pvc, 50)
    rig.clock.advance(4.9)
    assert 0 == rig.drain()
    rig.clock.advance(0.1)
    assert 1 == rig.drain()


def test_its_pv_appearing_during_a_poll_delay_is_seen_at_once() -> None:
    """The claim's PV created during the poll delay: the claim is processed at once."""
    rig, pvc = failing_rig(requeue(5.0, "poll"))
    rig.apply("persistentvolumes", our_pv(pvc), "ADDED")
    rig.drain()
    assert 2 == rig.claims.count(KEY)


def test_an_echo_arriving_during_the_step_does_not_retry_a_failure() -> None:
    """Our write's event arriving while the failing step still runs does not re-queue it after done()."""
    rig = make_rig()
    pvc = claim()

    def write_then_fail(key: str) -> Outcome:
        rig.apply("persistentvolumeclaims", bump(pvc, {names.ANN_PROVISIONING_STEP: "creating"}))
        return error("CinderUnavailable", "503")

    rig.claims.default = write_then_fail
    rig.apply("persistentvolumeclaims", pvc, "ADDED")
    assert 1 == rig.drain()


def test_an_echo_arriving_during_a_finished_step_is_looked_at_once_more() -> None:
    """An event arriving while a step that ends "done" runs is processed once more (level-based)."""
    rig = make_rig()
    pvc = claim()

    def write_then_done(key: str) -> Outcome:
        if rig.claims.count(key) == 1:
            rig.apply("persistentvolumeclaims", bump(pvc, {names.ANN_PROVISIONING_STEP: "bound"}))
        return DONE

    rig.claims.default = write_then_done
    rig.apply("persistentvolumeclaims", pvc, "ADDED")
    assert 2 == rig.drain()


def test_a_failing_claim_under_an_event_storm_follows_its_backoff() -> None:
    """30 s of fake time, an own-write event every 0.1 s: 5 attempts (t = 0, 1, 3, 7, 15), not hundreds."""
    rig, pvc = failing_rig(error("CinderUnavailable", "503"))
    for _ in range(300):
        rig.clock.advance(0.1)
        pvc = echo_storm(rig, pvc, 1)
        rig.drain()
    assert 5 == rig.claims.count(KEY)


def test_retries_are_counted_by_reason() -> None:
    """Each error outcome counts one retry under the outcome's reason."""
    rig, _ = failing_rig(error("CinderUnavailable", "503"))
    rig.clock.advance(1.0)
    rig.drain()
    assert 2.0 == rig.sample("cinder_provisioner_queue_retries_total", reason="CinderUnavailable")
    assert 0.0 == rig.sample("cinder_provisioner_queue_retries_total", reason="poll")


def test_an_earlier_delay_of_a_key_does_not_swallow_its_final_slow_retry() -> None:
    """A key waiting 1 s (a poll) fails finally meanwhile (retry in 10 s): the 1 s delivery is skipped and
    the slow retry still comes. Under load a claim stayed failed forever: the queue keeps one deadline per
    key, the earlier one, and its skipped delivery re-added nothing."""
    rig = make_rig()
    rig.claims.default = Outcome(kind="final", reason="quota", message="413", delay=10.0)
    rig.apply("persistentvolumeclaims", claim(), "ADDED")
    rig.controller.queue.add_after(("claim", KEY), 1.0)  # the earlier delay, still pending
    assert 1 == rig.drain()  # the final failure
    rig.clock.advance(1.0)
    assert 0 == rig.drain()  # the poll's delivery: skipped (not due)
    rig.clock.advance(9.5)
    assert 1 == rig.drain()  # the slow retry
    assert 2 == rig.claims.count(KEY)
