"""The backup half of the CinderPort contract, against the emulator and real Cinder (cinder-backup with the
posix driver writing to a directory, in the same process as the rest of Cinder).

What is pinned here is what the provisioner relies on: statuses, the incremental rule, dependants blocking
delete, 404 = success for delete, restore into an existing or a new volume, create-from-backup (3.47),
and one trap of real Cinder: a restore **replaces the target volume's metadata** with the source volume's
metadata at backup time (the provisioner must re-tag a restored volume).
"""

from __future__ import annotations

import pytest

from provisioner.domain import names
from provisioner.domain.errors import CinderBadRequest, CinderConflict, CinderNotFound
from provisioner.domain.model import Backup, BackupId, CreateVolumeRequest, Volume, VolumeId
from tests.contract.conftest import CinderWorld

MISSING = BackupId("00000000-0000-4000-8000-0000000000b1")


def _volume(cinder: CinderWorld, *, size: int = 1, tags: dict[str, str] | None = None) -> Volume:
    request = CreateVolumeRequest(
        name=cinder.unique(),
        size_gib=size,
        volume_type="rbd",
        metadata={names.META_CLUSTER: cinder.cluster, **(tags or {})},
    )
    return cinder.wait_status(cinder.adapter.create_volume(request).id, "available")


def _backup_status(cinder: CinderWorld, backup_id: BackupId, status: str) -> Backup:
    seen: list[Backup] = []

    def reached() -> bool:
        seen.append(cinder.adapter.get_backup(backup_id))
        return seen[-1].status == status

    cinder.wait_for(f"backup {backup_id} to be {status}", reached, 180)
    return seen[-1]


def _backup(cinder: CinderWorld, volume: Volume, *, incremental: bool = False, **tags: str) -> Backup:
    backup = cinder.adapter.create_backup(
        volume.id, name=cinder.unique("backup"), metadata=tags, incremental=incremental
    )
    done = _backup_status(cinder, backup.id, "available")
    cinder.wait_status(volume.id, "available")  # backing-up → available again
    return done


def _gone(cinder: CinderWorld, backup_id: BackupId) -> bool:
    try:
        cinder.adapter.get_backup(backup_id)
    except CinderNotFound:
        return True
    return False


def test_backup_service_is_present(cinder: CinderWorld) -> None:
    """Both backends run a cinder-backup service that is enabled and up."""
    assert cinder.adapter.has_backup_service() is True


def test_backup_crud(cinder: CinderWorld) -> None:
    """create → creating/available with our name, size and metadata; get; list by volume and tag; delete."""
    volume = _volume(cinder)
    tag = {"contract/backup": cinder.unique("tag")}
    name = cinder.unique("backup")
    created = cinder.adapter.create_backup(volume.id, name=name, metadata=tag)
    got = _backup_status(cinder, created.id, "available")
    by_volume = [b.id for b in cinder.adapter.list_backups(volume_id=volume.id)]
    by_tag = [b.id for b in cinder.adapter.list_backups(metadata=tag)]
    assert (name, volume.id, 1, dict(tag), False, False) == (
        got.name,
        got.volume_id,
        got.size_gib,
        dict(got.metadata),
        got.is_incremental,
        got.has_dependent_backups,
    )
    assert ([created.id], [created.id]) == (by_volume, by_tag)
    assert got.created_at is not None
    cinder.wait_status(volume.id, "available")
    cinder.adapter.delete_backup(created.id)
    cinder.wait_for("backup gone", lambda: _gone(cinder, created.id), 120)
    cinder.adapter.delete_backup(created.id)  # 404 = success


def test_get_missing_backup_is_not_found(cinder: CinderWorld) -> None:
    """get_backup / restore_backup of an unknown id raise CinderNotFound."""
    with pytest.raises(CinderNotFound):
        cinder.adapter.get_backup(MISSING)
    with pytest.raises(CinderNotFound):
        cinder.adapter.restore_backup(MISSING, name=cinder.unique("restore"))


def test_incremental_needs_an_earlier_backup_and_blocks_its_delete(cinder: CinderWorld) -> None:
    """No full backup → 400 (final); with one, the incremental depends on it and it cannot be deleted."""
    volume = _volume(cinder)
    with pytest.raises(CinderBadRequest) as refused:
        cinder.adapter.create_backup(volume.id, name=cinder.unique("backup"), metadata={}, incremental=True)
    assert "incremental" in refused.value.message.lower()
    full = _backup(cinder, volume)
    child = _backup(cinder, volume, incremental=True)
    parent = cinder.adapter.get_backup(full.id)
    assert (True, True, False) == (child.is_incremental, parent.has_dependent_backups, full.is_incremental)
    with pytest.raises(CinderConflict):
        cinder.adapter.delete_backup(full.id)
    cinder.adapter.delete_backup(child.id)
    cinder.wait_for("incremental gone", lambda: _gone(cinder, child.id), 120)
    cinder.adapter.delete_backup(full.id)
    cinder.wait_for("full gone", lambda: _gone(cinder, full.id), 120)


def test_list_backups_follows_pagination(cinder: CinderWorld) -> None:
    """Three backups of one volume come back in pages of two, each once."""
    volume = _volume(cinder)
    made = {_backup(cinder, volume).id for _ in range(3)}
    listed = [b.id for b in cinder.make_adapter(page_size=2).list_backups(volume_id=volume.id)]
    assert (made, 3) == (set(listed), len(listed))


def test_restore_into_an_existing_volume_replaces_its_metadata(cinder: CinderWorld) -> None:
    """Restore: target restoring-backup → available, and its metadata becomes the source's (Cinder's
    backup metadata restore) — a restored volume must be re-tagged by whoever restored it."""
    source = _volume(cinder, tags={"contract/role": "source"})
    backup = _backup(cinder, source)
    target = _volume(cinder, tags={"contract/role": "target"})
    restore = cinder.adapter.restore_backup(backup.id, volume_id=target.id)
    assert (backup.id, target.id) == (restore.backup_id, restore.volume_id)
    assert cinder.adapter.get_volume(target.id).status in ("restoring-backup", "available")
    restored = cinder.wait_status(target.id, "available")
    _backup_status(cinder, backup.id, "available")
    assert ("source", target.name) == (restored.metadata.get("contract/role"), restored.name)


def test_restore_into_a_too_small_volume_is_refused(cinder: CinderWorld) -> None:
    """A target smaller than the backup is refused before anything is written."""
    backup = _backup(cinder, _volume(cinder, size=2))
    target = _volume(cinder, size=1)
    with pytest.raises((CinderConflict, CinderBadRequest)):
        cinder.adapter.restore_backup(backup.id, volume_id=target.id)
    assert "available" == cinder.adapter.get_volume(target.id).status


def test_restore_into_a_new_volume(cinder: CinderWorld) -> None:
    """Without a volume, Cinder creates one of the backup's size with the name given."""
    backup = _backup(cinder, _volume(cinder, size=2))
    name = cinder.unique("restored")
    restore = cinder.adapter.restore_backup(backup.id, name=name)
    restored = cinder.wait_status(VolumeId(restore.volume_id), "available")
    assert (name, 2) == (restored.name, restored.size_gib)


def test_create_volume_from_backup(cinder: CinderWorld) -> None:
    """3.47: a volume created with backup_id becomes available with the backup's data (and, as after any
    restore, the source's metadata)."""
    assert cinder.adapter.capabilities.backups_as_source
    source = _volume(cinder, tags={"contract/role": "source"})
    backup = _backup(cinder, source)
    name = cinder.unique("from-backup")
    request = CreateVolumeRequest(
        name=name,
        size_gib=2,
        volume_type="rbd",
        backup_id=backup.id,
        metadata={names.META_CLUSTER: cinder.cluster, "contract/role": "new"},
    )
    volume = cinder.wait_status(cinder.adapter.create_volume(request).id, "available")
    assert (name, 2, "source") == (volume.name, volume.size_gib, volume.metadata.get("contract/role"))


def test_backup_of_an_in_use_volume_needs_force(cinder: CinderWorld) -> None:
    """An attached volume is backed up only with force (without: a state conflict)."""
    from tests.contract.test_cinder_contract import CONNECTOR

    volume = _volume(cinder)
    attachment = cinder.adapter.create_attachment(volume.id, CONNECTOR)
    cinder.adapter.complete_attachment(attachment.id)
    cinder.wait_status(volume.id, "in-use")
    with pytest.raises(CinderConflict):
        cinder.adapter.create_backup(volume.id, name=cinder.unique("backup"), metadata={})
    forced = cinder.adapter.create_backup(volume.id, name=cinder.unique("backup"), metadata={}, force=True)
    assert volume.id == _backup_status(cinder, forced.id, "available").volume_id
