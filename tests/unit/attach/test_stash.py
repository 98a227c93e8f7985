"""attach.stash: stash records, per-volume try-locks, the in-flight registry."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from attach.errors import DeviceInFlight, VolumeBusy
from attach.stash import PHASE_STAGED, InFlight, Locks, StashRecord, StashStore


def test_stash_round_trip_and_delete(tmp_path: Path) -> None:
    """A written record reads back equal; delete forgets it; odd volume ids are safe file names."""
    store = StashStore(tmp_path)
    record = StashRecord(
        volume_id="a/b c", staging_path="/s", attributes={"type": "rbd"}, mount_flags=("noatime",),
        phase=PHASE_STAGED, scsi_devices=("sda", "sdb"),
    )  # fmt: skip
    store.write(record)
    assert record == store.read("a/b c")
    assert [record] == store.all()
    assert 0o600 == os.stat(store.path("a/b c")).st_mode & 0o777
    store.delete("a/b c")
    assert (None, []) == (store.read("a/b c"), store.all())


def test_volume_lock_is_exclusive_and_released(tmp_path: Path) -> None:
    """A second holder of the same volume gets VolumeBusy; other volumes and later holders proceed."""
    locks = Locks(tmp_path)
    with locks.volume("v1"):
        with pytest.raises(VolumeBusy), locks.volume("v1"):
            pass
        with locks.volume("v2"):
            pass
    with locks.volume("v1"):
        pass


def test_volume_lock_busy_from_another_thread(tmp_path: Path) -> None:
    """The lock holds across threads (the gRPC server's worker pool)."""
    locks = Locks(tmp_path)
    errors: list[Exception] = []

    def other() -> None:
        try:
            with locks.volume("v1"):
                pass
        except VolumeBusy as e:
            errors.append(e)

    with locks.volume("v1"):
        t = threading.Thread(target=other)
        t.start()
        t.join()
    assert [VolumeBusy] == [type(e) for e in errors]


def test_inflight_refuses_while_process_alive_and_forgets_dead(tmp_path: Path) -> None:
    """A live pid blocks new maps; a dead one is forgotten."""
    inflight = InFlight(tmp_path)
    inflight.mark("p/i", os.getpid())
    with pytest.raises(DeviceInFlight):
        inflight.check("p/i")
    inflight.mark("p/i", 2**22 + 12345)  # beyond pid_max defaults: not alive
    inflight.check("p/i")
    inflight.check("p/i")
