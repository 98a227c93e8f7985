"""Table tests for restores from Cinder backups (``flows/sources``): the annotation and its guard, a
VolumeSnapshot whose handle is a backup, create-from-backup (3.47) vs restore into a new volume, and the
pure ``restore_step`` / its executor ``finish_restore`` (exact Cinder calls)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from provisioner.domain import names
from provisioner.domain.errors import InvalidInput
from provisioner.domain.model import BackupId, VolumeId
from provisioner.domain.params import ClassParams
from provisioner.flows.sources import VolumeSource, finish_restore, resolve_source, restore_step
from tests.fakes.ports import LEGACY_CAPS, FakeCinder, World, make_context

ANN = f"metadata.annotations[{names.ANN_RESTORE_FROM_BACKUP}]"
PARAMS = ClassParams(secret_namespace="netvol-system")
OURS = {names.META_CLUSTER: "cluster-a", names.META_PVC_NAMESPACE: "ns"}
B1 = "0b000000-0000-4000-8000-000000000001"
FOREIGN = "0b000000-0000-4000-8000-000000000002"
BUSY = "0b000000-0000-4000-8000-000000000003"
OTHER_NS = "0b000000-0000-4000-8000-000000000004"
MISSING = "0b000000-0000-4000-8000-000000000009"


def _world(*, legacy: bool = False, service: bool = True) -> World:
    world = (
        make_context(clouds={"default": FakeCinder(capabilities=LEGACY_CAPS)}) if legacy else make_context()
    )
    cinder = world.cinder
    cinder.backup_service = service
    cinder.add_backup(B1, "v0", size_gib=4, metadata=OURS)
    cinder.add_backup(FOREIGN, "v0", metadata={names.META_CLUSTER: "cluster-b"})
    cinder.add_backup(BUSY, "v0", status="creating", metadata=OURS)
    cinder.add_backup(OTHER_NS, "v0", metadata={**OURS, names.META_PVC_NAMESPACE: "other"})
    world.kube.put(
        "volumesnapshots",
        {
            "metadata": {"name": "bsnap", "namespace": "ns"},
            "status": {"boundVolumeSnapshotContentName": "c9"},
        },
    )
    world.kube.put("volumesnapshotcontents", {"metadata": {"name": "c9"}, "status": {"snapshotHandle": B1}})
    world.kube.put(
        "volumesnapshots",
        {
            "metadata": {"name": "nosuch", "namespace": "ns"},
            "status": {"boundVolumeSnapshotContentName": "c8"},
        },
    )
    world.kube.put(
        "volumesnapshotcontents", {"metadata": {"name": "c8"}, "status": {"snapshotHandle": MISSING}}
    )
    return world


def _pvc(
    annotations: dict[str, str] | None = None, data_source: dict[str, str] | None = None
) -> dict[str, Any]:
    spec: dict[str, Any] = {"dataSource": data_source} if data_source else {}
    return {
        "metadata": {"name": "c", "namespace": "ns", "uid": "u1", "annotations": annotations or {}},
        "spec": spec,
    }


def _restore(backup: str) -> dict[str, Any]:
    return _pvc({names.ANN_RESTORE_FROM_BACKUP: backup})


@pytest.mark.parametrize(
    ("pvc", "legacy", "params", "expected"),
    [
        pytest.param(
            _restore(B1), False, PARAMS, VolumeSource(backup_id=BackupId(B1), min_size_gib=4), id="3.47"
        ),
        pytest.param(
            _restore(B1),
            True,
            PARAMS,
            VolumeSource(restore_backup_id=BackupId(B1), min_size_gib=4),
            id="legacy",
        ),
        pytest.param(
            _restore(FOREIGN),
            False,
            replace(PARAMS, allow_raw_snapshot_restore=True),
            VolumeSource(backup_id=BackupId(FOREIGN), min_size_gib=1),
            id="raw-allowed",
        ),
        pytest.param(
            _pvc(data_source={"kind": "VolumeSnapshot", "name": "bsnap"}),
            False,
            PARAMS,
            VolumeSource(backup_id=BackupId(B1), min_size_gib=4),
            id="volumesnapshot-of-a-backup",
        ),
    ],
)
def test_resolve_backup_source(
    pvc: dict[str, Any], legacy: bool, params: ClassParams, expected: VolumeSource
) -> None:
    """Each backup source resolves to create-from-backup (3.47) or restore-after-create (older)."""
    world = _world(legacy=legacy)
    assert expected == resolve_source(world.ctx, pvc, params, world.cinder)


@pytest.mark.parametrize(
    ("pvc", "service", "field", "fragment"),
    [
        pytest.param(_restore(MISSING), True, ANN, "not found", id="missing"),
        pytest.param(_restore(FOREIGN), True, ANN, "does not belong to this cluster", id="foreign-cluster"),
        pytest.param(_restore(OTHER_NS), True, ANN, "namespace 'ns'", id="other-namespace"),
        pytest.param(_restore(BUSY), True, ANN, "creating, not available", id="not-available"),
        pytest.param(_restore(B1), False, ANN, "no cinder-backup service", id="no-backup-service"),
        pytest.param(_restore("../volumes/x"), True, ANN, "not a Cinder backup id", id="bad-id"),
        pytest.param(
            _pvc({names.ANN_RESTORE_FROM_BACKUP: B1, names.ANN_RESTORE_FROM_SNAPSHOT: "s1"}),
            True,
            ANN,
            "cannot be combined",
            id="with-snapshot-annotation",
        ),
        pytest.param(
            _pvc({names.ANN_RESTORE_FROM_BACKUP: B1}, {"kind": "PersistentVolumeClaim", "name": "src"}),
            True,
            ANN,
            "spec.dataSource",
            id="with-data-source",
        ),
        pytest.param(
            _pvc(data_source={"kind": "VolumeSnapshot", "name": "nosuch"}),
            True,
            "spec.dataSource",
            "snapshot or backup",
            id="handle-neither",
        ),
    ],
)
def test_backup_source_refusals(pvc: dict[str, Any], service: bool, field: str, fragment: str) -> None:
    """Every refusal is final and names the claim's field; nothing is created."""
    world = _world(service=service)
    with pytest.raises(InvalidInput) as refused:
        resolve_source(world.ctx, pvc, PARAMS, world.cinder)
    assert field == refused.value.field
    assert fragment in refused.value.message
    assert "create_volume" not in world.cinder.methods_called()


def test_refusal_checks_the_guard_before_the_backup_service() -> None:
    """A foreign backup is refused by the guard without asking about the backup service."""
    world = _world()
    with pytest.raises(InvalidInput):
        resolve_source(world.ctx, _restore(FOREIGN), PARAMS, world.cinder)
    assert ["get_backup"] == world.cinder.methods_called()


def _vol(md: dict[str, str]) -> Any:
    cinder = FakeCinder()
    return cinder.add_volume("v1", metadata=md)


TAGS = {names.META_CLUSTER: "cluster-a", names.META_PVC_UID: "u1"}


@pytest.mark.parametrize(
    ("metadata", "expected"),
    [
        pytest.param(
            {**TAGS, names.META_RESTORED_FROM_BACKUP: B1, names.META_RESTORE_STATE: "pending"},
            "restore",
            id="pending",
        ),
        pytest.param(
            {names.META_CLUSTER: "cluster-a", names.META_PVC_UID: "u-source"}, "retag", id="wiped-by-restore"
        ),
        pytest.param({**TAGS, names.META_RESTORED_FROM_BACKUP: B1}, "ready", id="restored-and-ours"),
        pytest.param(
            {**TAGS, names.META_RESTORED_FROM_BACKUP: B1, names.META_RESTORE_STATE: "restoring"},
            "ready",
            id="restore-accepted",
        ),
    ],
)
def test_restore_step(metadata: dict[str, str], expected: str) -> None:
    """What an available volume still needs: the restore call, a re-tag, or nothing."""
    assert expected == restore_step(_vol(metadata), claim_uid="u1")


def test_finish_restore_asks_for_the_restore_then_marks_it() -> None:
    """pending → restore_backup into the volume, then restore-state=restoring; a requeue, never a bind."""
    cinder = FakeCinder()
    cinder.add_backup(B1, "v0")
    volume = cinder.add_volume(
        "v1", metadata={**TAGS, names.META_RESTORED_FROM_BACKUP: B1, names.META_RESTORE_STATE: "pending"}
    )
    outcome = finish_restore(volume, cinder=cinder, claim_uid="u1", tags=TAGS, backup_id=BackupId(B1))
    assert outcome is not None
    assert "restoring_backup" == outcome.reason
    assert [
        ("restore_backup", B1, VolumeId("v1"), None),
        ("set_volume_metadata", "v1", {names.META_RESTORE_STATE: "restoring"}),
    ] == cinder.calls


def test_finish_restore_retags_a_wiped_volume() -> None:
    """A restore replaced our tags with the source's: one merge puts ours and the marker back."""
    cinder = FakeCinder()
    volume = cinder.add_volume(
        "v1", metadata={names.META_CLUSTER: "cluster-a", names.META_PVC_UID: "u-source"}
    )
    outcome = finish_restore(volume, cinder=cinder, claim_uid="u1", tags=TAGS, backup_id=BackupId(B1))
    assert outcome is not None
    expected = {**TAGS, names.META_RESTORED_FROM_BACKUP: B1, names.META_RESTORE_STATE: "done"}
    assert [("set_volume_metadata", "v1", expected)] == cinder.calls
    assert "ready" == restore_step(cinder.volumes["v1"], claim_uid="u1")
