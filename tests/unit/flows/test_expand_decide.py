"""The expand decision as a table: one observed situation in, one step out (every branch)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from provisioner.domain.model import Volume, VolumeId
from provisioner.flows.expand import (
    ExpandState,
    Extend,
    Limits,
    LookUp,
    Nothing,
    RecordResized,
    Refuse,
    Step,
    VolumeSeen,
    Wait,
    decide_expansion,
)

LIMITS = Limits(slow_retry_seconds=300.0)
BASE = ExpandState(
    key="ns/data",
    uid="u1",
    bound=True,
    pv_name="pvc-u1",
    pv_ours=True,
    volume_id="v1",
    source="csi",
    requested_gib=4,
    pv_gib=1,
    status_gib=1,
    class_name="fast",
    allow_expansion=True,
)


def e(**kw: Any) -> ExpandState:
    return replace(BASE, **kw)


def v(status: str = "in-use", size: int = 1, *, inuse: bool = True, missing: bool = False) -> VolumeSeen:
    volume = None if missing else Volume(id=VolumeId("v1"), name="pvc-u1", size_gib=size, status=status)
    return VolumeSeen(volume=volume, inuse_extend=inuse, microversion="3.60" if inuse else "3.40")


CASES: list[tuple[str, ExpandState, VolumeSeen | None, type]] = [
    ("not bound", e(bound=False), None, Nothing),
    ("deleting", e(deleting=True), None, Nothing),
    ("PV not ours", e(pv_ours=False), None, Nothing),
    ("request equals PV", e(requested_gib=1), None, Nothing),
    ("restored larger than asked: nothing", e(requested_gib=1, pv_gib=5, status_gib=5), None, Nothing),
    ("grow: look Cinder up first", e(), None, LookUp),
    ("grow, poll not due", e(poll_wait=0.4), None, Wait),
    ("in-use + 3.42: extend", e(), v("in-use"), Extend),
    ("available: extend (offline)", e(), v("available", inuse=False), Extend),
    ("in-use without 3.42: refuse slowly", e(), v("in-use", inuse=False), Refuse),
    ("legacy export (attaching), pre-3.42: refuse slowly", e(), v("attaching", inuse=False), Refuse),
    ("attaching with 3.42: not extendable, refuse slowly", e(), v("attaching"), Refuse),
    ("extending: poll", e(resizing=True, allocated_gib=4), v("extending", 4), Wait),
    ("Cinder has the size: record", e(resizing=True, allocated_gib=4), v("in-use", 4), RecordResized),
    (
        "error_extending: refuse, infeasible",
        e(resizing=True, allocated_gib=4),
        v("error_extending", 1),
        Refuse,
    ),
    ("volume gone: refuse, infeasible", e(), v(missing=True), Refuse),
    ("class does not allow expansion", e(allow_expansion=False), None, Refuse),
    ("class gone", e(class_found=False, allow_expansion=False), None, Refuse),
    ("in-tree rbd Filesystem refused", e(source="rbd"), None, Refuse),
    ("in-tree iscsi Block allowed", e(source="iscsi", block=True), None, LookUp),
    ("shrink below allocation refused", e(requested_gib=2, pv_gib=4, allocated_gib=4), None, Refuse),
    (
        "crash after PV write: finish the claim",
        e(requested_gib=4, pv_gib=4, allocated_gib=4, resizing=True),
        None,
        RecordResized,
    ),
]


@pytest.mark.parametrize(("what", "state", "seen", "kind"), CASES, ids=[c[0] for c in CASES])
def test_decide_expansion_table(what: str, state: ExpandState, seen: VolumeSeen | None, kind: type) -> None:
    """Each situation gives exactly one kind of step."""
    assert kind is type(decide_expansion(state, seen, LIMITS))


def step(state: ExpandState, seen: VolumeSeen | None = None) -> Step:
    return decide_expansion(state, seen, LIMITS)


def test_extend_asks_for_the_requested_size() -> None:
    """The extend targets the claim's request in GiB, on the PV's volume."""
    assert Extend(volume_id="v1", new_gib=4) == step(e(), v("in-use"))


def test_record_uses_cinder_size_and_node_step_for_csi_only() -> None:
    """Our CSI PVs need the node step; in-tree Block ones are finished by the controller."""
    assert RecordResized(new_gib=5, node_expansion=True) == step(e(), v("in-use", 5))
    assert RecordResized(new_gib=4, node_expansion=False) == step(
        e(source="iscsi", block=True), v("in-use", 4)
    )


def test_refusals_name_the_cause() -> None:
    """Each refusal's message says why, and what the claim keeps; only the ones Cinder can change retry."""
    no_class = step(e(allow_expansion=False))
    assert isinstance(no_class, Refuse)
    assert "allowVolumeExpansion" in no_class.message
    assert "stays at 1 GiB" in no_class.message
    assert (0.0, False) == (no_class.retry, no_class.infeasible)
    offline = step(e(), v("in-use", inuse=False))
    assert isinstance(offline, Refuse)
    assert "microversion 3.40" in offline.message
    assert "3.42" in offline.message
    assert "stop the pods" in offline.message
    assert (300.0, False) == (offline.retry, offline.infeasible)
    legacy = step(e(), v("attaching", inuse=False))
    assert isinstance(legacy, Refuse)
    assert ("inuse_extend_unsupported", 300.0) == (legacy.reason, legacy.retry)
    assert "is attaching" in legacy.message
    shrink = step(e(requested_gib=2, pv_gib=4, allocated_gib=4))
    assert isinstance(shrink, Refuse)
    assert "spec.resources.requests.storage" in shrink.message
    assert "cannot shrink" in shrink.message
    failed = step(e(), v("error_extending", 1))
    assert isinstance(failed, Refuse)
    assert failed.infeasible
    assert "error_extending" in failed.message
    assert "stays at 1 GiB" in failed.message
    in_tree = step(e(source="rbd"))
    assert isinstance(in_tree, Refuse)
    assert "in-tree rbd" in in_tree.message


def test_wait_for_poll_carries_the_remaining_delay() -> None:
    """An event before the next poll is due waits out the rest (no Cinder read)."""
    assert Wait(reason="poll_not_due", delay=0.4) == step(e(poll_wait=0.4))
