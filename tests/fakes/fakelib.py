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


# --- open-iscsi's node database (``/etc/iscsi``), shared by the fake iscsiadm and the tests ------------


def iscsi_root() -> Path:
    """The fake's ``/etc/iscsi`` (config ``iscsi_root``; the agent's ``CINDER_ATTACH_ISCSI_ROOT``)."""
    return Path(config().get("iscsi_root") or world() / "etc-iscsi")


def split_portal(portal: str) -> tuple[str, int]:
    """``10.0.0.5:3260`` → (``10.0.0.5``, 3260); ``[fd00::5]:3260`` → (``fd00::5``, 3260)."""
    host, _, port = portal.rpartition(":")
    return host.strip("[]"), int(port)


def node_record_path(iqn: str, portal: str, tpgt: int, iface: str) -> Path:
    """``nodes/<iqn>/<ip>,<port>,<tpgt>/<iface>``, the layout open-iscsi's idbm uses."""
    ip, port = split_portal(portal)
    return iscsi_root() / "nodes" / iqn / f"{ip},{port},{tpgt}" / iface


def discovery_record_path(portal: str) -> Path:
    """``send_targets/<ip>,<port>/st_config``."""
    ip, port = split_portal(portal)
    return iscsi_root() / "send_targets" / f"{ip},{port}" / "st_config"


def read_record(path: Path) -> dict[str, str]:
    """Parse a record file the way idbm_recinfo_config does: ``name = value`` lines, ``#`` comments."""
    settings: dict[str, str] = {}
    for raw in path.read_text().split("\n"):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, value = line.partition("=")
        if sep and name.strip() and value.strip():
            settings[name.strip()] = value.strip()
    return settings


def write_record(path: Path, settings: dict[str, str]) -> None:
    """Write a record file like iscsiadm does (0600, BEGIN/END RECORD markers)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    body = "".join(f"{k} = {v}\n" for k, v in settings.items())
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(f"# BEGIN RECORD 2.1.9\n{body}# END RECORD\n")
    os.replace(tmp, path)


def remove_record(path: Path) -> None:
    """Delete a record file and the directories it leaves empty (up to ``nodes/``)."""
    path.unlink(missing_ok=True)
    for parent in (path.parent, path.parent.parent):
        with contextlib.suppress(OSError):
            parent.rmdir()
