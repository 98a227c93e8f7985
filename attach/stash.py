"""What the node remembers between NodeStage and NodeUnstage, and who may touch a volume right now.

NodeUnstage gets only the volume id and staging path, so the stash file written at stage time is the only
memory of what was attached (the PV's non-secret volume attributes, fs type, device). It is written
*before* any side effect, so a crash mid-stage leaves a record that the retried stage adopts and that
unstage can reverse. Writes are atomic (temp file + fsync + rename). Secrets are never stashed.

Locks: one operation per volume at a time. A second concurrent operation gets ``VolumeBusy`` (CSI ABORTED)
instead of waiting; the lock is both in-process (the gRPC server's threads) and an ``flock`` on a file (a
``cinder-attach stage`` from a shell next to the server). Target locks (iSCSI per portal+IQN) block instead.
The in-flight registry remembers images whose ``rbd map`` is stuck in the kernel (D state).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import threading
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from attach.errors import DeviceInFlight, VolumeBusy

PHASE_STAGING = "staging"
PHASE_STAGED = "staged"


@dataclass(frozen=True, slots=True, kw_only=True)
class StashRecord:
    """One staged (or being staged) volume."""

    volume_id: str
    staging_path: str
    attributes: Mapping[str, str]
    fs_type: str = ""
    mount_flags: tuple[str, ...] = ()
    block: bool = False
    readonly: bool = False
    phase: str = PHASE_STAGING
    device: str = ""
    rbd_id: str = ""
    scsi_devices: tuple[str, ...] = ()
    multipath_device: str = ""
    extra: Mapping[str, str] = field(default_factory=dict)

    def to_json(self) -> str:
        data = asdict(self)
        data["attributes"] = dict(self.attributes)
        data["extra"] = dict(self.extra)
        return json.dumps(data, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> StashRecord:
        data: dict[str, Any] = json.loads(text)
        data["mount_flags"] = tuple(data.get("mount_flags", ()))
        data["scsi_devices"] = tuple(data.get("scsi_devices", ()))
        return cls(**data)


def _safe(name: str) -> str:
    return quote(name, safe="") or "_"


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, text.encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


class StashStore:
    """Stash files under ``<state_dir>/stash``, one JSON file per volume id."""

    def __init__(self, state_dir: Path) -> None:
        self._dir = state_dir / "stash"
        self._dir.mkdir(parents=True, exist_ok=True, mode=0o700)

    def path(self, volume_id: str) -> Path:
        return self._dir / f"{_safe(volume_id)}.json"

    def read(self, volume_id: str) -> StashRecord | None:
        try:
            return StashRecord.from_json(self.path(volume_id).read_text())
        except FileNotFoundError:
            return None

    def write(self, record: StashRecord) -> None:
        _write_atomic(self.path(record.volume_id), record.to_json())

    def delete(self, volume_id: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path(volume_id).unlink()

    def all(self) -> list[StashRecord]:
        records = []
        for p in sorted(self._dir.glob("*.json")):
            with contextlib.suppress(FileNotFoundError, ValueError):
                records.append(StashRecord.from_json(p.read_text()))
        return records


class Locks:
    """Per-volume try-locks (busy → VolumeBusy), per-target blocking locks; in-process and cross-process."""

    def __init__(self, state_dir: Path) -> None:
        self._dir = state_dir / "locks"
        self._dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._guard = threading.Lock()
        self._held: set[str] = set()
        self._target_locks: dict[str, threading.Lock] = {}

    @contextlib.contextmanager
    def volume(self, volume_id: str) -> Iterator[None]:
        """Hold the volume for one operation; raise VolumeBusy if someone else holds it."""
        with self._guard:
            if volume_id in self._held:
                raise VolumeBusy(f"an operation on volume {volume_id} is already in progress")
            self._held.add(volume_id)
        try:
            with open(self._dir / f"volume-{_safe(volume_id)}.lock", "a+") as f:
                try:
                    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    raise VolumeBusy(
                        f"an operation on volume {volume_id} is in progress in another process"
                    ) from None
                try:
                    yield
                finally:
                    fcntl.flock(f, fcntl.LOCK_UN)
        finally:
            with self._guard:
                self._held.discard(volume_id)

    @contextlib.contextmanager
    def target(self, key: str) -> Iterator[None]:
        """Serialize work on one shared target (e.g. iscsiadm per portal+IQN); waits for the holder."""
        with self._guard:
            lock = self._target_locks.setdefault(key, threading.Lock())
        with lock, open(self._dir / f"target-{_safe(key)}.lock", "a+") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class InFlight:
    """Images whose map process survived KILL (kernel D state): new maps of them are refused until it ends."""

    def __init__(self, state_dir: Path) -> None:
        self._dir = state_dir / "inflight"
        self._dir.mkdir(parents=True, exist_ok=True, mode=0o700)

    def mark(self, image: str, pid: int) -> None:
        _write_atomic(self._dir / f"{_safe(image)}.json", json.dumps({"image": image, "pid": pid}))

    def check(self, image: str) -> None:
        """Raise DeviceInFlight while a stuck map of ``image`` is still alive; forget it once it is gone."""
        path = self._dir / f"{_safe(image)}.json"
        try:
            pid = int(json.loads(path.read_text())["pid"])
        except FileNotFoundError:
            return
        except (ValueError, KeyError):
            path.unlink(missing_ok=True)
            return
        if _alive(pid):
            raise DeviceInFlight(
                f"a previous map of {image} (pid {pid}) is stuck in the kernel; no new map until it ends"
            )
        path.unlink(missing_ok=True)
