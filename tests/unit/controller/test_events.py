"""Event recorder: one event per distinct message, counts instead of floods, PV events in default."""

from __future__ import annotations

import re
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from provisioner.domain.errors import KubeAlreadyExists
from provisioner.telemetry.events import EventRecorder, event_name


class FakeWriter:
    def __init__(self) -> None:
        self.created: list[dict[str, Any]] = []
        self.patched: list[tuple[str, dict[str, Any]]] = []

    def create(self, resource: str, obj: Any, *, namespace: str | None = None) -> Any:
        self.created.append(obj)
        return obj

    def patch(
        self, resource: str, name: str, patch: Any, *, namespace: str | None = None, patch_type: Any = "merge"
    ) -> Any:
        self.patched.append((name, patch))
        return {}


PVC = {"kind": "PersistentVolumeClaim", "metadata": {"name": "c", "namespace": "ns", "uid": "u1"}}


def test_identical_events_are_aggregated() -> None:
    """Ten identical failures make one Event; later repeats bump its count, rate-limited."""
    now = [0.0]
    writer = FakeWriter()
    rec = EventRecorder(writer, component="netvol.io/cinder", min_patch_interval=10, clock=lambda: now[0])
    for _ in range(10):
        rec.event(PVC, "Warning", "ProvisioningFailed", "quota exceeded")
    now[0] = 11.0
    rec.event(PVC, "Warning", "ProvisioningFailed", "quota exceeded")
    rec.flush()
    rec.close()
    assert 1 == len(writer.created)
    assert [11] == [p["count"] for _, p in writer.patched]


def test_distinct_messages_are_distinct_events() -> None:
    """Different reasons/messages are separate Events with involvedObject set."""
    writer = FakeWriter()
    rec = EventRecorder(writer, component="netvol.io/cinder")
    rec.event(PVC, "Normal", "Provisioning", "creating")
    rec.event(PVC, "Normal", "ProvisioningSucceeded", "done")
    rec.flush()
    rec.close()
    assert ["Provisioning", "ProvisioningSucceeded"] == [e["reason"] for e in writer.created]
    assert {"u1"} == {e["involvedObject"]["uid"] for e in writer.created}


def test_cluster_scoped_object_events_go_to_default_namespace() -> None:
    """Events about a PV live in the default namespace and name no namespace in involvedObject."""
    writer = FakeWriter()
    rec = EventRecorder(writer, component="x")
    rec.event({"metadata": {"name": "pv1", "uid": "u2"}}, "Warning", "VolumeFailedDelete", "m")
    rec.flush()
    rec.close()
    ev = writer.created[0]
    assert ("default", "PersistentVolume") == (ev["metadata"]["namespace"], ev["involvedObject"]["kind"])
    assert "namespace" not in ev["involvedObject"]


class SharedWriter(FakeWriter):
    """An API server's events: a second create with the same name is AlreadyExists."""

    def __init__(self) -> None:
        super().__init__()
        self.objects: dict[str, dict[str, Any]] = {}

    def create(self, resource: str, obj: Any, *, namespace: str | None = None) -> Any:
        name = obj["metadata"]["name"]
        if name in self.objects:
            raise KubeAlreadyExists(f"events {name!r} already exists", status_code=409)
        self.objects[name] = dict(obj)
        return super().create(resource, obj, namespace=namespace)

    def get(self, resource: str, name: str, *, namespace: str | None = None) -> Any:
        return self.objects[name]

    def patch(
        self, resource: str, name: str, patch: Any, *, namespace: str | None = None, patch_type: Any = "merge"
    ) -> Any:
        self.objects[name].update({k: v for k, v in patch.items() if k != "metadata"})
        return super().patch(resource, name, patch, namespace=namespace, patch_type=patch_type)


def test_a_new_leader_bumps_the_event_the_old_leader_created() -> None:
    """Event names are deterministic, so two replicas recording one failure make one Event, count 2."""
    writer = SharedWriter()
    for instance in ("r0", "r1"):
        recorder = EventRecorder(writer, component="c", instance=instance)
        recorder.event(PVC, "Warning", "ProvisioningFailed", "parameters.type: no such type request_id=req-1")
        recorder.close()
    (event,) = writer.objects.values()
    assert 2 == event["count"]
    assert "parameters.type: no such type" == event["message"]


SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


@pytest.mark.parametrize(
    "name",
    [
        "a" * 253,
        "a" * 235 + "-" + "b" * 17,  # a plain cut would end the name's first part with '-'
        "a" * 235 + "." + "b" * 17,  # ... or leave '..' before the digest
        "x" * 100 + "." + "y" * 152,
        "data",
    ],
)
def test_event_names_are_valid_for_any_claim_name(name: str) -> None:
    """The generated Event name is a DNS subdomain of at most 253 characters whatever the claim is called."""
    generated = event_name({"name": name, "uid": "u1"}, "Warning", "ProvisioningFailed", "m")
    assert (True, True) == (len(generated) <= 253, bool(SUBDOMAIN.match(generated)))


@given(st.text(max_size=300))
def test_event_names_are_always_valid(name: str) -> None:
    """Any object name (even one the API server would never hold) yields a valid, bounded Event name."""
    generated = event_name({"name": name, "uid": "u1"}, "Warning", "R", "m")
    assert (True, True) == (len(generated) <= 253, bool(SUBDOMAIN.match(generated)))


def test_long_names_keep_distinct_events_per_message() -> None:
    """Cutting the object part never merges two messages: the digest still tells them apart."""
    meta = {"name": "a" * 253, "uid": "u1"}
    assert event_name(meta, "Warning", "R", "one") != event_name(meta, "Warning", "R", "two")
