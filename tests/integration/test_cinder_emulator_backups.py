"""The Cinder emulator's backups through the real adapter: timing, injected faults, the service switch,
microversion gates and the content marker that end-to-end restore tests read."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from provisioner.adapters.cinder.client import CinderAdapter, make_cinder
from provisioner.config.auth import cloud_from_entry
from provisioner.domain.errors import CinderBadRequest, CinderNotFound
from provisioner.domain.model import CreateVolumeRequest, Volume
from provisioner.testworld.cinder_emulator.emulator import CinderEmulator


class Clock:
    """A clock the test moves."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


def _adapter(emu: CinderEmulator) -> CinderAdapter:
    entry = {"auth_type": "noauth", "auth": {"endpoint": emu.cinder_url, "token": emu.noauth_token}}
    return make_cinder(cloud_from_entry("emu", entry, prefix="t"), retry_attempts=1)


@pytest.fixture
def emu(clock: Clock) -> Iterator[CinderEmulator]:
    with CinderEmulator(backup_seconds=5, restore_seconds=7, clock=clock) as e:
        yield e


def _volume(cinder: CinderAdapter, name: str = "vol", size: int = 1) -> Volume:
    return cinder.create_volume(CreateVolumeRequest(name=name, size_gib=size, metadata={"k": name}))


def test_backup_and_restore_take_their_time(emu: CinderEmulator, clock: Clock) -> None:
    """creating/backing-up for backup_seconds, restoring/restoring-backup for restore_seconds."""
    cinder = _adapter(emu)
    vol = _volume(cinder)
    backup = cinder.create_backup(vol.id, name="b", metadata={})
    assert ("creating", "backing-up") == (
        cinder.get_backup(backup.id).status,
        cinder.get_volume(vol.id).status,
    )
    clock.now += 5
    assert ("available", "available") == (
        cinder.get_backup(backup.id).status,
        cinder.get_volume(vol.id).status,
    )
    target = _volume(cinder, "target")
    cinder.restore_backup(backup.id, volume_id=target.id)
    states = (cinder.get_backup(backup.id).status, cinder.get_volume(target.id).status)
    assert ("restoring", "restoring-backup") == states
    clock.now += 7
    assert "available" == cinder.get_volume(target.id).status


def test_content_marker_travels_through_backup_restore_and_snapshots(
    emu: CinderEmulator, clock: Clock
) -> None:
    """A marker written on a volume is what a restore of its backup (or a volume from its snapshot) holds;
    the marker is captured at backup time, not read later."""
    cinder = _adapter(emu)
    vol = _volume(cinder, "src")
    emu.write_content(vol.id, "marker-1")
    backup = cinder.create_backup(vol.id, name="b", metadata={})
    clock.now += 5
    snap = cinder.create_snapshot(vol.id, name="s", metadata={})
    emu.write_content(vol.id, "marker-2")
    restored = cinder.restore_backup(backup.id, name="restored")
    clock.now += 7
    from_snap = cinder.create_volume(CreateVolumeRequest(name="fs", size_gib=1, snapshot_id=snap.id))
    from_backup = cinder.create_volume(CreateVolumeRequest(name="fb", size_gib=1, backup_id=backup.id))
    clock.now += 7
    assert ("marker-1", "marker-1", "marker-1", None) == (
        emu.content(restored.volume_id),
        emu.content(from_snap.id),
        emu.content(from_backup.id),
        emu.content(_volume(cinder, "blank").id),
    )


def test_restore_replaces_metadata_and_keeps_a_given_name(emu: CinderEmulator, clock: Clock) -> None:
    """Like Cinder's metadata restore: the target's metadata becomes the source's; a named target keeps
    its name, a ``restore_backup_…`` one takes the source's."""
    cinder = _adapter(emu)
    backup = cinder.create_backup(_volume(cinder, "src").id, name="b", metadata={})
    named = _volume(cinder, "mine")
    clock.now += 5
    cinder.restore_backup(backup.id, volume_id=named.id)
    clock.now += 7
    unnamed = cinder.restore_backup(backup.id)
    clock.now += 7
    after = cinder.get_volume(named.id)
    assert ("mine", {"k": "src"}) == (after.name, dict(after.metadata))
    assert "src" == cinder.get_volume(unnamed.volume_id).name


def test_injected_backup_and_restore_failures(emu: CinderEmulator, clock: Clock) -> None:
    """error_on_backup → backup error with a fail_reason; error_on_restore → volume error_restoring."""
    cinder = _adapter(emu)
    vol = _volume(cinder)
    emu.faults.error_on_backup(name_pattern="bad-*")
    failed = cinder.create_backup(vol.id, name="bad-1", metadata={})
    clock.now += 5
    got = cinder.get_backup(failed.id)
    assert ("error", "injected backup failure") == (got.status, got.fail_reason)
    good = cinder.create_backup(vol.id, name="good", metadata={})
    clock.now += 5
    emu.faults.error_on_restore()
    target = _volume(cinder, "target")
    cinder.restore_backup(good.id, volume_id=target.id)
    clock.now += 7
    assert ("error_restoring", "available") == (
        cinder.get_volume(target.id).status,
        cinder.get_backup(good.id).status,
    )


def test_backup_service_down(emu: CinderEmulator) -> None:
    """With cinder-backup down: has_backup_service is False and a create says which service is missing."""
    cinder = _adapter(emu)
    vol = _volume(cinder)
    emu.backup_service_up = False
    assert cinder.has_backup_service() is False
    with pytest.raises(CinderNotFound) as missing:
        cinder.create_backup(vol.id, name="b", metadata={})
    assert "cinder-backup" in missing.value.message


def test_api_faults_by_operation_name(emu: CinderEmulator) -> None:
    """fail_next applies to the backup operations by the adapter's names."""
    cinder = _adapter(emu)
    vol = _volume(cinder)
    emu.faults.fail_next("create_backup", status=400, message="Invalid input received: no")
    with pytest.raises(CinderBadRequest):
        cinder.create_backup(vol.id, name="b", metadata={})
    assert ["create_backup"] == [c.operation for c in emu.calls() if c.operation == "create_backup"]


def test_create_from_backup_needs_3_47(clock: Clock) -> None:
    """Below 3.47 the adapter refuses a create with backup_id before calling (capabilities say so)."""
    with CinderEmulator(max_version="3.46", clock=clock) as emu:
        cinder = _adapter(emu)
        vol = _volume(cinder)
        backup = cinder.create_backup(vol.id, name="b", metadata={"m": "1"})
        assert cinder.capabilities.backups_as_source is False
        with pytest.raises(CinderBadRequest, match=r"3\.47"):
            cinder.create_volume(CreateVolumeRequest(name="x", size_gib=1, backup_id=backup.id))
        assert {"m": "1"} == dict(cinder.get_backup(backup.id).metadata)


def test_no_backup_metadata_below_3_43(clock: Clock) -> None:
    """Before 3.43 backups carry no metadata: the adapter does not send it, the answer has none."""
    with CinderEmulator(max_version="3.42", clock=clock) as emu:
        cinder = _adapter(emu)
        backup = cinder.create_backup(_volume(cinder).id, name="b", metadata={"m": "1"})
        sent = [c.body for c in emu.calls() if c.operation == "create_backup"]
        assert ("metadata" not in sent[0]["backup"], {}) == (
            True,
            dict(cinder.get_backup(backup.id).metadata),
        )
