"""Block device inspection and filesystem work: blkid, mkfs, grow, size, flush.

The rule that matters most lives here: a device is formatted only when blkid finds nothing on it **and** the
volume is new (``contentSource == "empty"``). A restored, cloned or adopted volume that looks blank is a
red flag (wrong device, failed restore), never an invitation to mkfs over someone's data.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from attach.errors import CommandFailed, FinalAttachError, InvalidRequest
from attach.runner import Runner

SUPPORTED_FS = ("ext4", "ext3", "ext2", "xfs")
DEFAULT_FS = "ext4"


@dataclass(frozen=True, slots=True, kw_only=True)
class Probe:
    """What blkid found on a device; ``blank`` when it found no signature at all."""

    fs_type: str = ""
    partition_table: str = ""

    @property
    def blank(self) -> bool:
        return not self.fs_type and not self.partition_table


def mkfs_argv(fs_type: str, device: str) -> list[str]:
    """The mkfs command line for a new, blank device (fast: no discard, lazy inode/journal init)."""
    if fs_type in ("ext2", "ext3", "ext4"):
        extended = "nodiscard,lazy_itable_init=1,lazy_journal_init=1"
        return [f"mkfs.{fs_type}", "-q", "-m0", "-E", extended, device]
    if fs_type == "xfs":
        return ["mkfs.xfs", "-q", "-K", device]
    raise InvalidRequest(f"unsupported fsType {fs_type!r} (supported: {', '.join(SUPPORTED_FS)})")


class Devices:
    """Filesystem operations on a device, through host tools on PATH."""

    def __init__(self, *, runner: Runner) -> None:
        self._runner = runner

    def probe(self, device: str) -> Probe:
        """Low-level probe (``blkid -p``): exit 2 means nothing found."""
        result = self._runner.run(["blkid", "-p", "-o", "export", device])
        if result.returncode == 2:
            return Probe()
        result.check()
        values = dict(line.split("=", 1) for line in result.stdout.splitlines() if "=" in line)
        return Probe(fs_type=values.get("TYPE", ""), partition_table=values.get("PTTYPE", ""))

    def ensure_filesystem(self, device: str, *, fs_type: str, new_volume: bool) -> str:
        """The filesystem on ``device``; ``fs_type`` is created only on a blank device of a new volume."""
        probe = self.probe(device)
        if not probe.blank:
            if not probe.fs_type:
                raise FinalAttachError(
                    f"{device} carries a partition table ({probe.partition_table}), not a filesystem"
                )
            return probe.fs_type
        if not new_volume:
            raise FinalAttachError(
                f"{device} looks blank but the volume is not new (restored, cloned or adopted); "
                "refusing to format it"
            )
        self._runner.run(mkfs_argv(fs_type, device), timeout=None).check()
        return fs_type

    def grow(self, *, device: str, mount_path: str, fs_type: str) -> None:
        """Grow a mounted filesystem to the size of its device."""
        if fs_type in ("ext2", "ext3", "ext4"):
            self._runner.run(["resize2fs", device]).check()
        elif fs_type == "xfs":
            self._runner.run(["xfs_growfs", mount_path]).check()
        else:
            raise InvalidRequest(f"cannot grow filesystem type {fs_type!r}")

    def flush(self, device: str) -> None:
        """``blockdev --flushbufs``; a missing device is fine (already gone)."""
        try:
            self._runner.run(["blockdev", "--flushbufs", device]).check()
        except CommandFailed:
            if os.path.exists(device):
                raise


def size_bytes(device: str) -> int:
    """Size of a block device (or of a regular file standing in for one in a test world)."""
    fd = os.open(device, os.O_RDONLY)
    try:
        return os.lseek(fd, 0, os.SEEK_END)
    finally:
        os.close(fd)
