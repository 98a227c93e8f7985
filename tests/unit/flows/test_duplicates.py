"""Duplicate sweeps: ``plan_sweep`` as a table, ``remove_duplicates`` against the fakes."""

from __future__ import annotations

import pytest

from provisioner.domain import names
from provisioner.domain.model import AttachmentId, Volume, VolumeId
from provisioner.flows.duplicates import DUPLICATE_DELETED, Sweep, plan_sweep, remove_duplicates
from tests.fakes.ports import make_context
from tests.unit.flows import objects


def vol(vid: str, status: str = "available") -> Volume:
    return Volume(id=VolumeId(vid), name="pvc-u1", size_gib=1, status=status)


A, B, C = vol("a"), vol("b", "deleting"), vol("c", "creating")
CASES: list[tuple[str, list[Volume], str | None, Sweep]] = [
    ("nothing", [], None, Sweep()),
    ("only the keeper", [A], "a", Sweep(keep=VolumeId("a"))),
    ("delete the others", [A, vol("d")], "a", Sweep(delete=(vol("d"),), keep=VolumeId("a"))),
    ("wait for deleting and creating ones", [A, B, C], "a",
     Sweep(settling=(VolumeId("b"), VolumeId("c")), keep=VolumeId("a"))),
    ("no keeper: every available one goes", [A, B], None, Sweep(delete=(A,), settling=(VolumeId("b"),))),
]  # fmt: skip


@pytest.mark.parametrize(("volumes", "keep", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_plan_sweep(volumes: list[Volume], keep: str | None, expected: Sweep) -> None:
    assert expected == plan_sweep(volumes, VolumeId(keep) if keep else None)


def test_settled_only_when_nothing_to_do() -> None:
    assert Sweep().settled
    assert not Sweep(settling=(VolumeId("b"),)).settled
    assert not Sweep(delete=(A,)).settled


def test_remove_duplicates_deletes_all_but_the_keeper_with_an_event() -> None:
    w = make_context()
    w.cinder.add_volume("keep")
    dup = w.cinder.add_volume("dup", attachment_ids=["x1"], metadata={names.META_CREATED_BY: "replica-1"})
    pvc = objects.pvc(deleting=False)
    settled = remove_duplicates(
        w.ctx, w.ctx.cinder(None), pvc, [w.cinder.volumes["keep"], dup], VolumeId("keep")
    )
    assert settled is False  # the duplicate is still deleting
    assert w.cinder.calls == [("delete_attachment", AttachmentId("x1")), ("delete_volume", "dup", False)]
    assert [(e.type, e.reason) for e in w.events.calls] == [("Normal", DUPLICATE_DELETED)]
    assert "replica-1" in w.events.calls[0].message


def test_remove_duplicates_without_the_lease_deletes_nothing() -> None:
    w = make_context()
    dup = w.cinder.add_volume("dup")
    w.leader[0] = False
    assert remove_duplicates(w.ctx, w.ctx.cinder(None), objects.pvc(), [dup], None) is False
    assert w.cinder.calls == []
    assert w.events.calls == []
