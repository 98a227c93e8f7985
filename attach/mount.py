"""Mount table reading and mount/umount/bind through the host's ``mount`` tools.

The mount table is read from a configurable mountinfo file (``/proc/self/mountinfo`` on a node, a file the
fake ``mount`` maintains in a test world) so "is it mounted, and from which device?" has one answer in
both. Unmounting is never lazy: a lazy unmount would let us unmap a device that is still in use.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

from attach.errors import DeviceBusy
from attach.runner import Runner


@dataclass(frozen=True, slots=True, kw_only=True)
class MountEntry:
    """One line of mountinfo."""

    mount_point: str
    source: str
    fs_type: str
    options: tuple[str, ...]
    major_minor: str
    root: str


def _unescape(field: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as \ooo octal.
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and i + 3 < len(field) and field[i + 1 : i + 4].isdigit():
            out.append(chr(int(field[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def parse_mountinfo(text: str) -> list[MountEntry]:
    """Parse ``/proc/<pid>/mountinfo`` text; malformed lines are skipped."""
    entries = []
    for line in text.splitlines():
        fields = line.split()
        if "-" not in fields:
            continue
        sep = fields.index("-")
        if sep < 6 or len(fields) < sep + 3:
            continue
        entries.append(
            MountEntry(
                mount_point=_unescape(fields[4]),
                source=_unescape(fields[sep + 2]),
                fs_type=fields[sep + 1],
                options=tuple(fields[5].split(",")),
                major_minor=fields[2],
                root=_unescape(fields[3]),
            )
        )
    return entries


def device_number(path: str | Path) -> str:
    """``major:minor`` of a block device node, or "" when ``path`` is not one."""
    try:
        st = os.stat(path)
    except OSError:
        return ""
    if not stat.S_ISBLK(st.st_mode):
        return ""
    return f"{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}"


class Mounter:
    """Reads the mount table and runs mount/umount."""

    def __init__(self, *, runner: Runner, mountinfo: Path) -> None:
        self._runner = runner
        self._mountinfo = mountinfo

    def entries(self) -> list[MountEntry]:
        try:
            return parse_mountinfo(self._mountinfo.read_text())
        except FileNotFoundError:
            return []

    def find(self, path: str | Path) -> MountEntry | None:
        """The topmost mount on ``path`` (after resolving symlinks), or None."""
        want = os.path.realpath(path)
        found = None
        for entry in self.entries():
            if entry.mount_point in (want, str(path)):
                found = entry
        return found

    def mounted_from(self, path: str | Path, device: str) -> bool:
        """True when ``path`` is mounted from ``device`` (same node after symlinks, or same major:minor)."""
        entry = self.find(path)
        if entry is None:
            return False
        if os.path.realpath(entry.source) == os.path.realpath(device):
            return True
        number = device_number(device)
        return bool(number) and number == entry.major_minor

    def mount(self, device: str, path: str, fs_type: str, options: list[str]) -> None:
        argv = ["mount", "-t", fs_type]
        if options:
            argv += ["-o", ",".join(options)]
        self._runner.run([*argv, device, path]).check()

    def bind(self, source: str, path: str, *, readonly: bool) -> None:
        self._runner.run(["mount", "--bind", source, path]).check()
        if readonly:
            self._runner.run(["mount", "-o", "remount,bind,ro", path]).check()

    def umount(self, path: str) -> None:
        """Unmount every layer on ``path`` (never lazily); a busy mount raises DeviceBusy."""
        while self.find(path) is not None:
            result = self._runner.run(["umount", path])
            if result.returncode != 0:
                if self.find(path) is None:
                    return
                raise DeviceBusy(f"cannot unmount {path}: {result.stderr.strip() or result.returncode}")
