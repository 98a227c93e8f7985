"""The expand executor on port fakes with a fake clock: exact Cinder calls, Kubernetes writes and Events."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from provisioner.domain import names
from provisioner.domain.errors import CinderQuotaExceeded, CinderUnavailable
from provisioner.domain.model import VolumeId
from provisioner.flows.expand import (
    ANN_PRE_RESIZE_CAPACITY,
    Decided,
    reconcile_claim_and_size,
    reconcile_expansion,
)
from tests.fakes.ports import LEGACY_CAPS, FakeCinder, World, make_context
from tests.unit.flows import objects

KEY = "ns/data"


def world(
    *,
    request: str = "4Gi",
    allow: bool = True,
    status: str = "in-use",
    cinder: FakeCinder | None = None,
    block: bool = False,
    source: str = "csi",
) -> World:
    w = make_context(clouds={"default": cinder or FakeCinder()}, final_retry_seconds=300.0)
    sc = objects.storage_class()
    sc["allowVolumeExpansion"] = allow
    w.kube.put("storageclasses", sc)
    pvc = objects.pvc(deleting=False)
    pvc["metadata"]["finalizers"] = []
    pvc["spec"].update(volumeName="pvc-u1", volumeMode="Block" if block else "Filesystem")
    pvc["spec"]["resources"]["requests"]["storage"] = request
    pvc["status"] = {"phase": "Bound", "capacity": {"storage": "1Gi"}}
    w.kube.put("persistentvolumeclaims", pvc)
    pv = objects.pv(phase="Bound", secrets_in=None)
    pv["spec"]["capacity"] = {"storage": "1Gi"}
    if source == "csi":
        pv["spec"]["csi"] = {"driver": names.CSI_DRIVER_NAME, "volumeHandle": "v1"}
    else:
        pv["spec"][source] = {}
    w.kube.put("persistentvolumes", pv)
    w.cinder.add_volume("v1", status=status, size_gib=1)
    return w


def writes(w: World) -> list[tuple[Any, ...]]:
    """(resource, name, "status" | "object") of every patch (the fake does not log the subresource)."""
    return [(c[1], c[2], "status" if "status" in c[5] else "object") for c in w.kube.calls if c[0] == "patch"]


def claim(w: World) -> dict[str, Any]:
    found = w.kube.find("persistentvolumeclaims", "data", "ns")
    assert found is not None
    return found


def pv(w: World) -> dict[str, Any]:
    found = w.kube.find("persistentvolumes", "pvc-u1")
    assert found is not None
    return found


def test_online_expand_marks_extends_then_records_for_the_node() -> None:
    """Resizing + allocatedResources before the extend; then PV capacity, FileSystemResizePending."""
    w = world()
    first = reconcile_expansion(w.ctx, KEY)
    assert ("requeue", "extending") == (first.kind, first.reason)
    assert [("get_volume", "v1"), ("extend_volume", "v1", 4)] == w.cinder.calls
    status = claim(w)["status"]
    assert ["Resizing"] == [c["type"] for c in status["conditions"]]
    assert {"storage": "4Gi"} == status["allocatedResources"]
    assert {"storage": "ControllerResizeInProgress"} == status["allocatedResourceStatuses"]
    assert {"storage": "1Gi"} == pv(w)["spec"]["capacity"]  # not before Cinder has the size
    w.clock.advance(first.delay)
    second = reconcile_expansion(w.ctx, KEY)
    assert "done" == second.kind
    assert ["get_volume", "extend_volume", "get_volume"] == w.cinder.methods_called()
    assert {"storage": "4Gi"} == pv(w)["spec"]["capacity"]
    assert "1Gi" == pv(w)["metadata"]["annotations"][ANN_PRE_RESIZE_CAPACITY]
    status = claim(w)["status"]
    assert ["FileSystemResizePending"] == [c["type"] for c in status["conditions"]]
    assert {"storage": "NodeResizePending"} == status["allocatedResourceStatuses"]
    assert {"storage": "1Gi"} == status["capacity"]  # kubelet sets it after NodeExpandVolume
    assert [
        ("persistentvolumeclaims", "data", "status"),
        ("persistentvolumes", "pvc-u1", "object"),
        ("persistentvolumeclaims", "data", "status"),
    ] == writes(w)
    assert [("Normal", "Resizing"), ("Normal", "FileSystemResizeRequired")] == [
        (c.type, c.reason) for c in w.events.calls
    ]
    third = reconcile_expansion(w.ctx, KEY)  # nothing left to do: no call, no write
    assert ("done", 3, 3) == (third.kind, len(w.cinder.calls), len(writes(w)))


def test_block_in_tree_claim_is_finished_by_the_controller() -> None:
    """Block mode on an in-tree PV: status.capacity is set at once, no node condition."""
    w = world(block=True, source="iscsi")
    reconcile_expansion(w.ctx, KEY)
    w.clock.advance(5.0)
    assert "done" == reconcile_expansion(w.ctx, KEY).kind
    status = claim(w)["status"]
    assert {"storage": "4Gi"} == status["capacity"]
    assert [] == status["conditions"]
    assert "allocatedResourceStatuses" not in status
    assert ANN_PRE_RESIZE_CAPACITY not in pv(w)["metadata"]["annotations"]
    assert "VolumeResizeSuccessful" == w.events.calls[-1].reason


def test_class_without_expansion_warns_and_never_calls_cinder() -> None:
    """allowVolumeExpansion false: one Warning naming it, final, zero Cinder calls, zero writes."""
    w = world(allow=False)
    outcome = reconcile_expansion(w.ctx, KEY)
    assert ("final", "expansion_not_allowed", 0.0) == (outcome.kind, outcome.reason, outcome.delay)
    assert ([], []) == (w.cinder.calls, writes(w))
    assert [("Warning", "VolumeResizeFailed")] == [(c.type, c.reason) for c in w.events.calls]
    assert "allowVolumeExpansion" in w.events.calls[0].message


def test_offline_cloud_warns_pod_must_stop_and_retries_slowly() -> None:
    """Without in-use extend: one read, no extend, a Warning, final with the slow retry."""
    w = world(cinder=FakeCinder(capabilities=LEGACY_CAPS))
    outcome = reconcile_expansion(w.ctx, KEY)
    assert ("final", 300.0) == (outcome.kind, outcome.delay)
    assert ["get_volume"] == w.cinder.methods_called()
    assert [] == writes(w)
    assert "stop the pods" in w.events.calls[0].message
    # once the volume is detached (available), the slow retry extends it offline
    w.cinder.volumes["v1"] = replace(w.cinder.volumes["v1"], status="available")
    w.clock.advance(300.0)
    assert "requeue" == reconcile_expansion(w.ctx, KEY).kind
    assert ("extend_volume", VolumeId("v1"), 4) == w.cinder.calls[-1]


def test_quota_failure_leaves_the_claim_consistent_and_says_why() -> None:
    """A refused extend: Resizing removed, ControllerResizeInfeasible, PV untouched, Warning with cause."""
    cinder = FakeCinder()
    cinder.fail("extend_volume", CinderQuotaExceeded("gigabytes quota exceeded", operation="volume_extend"))
    w = world(cinder=cinder)
    outcome = reconcile_expansion(w.ctx, KEY)
    assert ("final", 300.0) == (outcome.kind, outcome.delay)
    status = claim(w)["status"]
    assert [] == status["conditions"]
    assert {"storage": "ControllerResizeInfeasible"} == status["allocatedResourceStatuses"]
    assert {"storage": "1Gi"} == status["capacity"] == pv(w)["spec"]["capacity"]
    assert 1 == w.cinder.volumes["v1"].size_gib
    warning = [c for c in w.events.calls if c.type == "Warning"]
    assert 1 == len(warning)
    assert "gigabytes quota exceeded" in warning[0].message


def test_the_outcome_names_the_claim_copy_it_was_decided_on() -> None:
    """The flow reads the cache itself: its outcome carries that copy, for the controller to remember a
    failure against (not the older copy the controller read before the flow ran)."""
    cinder = FakeCinder()
    cinder.fail("extend_volume", CinderQuotaExceeded("gigabytes quota exceeded", operation="volume_extend"))
    w = world(cinder=cinder)
    read = claim(w)
    outcome = reconcile_expansion(w.ctx, KEY)
    assert isinstance(outcome, Decided)
    assert ("final", "4Gi") == (outcome.kind, outcome.claim["spec"]["resources"]["requests"]["storage"])
    assert read["metadata"]["uid"] == outcome.claim["metadata"]["uid"]
    assert "allocatedResourceStatuses" not in outcome.claim["status"]  # the copy read, not our writes


def test_transient_failure_backs_off_with_one_warning_per_attempt() -> None:
    """Cinder unavailable on extend: error outcome (rate-limited retry), claim still marked Resizing."""
    cinder = FakeCinder()
    cinder.fail("extend_volume", CinderUnavailable("503", operation="volume_extend"), times=2)
    w = world(cinder=cinder)
    outcomes = [reconcile_expansion(w.ctx, KEY) for _ in range(3)]
    assert ["error", "error", "requeue"] == [o.kind for o in outcomes]
    assert 3 == w.cinder.methods_called().count("extend_volume")
    assert 1 == sum(1 for c in writes(w) if c[2] == "status")  # Resizing written once, not per attempt
    warnings = [c for c in w.events.calls if c.type == "Warning"]
    assert (2, 1) == (len(warnings), len(w.events.distinct("Warning")))  # one Event object, count 2
    assert "will retry" in warnings[0].message
    assert ["Resizing"] == [c["type"] for c in claim(w)["status"]["conditions"]]


def test_shrink_is_refused_without_cinder() -> None:
    """A request below the allocated size: Warning naming the field, no Cinder call, no write."""
    w = world(request="2Gi")
    live = claim(w)
    live["status"]["allocatedResources"] = {"storage": "4Gi"}
    pv(w)["spec"]["capacity"] = {"storage": "4Gi"}
    outcome = reconcile_expansion(w.ctx, KEY)
    assert ("final", "shrink_refused") == (outcome.kind, outcome.reason)
    assert ([], []) == (w.cinder.calls, writes(w))
    assert "spec.resources.requests.storage" in w.events.calls[0].message


def test_claim_flow_runs_expansion_only_for_bound_claims() -> None:
    """The controller's claim flow: provisioning says done for a bound claim, then the size is handled."""
    w = world()
    outcome = reconcile_claim_and_size(w.ctx, KEY)
    assert "requeue" == outcome.kind
    assert ["get_volume", "extend_volume"] == w.cinder.methods_called()


def test_the_flow_passes_the_chaos_crash_points_in_order() -> None:
    """before_cinder_extend, after_cinder_extend, then after_pv_resize: the points the chaos harness arms."""
    from provisioner.testworld.harness.chaos import EXPAND_CRASH_POINTS

    w = world()
    passed: list[str] = []
    ctx = replace(w.ctx, checkpoint=passed.append)
    first = reconcile_expansion(ctx, KEY)
    w.clock.advance(first.delay)
    reconcile_expansion(ctx, KEY)
    assert list(EXPAND_CRASH_POINTS) == passed
