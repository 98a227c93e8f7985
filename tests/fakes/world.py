"""A fake node for tests: fake sysfs and /dev roots, a state dir, fake tools first on PATH.

``FakeWorld`` writes the fakes' ``config.json``, builds the environment for subprocesses (PATH with
``tests/fakes/bin`` and, unless real filesystem tools are wanted, ``tests/fakes/fsbin``; the
``CINDER_ATTACH_*`` variables; ``FAKE_ATTACH_WORLD``) and reads back what the fakes recorded (argv log,
state). ``python3`` on that PATH is this interpreter, so the fakes start fast and identically everywhere.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from attach import settings as settings_mod
from attach.cli import build_ops
from attach.node import NodeOps
from attach.settings import Settings
from tests.real_leftovers import RUN_MARK

FAKES = Path(__file__).resolve().parent
BIN = FAKES / "bin"
FSBIN = FAKES / "fsbin"

FAST = {
    "udev_trigger_after": "0.5",
    "udev_broad_trigger_after": "0.3",
    "map_timeout": "2.5",
    "kill_grace": "0.3",
    "command_timeout": "10",
    "unmap_retries": "3",
    "unmap_backoff": "0.05",
    "iscsi_rescan_at": "0.3,0.6",
    "iscsi_lun_timeout": "1.5",
    "multipath_wait": "0.5",
    "poll_interval": "0.02",
}


def can_use_loop_devices() -> bool:
    """Root, /dev/loop-control and losetup/mkfs.ext4/mount on PATH."""
    return (
        os.geteuid() == 0
        and os.path.exists("/dev/loop-control")
        and all(shutil.which(t) for t in ("losetup", "mkfs.ext4", "blkid", "mount", "umount"))
    )


class FakeWorld:
    """One fake node."""

    def __init__(self, root: Path, *, fake_fs: bool = True, loop: bool = False) -> None:
        self.root = root
        self.world = root / "world"
        self.sysfs = root / "sys"
        self.dev = root / "dev"
        self.state_dir = root / "state"
        self.mountinfo = root / "mountinfo"
        self.iscsi_root = root / "etc-iscsi"  # open-iscsi's /etc/iscsi: the fake iscsiadm's node DB
        for d in (self.world, self.sysfs, self.dev, self.state_dir):
            d.mkdir(parents=True, exist_ok=True)
        shim = root / "shim"
        shim.mkdir(exist_ok=True)
        (shim / "python3").symlink_to(sys.executable)
        path = [str(shim), str(BIN)]
        if fake_fs:
            path.append(str(FSBIN))
            self.mountinfo.write_text("")
        path.append(os.environ.get("PATH", "/usr/bin:/bin"))
        self.loop = loop
        self.settings_values = dict(FAST)
        self.settings_values.update(
            sysfs_root=str(self.sysfs),
            dev_root=str(self.dev),
            state_dir=str(self.state_dir),
            mountinfo=str(self.mountinfo) if fake_fs else "/proc/self/mountinfo",
            kubelet_dir=str(root),  # staging/target paths of tests live under the world's root
            iscsi_root=str(self.iscsi_root),
            node_id="node-1",
        )
        self.env = {
            "PATH": os.pathsep.join(path),
            "FAKE_ATTACH_WORLD": str(self.world),
            "HOME": os.environ.get("HOME", "/root"),
            "PYTHONDONTWRITEBYTECODE": "1",
        }
        if RUN_MARK in os.environ:  # the run's mark, so what the agent starts is found if left behind
            self.env[RUN_MARK] = os.environ[RUN_MARK]
        self.env.update({settings_mod.env_name(k): v for k, v in self.settings_values.items()})
        self.config: dict[str, Any] = {
            "sysfs_root": str(self.sysfs),
            "dev_root": str(self.dev),
            "mountinfo": str(self.mountinfo),
            "iscsi_root": str(self.iscsi_root),
            "loop": loop,
            "rbd": {"noudev": True, "udev": "ok", "hang": "none", "images": {}, "key": ""},
            "iscsi": {"targets": {}, "multipath": False},
            "fail": {},
        }
        self.write_config()

    # --- configuration -------------------------------------------------------------------------------

    def write_config(self) -> None:
        (self.world / "config.json").write_text(json.dumps(self.config))

    def rbd(self, **values: Any) -> None:
        self.config["rbd"].update(values)
        self.write_config()

    def iscsi(self, **values: Any) -> None:
        self.config["iscsi"].update(values)
        self.write_config()

    def set(self, **values: Any) -> None:
        self.config.update(values)
        self.write_config()

    def settings(self, **overrides: str) -> Settings:
        return settings_mod.load(self.env, overrides)

    def ops(self, **overrides: str) -> NodeOps:
        return build_ops(self.settings(**overrides), env=self.env)

    # --- observation ---------------------------------------------------------------------------------

    def argv_log(self) -> list[dict[str, Any]]:
        path = self.world / "argv.log"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines()]

    def calls(self, tool: str) -> list[list[str]]:
        return [e["argv"] for e in self.argv_log() if e["tool"] == tool]

    def state(self) -> dict[str, Any]:
        path = self.world / "state.json"
        return json.loads(path.read_text()) if path.exists() else {}

    def rbd_mappings(self) -> dict[str, Any]:
        return dict(self.state().get("rbd", {}).get("mappings", {}))

    def iscsi_sessions(self) -> list[dict[str, Any]]:
        return list(self.state().get("iscsi", {}).get("sessions", []))

    def iscsi_ifaces(self) -> dict[str, dict[str, str]]:
        """iface records iscsiadm stores (the built-in ``default`` and ``iser`` are not listed)."""
        return dict(self.state().get("iscsi", {}).get("ifaces", {}))

    def add_iscsi_iface(self, name: str, **settings: str) -> None:
        """An iface the node's admin configured, e.g. ``add_iscsi_iface("iface0", net_ifacename="eth1")``."""
        state = self.state()
        record = {"iface.iscsi_ifacename": name, "iface.transport_name": "tcp"}
        record.update({f"iface.{k}": v for k, v in settings.items()})
        state.setdefault("iscsi", {}).setdefault("ifaces", {})[name] = record
        (self.world / "state.json").write_text(json.dumps(state))

    def mounts_under(self, path: Path) -> list[str]:
        table = self.mountinfo if self.settings_values["mountinfo"] != "/proc/self/mountinfo" else None
        text = table.read_text() if table else Path("/proc/self/mountinfo").read_text()
        prefix = os.path.realpath(path)
        return [line.split()[4] for line in text.splitlines() if line.split()[4].startswith(prefix)]

    def stash_files(self) -> list[Path]:
        return sorted((self.state_dir / "stash").glob("*.json"))

    def key_files(self) -> list[Path]:
        return sorted((self.state_dir / "keys").glob("*")) if (self.state_dir / "keys").exists() else []

    def run_cli(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """Run ``cinder-attach`` as a separate process in this world."""
        return subprocess.run(
            [sys.executable, "-m", "attach.cli", *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    # --- teardown ------------------------------------------------------------------------------------

    def cleanup(self) -> None:
        """Undo real side effects (mounts under root, loop devices)."""
        if self.settings_values["mountinfo"] == "/proc/self/mountinfo":
            for mp in reversed(self.mounts_under(self.root)):
                subprocess.run(["umount", mp], check=False, capture_output=True)
        if self.loop:
            for node in self.dev.iterdir():
                with contextlib.suppress(OSError):
                    target = os.readlink(node)
                    if target.startswith("/dev/loop"):
                        subprocess.run(["losetup", "-d", target], check=False, capture_output=True)
