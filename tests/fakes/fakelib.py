"""Shared state for the fake host tools (rbd, iscsiadm, udevadm, blkid, mkfs, mount, ...).

Stdlib only: the fakes run as separate processes found on PATH, exactly like the real tools. The world is a
directory named by ``FAKE_ATTACH_WORLD`` holding ``config.json`` (behaviour knobs written by the test),
``state.json`` (what the fake kernel/daemons currently have), ``argv.log`` (every invocation, one JSON
line each) plus the fake sysfs/dev roots and mount table.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

WORLD_ENV = "FAKE_ATTACH_WORLD"


def world() -> Path:
    return Path(os.environ[WORLD_ENV])


def config() -> dict[str, Any]:
    data: dict[str, Any] = json.loads((world() / "config.json").read_text())
    return data


@contextlib.contextmanager
def state() -> Iterator[dict[str, Any]]:
    """Locked read-modify-write of state.json."""
    w = world()
    with open(w / "state.lock", "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        path = w / "state.json"
        data = json.loads(path.read_text()) if path.exists() else {}
        yield data
        tmp = w / f".state.{os.getpid()}.tmp"
        tmp.write_text(json.dumps(data))
        os.replace(tmp, path)


def peek() -> dict[str, Any]:
    with state() as s:
        copy: dict[str, Any] = json.loads(json.dumps(s))
        return copy


def record_argv(tool: str, argv: list[str], **extra: Any) -> None:
    with open(world() / "argv.log", "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        f.write(json.dumps({"tool": tool, "argv": argv, **extra}) + "\n")


def take_failure(tool: str, op: str) -> int:
    """Consume one injected exit code for ``tool``/``op`` (config ``fail: {"tool:op": [codes]}``)."""
    queue = config().get("fail", {}).get(f"{tool}:{op}", [])
    if not queue:
        return 0
    with state() as s:
        used = s.setdefault("fail_used", {})
        n = used.get(f"{tool}:{op}", 0)
        if n >= len(queue):
            return 0
        used[f"{tool}:{op}"] = n + 1
        return int(queue[n])


def die(code: int, message: str) -> None:
    if message:
        print(message, file=sys.stderr)
    sys.exit(code)


def sysfs() -> Path:
    return Path(config()["sysfs_root"])


def devroot() -> Path:
    return Path(config()["dev_root"])


def backing(name: str, size: int) -> Path:
    """A persistent backing file for an image/LUN (data survives unmap/logout, like real storage)."""
    d = world() / "backing"
    d.mkdir(exist_ok=True)
    path = d / (name.replace("/", "_") + ".img")
    if not path.exists():
        with open(path, "wb") as f:
            f.truncate(size)
    return path


def attach_node(name: str, backing_file: Path) -> tuple[int, int]:
    """Create ``<dev_root>/<name>``: a loop device when configured (real block device), else a symlink."""
    node = devroot() / name
    node.unlink(missing_ok=True)
    if config().get("loop"):
        import subprocess

        loop = subprocess.run(
            ["losetup", "-f", "--show", str(backing_file)], check=True, capture_output=True, text=True
        ).stdout.strip()
        node.symlink_to(loop)
        st = os.stat(loop)
        return os.major(st.st_rdev), os.minor(st.st_rdev)
    node.symlink_to(backing_file)
    return 0, 0


def detach_node(name: str) -> None:
    node = devroot() / name
    if node.is_symlink() and config().get("loop"):
        import subprocess

        target = os.readlink(node)
        if target.startswith("/dev/loop"):
            subprocess.run(["losetup", "-d", target], check=False, capture_output=True)
    node.unlink(missing_ok=True)
