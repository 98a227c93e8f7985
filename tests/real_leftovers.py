"""What a test run left behind on the machine: processes, mounts, FUSE mounts, loop devices.

Why: the real-backends tests start real daemons (ceph-mon, ceph-osd, Cinder, Keystone, tgtd), the node
agent, rbd-fuse processes, and make mounts and loop devices.  ``tox -e real-backends`` must leave none of
it (issue 12), and the machine is shared, so "ours" must be exact: other runs may have the same daemons.

* A process is ours when its environment carries this run's mark (``NETVOL_TEST_RUN=<id>``, set in
  ``os.environ`` when pytest starts, see ``tests/conftest.py``; every child inherits it, and the fake
  node world passes it to the node agent, whose children inherit it in turn), or its command line names a
  path under one of the run's roots (pytest's base temp directory).
* A mount (FUSE ones included) is ours when its mount point or source is under a root; a loop device when
  its backing file is.

``find(mark, roots)`` lists them; ``reap(found)`` ends, unmounts and detaches them (best effort), so a
failed check does not leave the machine dirty for the next run.
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

#: The environment variable carrying the run's mark.
RUN_MARK = "NETVOL_TEST_RUN"


@dataclass(frozen=True, slots=True, kw_only=True)
class Leftovers:
    """Each entry is a readable line: ``pid cmdline``, a mountinfo line, ``/dev/loopN: backing file``."""

    processes: list[str] = field(default_factory=list)
    mounts: list[str] = field(default_factory=list)
    fuse_mounts: list[str] = field(default_factory=list)
    loops: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.processes or self.mounts or self.fuse_mounts or self.loops)


def _under(path: str, roots: Sequence[Path]) -> bool:
    return any(path == str(r) or path.startswith(str(r).rstrip("/") + "/") for r in roots)


def _names(cmdline: str, root: Path) -> bool:
    """Whether a command line names ``root`` or a path under it (``/tmp/x/pytest-1`` is not ``-12``)."""
    text = str(root).rstrip("/")
    return f"{text}/" in cmdline or any(word == text for word in cmdline.split())


def _processes(mark: str, roots: Sequence[Path], exclude: set[int]) -> list[str]:
    wanted = f"{RUN_MARK}={mark}".encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) in exclude:
            continue
        try:
            if Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                continue  # already dead, only not reaped
            environ = Path(f"/proc/{entry}/environ").read_bytes().split(b"\0")
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
        except (OSError, IndexError):
            continue  # gone meanwhile, or a kernel thread
        if wanted in environ or any(_names(cmdline, r) for r in roots):
            found.append(f"{entry} {cmdline}")
    return found


def _mounts(roots: Sequence[Path]) -> tuple[list[str], list[str]]:
    plain, fuse = [], []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        mount_point = fields[4].replace("\\040", " ")
        after = fields[fields.index("-") + 1 :]
        fs_type, source = after[0], after[1] if len(after) > 1 else ""
        if _under(mount_point, roots) or _under(source, roots):
            (fuse if fs_type.startswith("fuse") else plain).append(line)
    return plain, fuse


def _loops(roots: Sequence[Path]) -> list[str]:
    found = []
    for backing in sorted(Path("/sys/block").glob("loop*/loop/backing_file")):
        try:
            target = backing.read_text().strip()
        except OSError:
            continue
        if _under(target.removesuffix(" (deleted)"), roots):
            found.append(f"/dev/{backing.parent.parent.name}: {target}")
    return found


def find(mark: str, roots: Sequence[Path], *, exclude: Sequence[int] = ()) -> Leftovers:
    """What carries ``mark`` or lives under ``roots``; the calling process and ``exclude`` do not count."""
    plain, fuse = _mounts(roots)
    return Leftovers(
        processes=_processes(mark, roots, {os.getpid(), *exclude}),
        mounts=plain,
        fuse_mounts=fuse,
        loops=_loops(roots),
    )


def reap(found: Leftovers) -> None:
    """Best effort: SIGKILL the processes, lazily unmount (deepest first), detach the loop devices."""
    for line in found.processes:
        try:
            os.kill(int(line.split()[0]), signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            continue
    for line in sorted(found.mounts + found.fuse_mounts, key=lambda m: -len(m.split()[4])):
        subprocess.run(["umount", "-l", line.split()[4]], capture_output=True, check=False)
    for line in found.loops:
        subprocess.run(["losetup", "-d", line.split(":", 1)[0]], capture_output=True, check=False)
