"""Host paths, tool timeouts and the udev workaround delays of the node agent.

Everything that differs between a real node and a test world is a setting: the sysfs and /dev roots, the
state directory (stash files, locks, key files), the mount table, and every timeout. Each setting comes from
an environment variable ``CINDER_ATTACH_<NAME>`` and can be overridden by the flag ``--<name>`` on the
command line; the table below is the single place that defines both (and the docs are generated from it
by hand, so keep docs/node-agent.md in step).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from provisioner.domain.errors import ConfigError
from provisioner.domain.numbers import finite_float, strict_int


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    """Resolved node agent settings (see ``SPECS`` for meaning and defaults)."""

    sysfs_root: Path = Path("/sys")
    dev_root: Path = Path("/dev")
    state_dir: Path = Path("/var/lib/cinder-attach")
    mountinfo: Path = Path("/proc/self/mountinfo")
    kubelet_dir: Path = Path("/var/lib/kubelet")
    iscsi_root: Path = Path("/etc/iscsi")
    node_id: str = ""
    udev_trigger_after: float = 10.0
    udev_broad_trigger_after: float = 3.0
    map_timeout: float = 90.0
    kill_grace: float = 5.0
    command_timeout: float = 30.0
    unmap_retries: int = 5
    unmap_backoff: float = 1.0
    force_unmap: bool = False
    iscsi_rescan_at: tuple[float, ...] = (4.0, 9.0, 16.0)
    iscsi_lun_timeout: float = 20.0
    multipath_wait: float = 10.0
    poll_interval: float = 0.1

    @property
    def test_dev_root(self) -> bool:
        """True when /dev is relocated (a test world): regular files then stand in for device nodes."""
        return self.dev_root != Path("/dev")


def _float(raw: str, field: str) -> float:
    return finite_float(raw, field, lo=0.0)


def _int(raw: str, field: str) -> int:
    return strict_int(raw, field, lo=0, hi=1000)


def _floats(raw: str, field: str) -> tuple[float, ...]:
    return tuple(_float(x, field) for x in raw.split(",") if x.strip())


def _path(raw: str, field: str) -> Path:
    if not raw or "\x00" in raw:
        raise ConfigError(field, "must be a non-empty path without NUL bytes")
    return Path(raw)


def _abs_dir(raw: str, field: str) -> Path:
    path = _path(raw, field)
    if not path.is_absolute() or ".." in path.parts:
        raise ConfigError(field, "must be an absolute path without '..'")
    return path


def _str(raw: str, field: str) -> str:
    return raw


def _bool(raw: str, field: str) -> bool:
    if raw.lower() in ("1", "true", "yes", "on"):
        return True
    if raw.lower() in ("0", "false", "no", "off", ""):
        return False
    raise ConfigError(field, "must be a boolean (true/false, 1/0, yes/no, on/off)")


_PARSERS: dict[str, Callable[[str, str], Any]] = {
    "sysfs_root": _path,
    "dev_root": _path,
    "state_dir": _path,
    "mountinfo": _path,
    "kubelet_dir": _abs_dir,
    "iscsi_root": _abs_dir,
    "node_id": _str,
    "udev_trigger_after": _float,
    "udev_broad_trigger_after": _float,
    "map_timeout": _float,
    "kill_grace": _float,
    "command_timeout": _float,
    "unmap_retries": _int,
    "unmap_backoff": _float,
    "force_unmap": _bool,
    "iscsi_rescan_at": _floats,
    "iscsi_lun_timeout": _float,
    "multipath_wait": _float,
    "poll_interval": _float,
}

#: name → help text. Env var: CINDER_ATTACH_<NAME upper>; flag: --<name with dashes>.
SPECS: dict[str, str] = {
    "sysfs_root": "root of sysfs (default /sys)",
    "dev_root": "root of device nodes (default /dev)",
    "state_dir": "stash files, locks and temporary key files (default /var/lib/cinder-attach)",
    "mountinfo": "mount table to read (default /proc/self/mountinfo)",
    "kubelet_dir": "the kubelet directory: every staging and target path must lie under it "
    "(default /var/lib/kubelet)",
    "iscsi_root": "open-iscsi's configuration root holding the node database nodes/ and send_targets/, "
    "where CHAP secrets are written (default /etc/iscsi)",
    "node_id": "node id reported by NodeGetInfo (default: host name)",
    "udev_trigger_after": "seconds a running `rbd map` may wait after its device shows up in sysfs "
    "before the targeted `udevadm trigger` (default 10)",
    "udev_broad_trigger_after": "seconds after the targeted trigger before the broad "
    "`udevadm trigger --type=devices --action=add` (default 3)",
    "map_timeout": "seconds before a hanging `rbd map` is terminated (default 90)",
    "kill_grace": "seconds to wait after TERM and after KILL (default 5)",
    "command_timeout": "timeout of every other host command (default 30)",
    "unmap_retries": "retries of `rbd unmap` on EBUSY (default 5)",
    "unmap_backoff": "first backoff between EBUSY retries, doubled each time (default 1)",
    "force_unmap": "use `-o force` after the EBUSY retries are exhausted (default false)",
    "iscsi_rescan_at": "seconds after login at which SCSI hosts are rescanned (default 4,9,16)",
    "iscsi_lun_timeout": "seconds to wait for an iSCSI LUN to appear in sysfs (default 20)",
    "multipath_wait": "seconds to wait for a multipath holder (dm-*) (default 10)",
    "poll_interval": "polling interval of watchdogs and sysfs waits (default 0.1)",
}


def env_name(name: str) -> str:
    """``udev_trigger_after`` → ``CINDER_ATTACH_UDEV_TRIGGER_AFTER``."""
    return "CINDER_ATTACH_" + name.upper()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add one ``--<name>`` flag per setting (all default to None = take env or built-in default)."""
    for name, help_text in SPECS.items():
        parser.add_argument("--" + name.replace("_", "-"), dest=name, default=None, help=help_text)


def load(env: Mapping[str, str], overrides: Mapping[str, object] | None = None) -> Settings:
    """Settings from environment variables, then flag values (strings) on top; bad values → ConfigError."""
    values: dict[str, Any] = {}
    for name, parse in _PARSERS.items():
        raw = None
        if overrides is not None and overrides.get(name) is not None:
            raw = str(overrides[name])
        elif env_name(name) in env:
            raw = env[env_name(name)]
        if raw is None:
            continue
        values[name] = parse(raw, env_name(name))
    settings = Settings(**values)
    if not settings.node_id:
        settings = dataclasses.replace(settings, node_id=os.uname().nodename)
    for name in ("udev_trigger_after", "map_timeout", "kill_grace", "command_timeout", "poll_interval"):
        if getattr(settings, name) <= 0:
            raise ConfigError(env_name(name), "must be positive")
    if settings.udev_trigger_after >= settings.map_timeout:
        raise ConfigError(env_name("udev_trigger_after"), "must be smaller than map_timeout")
    return settings
