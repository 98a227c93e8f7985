"""Table tests for where a new volume's content comes from (``flows/sources.resolve_source``), on fakes."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from provisioner.domain import names
from provisioner.domain.errors import InvalidInput
from provisioner.domain.model import SnapshotId, VolumeId
from provisioner.domain.params import ClassParams
from provisioner.flows.sources import EMPTY, VolumeSource, resolve_source
from tests.fakes.ports import World, make_context

RESTORE = f"metadata.annotations[{names.ANN_RESTORE_FROM_SNAPSHOT}]"
PARAMS = ClassParams(secret_namespace="netvol-system")


def _world() -> World:
    world = make_context()
    snap = world.cinder.add_snapshot("s1", "v0")
    world.cinder.snapshots["s1"] = replace(
        snap,
        size_gib=3,
        metadata={names.META_CLUSTER: "cluster-a", names.META_PVC_NAMESPACE: "ns"},
    )
    world.cinder.add_snapshot("foreign", "v0")
    world.cinder.snapshots["team-b"] = replace(
        world.cinder.add_snapshot("team-b", "v0"),
        metadata={names.META_CLUSTER: "cluster-a", names.META_PVC_NAMESPACE: "team-b"},
    )
    world.cinder.add_snapshot("busy", "v0", status="creating")
    world.cinder.snapshots["busy"] = replace(
        world.cinder.snapshots["busy"],
        metadata={names.META_CLUSTER: "cluster-a", names.META_PVC_NAMESPACE: "ns"},
    )
    world.kube.put(
        "persistentvolumeclaims",
        {"metadata": {"name": "src", "namespace": "ns", "uid": "u-src"}, "spec": {"volumeName": "pv-src"}},
    )
    world.kube.put(
        "persistentvolumes",
        {
            "metadata": {"name": "pv-src", "annotations": {names.ANN_VOLUME_ID: "v-src"}},
            "spec": {"capacity": {"storage": "5Gi"}},
        },
    )
    world.kube.put(
        "volumesnapshots",
        {"metadata": {"name": "snap", "namespace": "ns"}, "status": {"boundVolumeSnapshotContentName": "c1"}},
    )
    world.kube.put("volumesnapshotcontents", {"metadata": {"name": "c1"}, "status": {"snapshotHandle": "s1"}})
    world.kube.put("volumesnapshots", {"metadata": {"name": "unbound", "namespace": "ns"}, "status": {}})
    return world


def _pvc(
    annotations: dict[str, str] | None = None, data_source: dict[str, str] | None = None
) -> dict[str, Any]:
    spec: dict[str, Any] = {}
    if data_source is not None:
        spec["dataSource"] = data_source
    return {
        "metadata": {"name": "c", "namespace": "ns", "uid": "u1", "annotations": annotations or {}},
        "spec": spec,
    }


@pytest.mark.parametrize(
    ("pvc", "params", "expected"),
    [
        pytest.param(_pvc(), PARAMS, EMPTY, id="empty"),
        pytest.param(
            _pvc({names.ANN_RESTORE_FROM_SNAPSHOT: "s1"}),
            PARAMS,
            VolumeSource(snapshot_id=SnapshotId("s1"), min_size_gib=3),
            id="restore-annotation",
        ),
        pytest.param(
            _pvc({names.ANN_RESTORE_FROM_SNAPSHOT: "foreign"}),
            replace(PARAMS, allow_raw_snapshot_restore=True),
            VolumeSource(snapshot_id=SnapshotId("foreign"), min_size_gib=1),
            id="raw-restore-allowed",
        ),
        pytest.param(
            _pvc({names.ANN_RESTORE_FROM_SNAPSHOT: "team-b"}),
            replace(PARAMS, restore_from_namespaces=("team-a", "team-b")),
            VolumeSource(snapshot_id=SnapshotId("team-b"), min_size_gib=1),
            id="restore-from-a-listed-namespace",
        ),
        pytest.param(
            _pvc(data_source={"kind": "PersistentVolumeClaim", "name": "src"}),
            PARAMS,
            VolumeSource(source_volid=VolumeId("v-src"), min_size_gib=5),
            id="clone",
        ),
        pytest.param(
            _pvc(data_source={"kind": "VolumeSnapshot", "name": "snap"}),
            PARAMS,
            VolumeSource(snapshot_id=SnapshotId("s1"), min_size_gib=3),
            id="volumesnapshot",
        ),
    ],
)
def test_resolve_source(pvc: dict[str, Any], params: ClassParams, expected: VolumeSource) -> None:
    """Each kind of source resolves to the create request's source fields."""
    world = _world()
    assert expected == resolve_source(world.ctx, pvc, params, world.cinder)


@pytest.mark.parametrize(
    ("pvc", "field", "fragment"),
    [
        pytest.param(
            _pvc({names.ANN_RESTORE_FROM_SNAPSHOT: "s1"}, {"kind": "VolumeSnapshot", "name": "snap"}),
            RESTORE,
            "cannot be combined with spec.dataSource",
            id="both",
        ),
        pytest.param(_pvc({names.ANN_RESTORE_FROM_SNAPSHOT: "nope"}), RESTORE, "not found", id="restore-404"),
        pytest.param(
            _pvc({names.ANN_RESTORE_FROM_SNAPSHOT: "foreign"}),
            RESTORE,
            "does not belong to this cluster",
            id="restore-other-cluster",
        ),
        pytest.param(
            _pvc({names.ANN_RESTORE_FROM_SNAPSHOT: "busy"}), RESTORE, "not available", id="not-ready"
        ),
        pytest.param(
            _pvc(data_source={"kind": "VolumeSnapshot"}), "spec.dataSource.name", "missing", id="no-name"
        ),
        pytest.param(
            _pvc(data_source={"kind": "PersistentVolumeClaim", "name": "ghost"}),
            "spec.dataSource",
            "not a bound volume",
            id="clone-unbound",
        ),
        pytest.param(
            _pvc(data_source={"kind": "VolumeSnapshot", "name": "unbound"}),
            "spec.dataSource",
            "not bound yet",
            id="snapshot-unbound",
        ),
        pytest.param(
            _pvc(data_source={"kind": "VolumeSnapshot", "name": "gone"}),
            "spec.dataSource",
            "not found",
            id="snapshot-missing",
        ),
        pytest.param(
            _pvc(data_source={"kind": "Secret", "name": "x"}),
            "spec.dataSource.kind",
            "unsupported",
            id="bad-kind",
        ),
    ],
)
def test_resolve_source_refuses(pvc: dict[str, Any], field: str, fragment: str) -> None:
    """Each bad source is a final InvalidInput naming the claim's field."""
    world = _world()
    with pytest.raises(InvalidInput) as raised:
        resolve_source(world.ctx, pvc, PARAMS, world.cinder)
    assert field == raised.value.field
    assert fragment in raised.value.message


def test_restore_from_an_unlisted_namespace_is_refused_naming_the_allowed_ones() -> None:
    """A snapshot of this cluster taken in another namespace: refused unless the class lists it."""
    world = _world()
    pvc = _pvc({names.ANN_RESTORE_FROM_SNAPSHOT: "team-b"})
    with pytest.raises(InvalidInput) as plain:
        resolve_source(world.ctx, pvc, PARAMS, world.cinder)
    assert (RESTORE, "snapshot was not taken in namespace 'ns'") == (plain.value.field, plain.value.message)
    with pytest.raises(InvalidInput) as listed:
        resolve_source(world.ctx, pvc, replace(PARAMS, restore_from_namespaces=("team-a",)), world.cinder)
    assert "the class also allows: team-a" in listed.value.message
    other_cluster = _pvc({names.ANN_RESTORE_FROM_SNAPSHOT: "foreign"})
    with pytest.raises(InvalidInput, match="does not belong to this cluster"):  # the list never lifts that
        resolve_source(
            world.ctx, other_cluster, replace(PARAMS, restore_from_namespaces=("ns",)), world.cinder
        )
