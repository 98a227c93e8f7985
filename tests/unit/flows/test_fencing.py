"""Fencing: every mutating CinderPort method refuses without the lease; reads pass through."""

from __future__ import annotations

import inspect
from typing import Any

import pytest

from provisioner.domain.errors import NotLeader
from provisioner.domain.model import AttachmentId, BackupId, CreateVolumeRequest, SnapshotId, VolumeId
from provisioner.flows.fencing import MUTATIONS, READS, FencedCinder
from provisioner.ports import CinderPort
from tests.fakes.ports import CONNECTOR, FakeCinder, make_context

V, A, S, B = VolumeId("v1"), AttachmentId("a1"), SnapshotId("s1"), BackupId("b1")

#: Arguments for every CinderPort method (a new method without an entry here fails the coverage test).
ARGS: dict[str, tuple[tuple[Any, ...], dict[str, Any]]] = {
    "create_volume": ((CreateVolumeRequest(name="pvc-x", size_gib=1),), {}),
    "get_volume": ((V,), {}),
    "find_volume": ((), {"name": "vol-v1", "cluster": "c"}),
    "list_volumes": ((), {"metadata": {}}),
    "delete_volume": ((VolumeId("v2"),), {"cascade": False}),
    "set_volume_metadata": ((VolumeId("v2"), {"k": "v"}), {}),
    "extend_volume": ((V, 2), {}),
    "create_attachment": ((V, CONNECTOR), {}),
    "complete_attachment": ((A,), {}),
    "delete_attachment": ((A,), {}),
    "reserve": ((V,), {}),
    "initialize_connection": ((V, CONNECTOR), {}),
    "terminate_connection": ((V, CONNECTOR), {}),
    "unreserve": ((V,), {}),
    "create_snapshot": ((V,), {"name": "s", "metadata": {}}),
    "get_snapshot": ((S,), {}),
    "list_snapshots": ((), {}),
    "delete_snapshot": ((S,), {}),
    "has_backup_service": ((), {}),
    "create_backup": ((V,), {"name": "b", "metadata": {}, "force": True}),
    "get_backup": ((B,), {}),
    "list_backups": ((), {}),
    "delete_backup": ((B,), {}),
    "restore_backup": ((B,), {"volume_id": VolumeId("v2")}),
}


def port_members() -> set[str]:
    return {
        name
        for name, member in inspect.getmembers(CinderPort)
        if not name.startswith("_") and (inspect.isfunction(member) or isinstance(member, property))
    }


def port_methods() -> list[str]:
    return sorted(n for n in port_members() if inspect.isfunction(getattr(CinderPort, n)))


def fake() -> FakeCinder:
    cinder = FakeCinder()
    cinder.add_volume("v1", attachment_ids=["a1"])
    cinder.add_volume("v2")
    cinder.add_snapshot("s1", "v1")
    cinder.add_backup("b1", "v1")
    return cinder


def test_every_port_member_is_classified() -> None:
    members = port_members()
    assert members == READS | MUTATIONS, "classify a new CinderPort member in provisioner/flows/fencing.py"
    assert not READS & MUTATIONS
    assert set(ARGS) == set(port_methods())


@pytest.mark.parametrize("method", sorted(MUTATIONS))
def test_mutation_refused_without_lease(method: str) -> None:
    inner = fake()
    fenced = FencedCinder(inner, lambda: False)
    args, kwargs = ARGS[method]
    with pytest.raises(NotLeader) as e:
        getattr(fenced, method)(*args, **kwargs)
    assert e.value.operation == method
    assert not e.value.final
    assert inner.calls == []


@pytest.mark.parametrize("method", sorted(MUTATIONS))
def test_mutation_passes_with_lease(method: str) -> None:
    inner = fake()
    args, kwargs = ARGS[method]
    getattr(FencedCinder(inner, lambda: True), method)(*args, **kwargs)
    assert [c[0] for c in inner.calls] == [method]


@pytest.mark.parametrize("method", sorted(m for m in READS if m in ARGS))
def test_reads_pass_through_without_lease(method: str) -> None:
    inner = fake()
    args, kwargs = ARGS[method]
    result = getattr(FencedCinder(inner, lambda: False), method)(*args, **kwargs)
    list(result) if method.startswith("list_") else None
    assert [c[0] for c in inner.calls] == [method]


def test_capabilities_pass_through() -> None:
    inner = fake()
    assert FencedCinder(inner, lambda: False).capabilities == inner.capabilities


def test_leadership_is_checked_at_each_call() -> None:
    inner = fake()
    leader = [True]
    fenced = FencedCinder(inner, lambda: leader[0])
    fenced.delete_attachment(A)
    leader[0] = False
    with pytest.raises(NotLeader):
        fenced.delete_volume(V)
    assert inner.methods_called() == ["delete_attachment"]


def test_context_hands_out_the_fenced_port() -> None:
    w = make_context()
    cinder = w.ctx.cinder(None)
    assert isinstance(cinder, FencedCinder)
    w.leader[0] = False
    with pytest.raises(NotLeader):
        cinder.delete_volume(V)
    assert w.cinder.calls == []
