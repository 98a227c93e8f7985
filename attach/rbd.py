"""Mapping RBD images with ``rbd device map`` — including the udev-ordering workaround.

Before Ceph's fix, ``rbd map`` waited for the ``rbd`` bus add event and *then* the ``block`` add event of
``/dev/rbdN``; udevd does not keep kernel order, so when ``block`` came first ``rbd map`` waited forever
although the device existed. We therefore never trust ``rbd map`` to return:

1. an existing mapping of the same pool/namespace/image (head) with a sane device node is adopted;
2. ``-o noudev`` is used when the installed ``rbd`` supports it (it then waits on kernel uevents);
3. otherwise the map runs under a watchdog: once the device is visible in sysfs and ``rbd`` is still
   waiting after ``udev_trigger_after`` seconds, a targeted ``udevadm trigger`` for ``rbdN`` re-sends the add
   event, then (``udev_broad_trigger_after`` later) the broad ``udevadm trigger --type=devices --action=add``;
4. at ``map_timeout`` the process group gets TERM, then KILL; sysfs is rescanned and a live mapping is
   adopted (a timed-out map may still have mapped). A process that survives KILL is stuck in the kernel
   (D state): the image is marked in flight and new maps of it are refused until that process is gone.

The cephx key is written to a 0600 key file in the state directory and removed afterwards; it never
appears in argv.
"""

from __future__ import annotations

import contextlib
import os
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import structlog

from attach.errors import (
    AuthFailed,
    CommandFailed,
    DeviceBusy,
    FinalAttachError,
    NotFound,
    RetryableAttachError,
    WrongDevice,
)
from attach.runner import Process, Runner
from attach.settings import Settings
from attach.stash import InFlight
from provisioner.csi_contract import RbdTarget

log = structlog.get_logger(__name__)

EXIT_EBUSY = 16
EXIT_EINVAL = 22


@dataclass(frozen=True, slots=True, kw_only=True)
class RbdMapping:
    """A kernel mapping found in ``/sys/bus/rbd/devices/<id>``."""

    dev_id: str
    device: str
    pool: str
    namespace: str
    image: str
    snap: str
    major_minor: str


def image_spec(target: RbdTarget) -> str:
    """``pool[/namespace]/image``."""
    if target.rados_namespace:
        return f"{target.pool}/{target.rados_namespace}/{target.image}"
    return f"{target.pool}/{target.image}"


def _read(path: Path) -> str:
    try:
        return path.read_text().strip()
    except (FileNotFoundError, NotADirectoryError):
        return ""


class Rbd:
    """Map, find and unmap RBD images on this node."""

    def __init__(
        self,
        *,
        runner: Runner,
        settings: Settings,
        inflight: InFlight,
        spawn: Callable[..., Process] | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._runner = runner
        self._settings = settings
        self._inflight = inflight
        self._spawn = spawn or runner.spawn
        self._clock = clock
        self._sleep = sleep
        self._noudev: bool | None = None

    # --- discovery ---------------------------------------------------------------------------------

    def mappings(self) -> list[RbdMapping]:
        """Every mapping the kernel knows about, from sysfs."""
        root = self._settings.sysfs_root / "bus" / "rbd" / "devices"
        if not root.is_dir():
            return []
        found = []
        for entry in sorted(root.iterdir()):
            major, minor = _read(entry / "major"), _read(entry / "minor")
            found.append(
                RbdMapping(
                    dev_id=entry.name,
                    device=str(self._settings.dev_root / f"rbd{entry.name}"),
                    pool=_read(entry / "pool"),
                    namespace=_read(entry / "pool_ns"),
                    image=_read(entry / "name"),
                    snap=_read(entry / "current_snap") or "-",
                    major_minor=f"{major}:{minor}" if major and minor else "",
                )
            )
        return found

    def find(self, target: RbdTarget) -> RbdMapping | None:
        """The head mapping of the target's image, if any."""
        for m in self.mappings():
            if (m.pool, m.namespace, m.image, m.snap) == (
                target.pool,
                target.rados_namespace,
                target.image,
                "-",
            ):
                return m
        return None

    def device_ok(self, mapping: RbdMapping) -> bool:
        """The device node exists and is the block device sysfs describes (same major:minor)."""
        try:
            st = os.stat(mapping.device)
        except OSError:
            return False
        if stat.S_ISBLK(st.st_mode):
            return f"{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}" == mapping.major_minor
        # Only a relocated dev root (a test world) may use regular files as device nodes.
        return self._settings.test_dev_root and stat.S_ISREG(st.st_mode)

    def supports_noudev(self) -> bool:
        """Whether ``rbd device map`` knows ``-o noudev`` (asked once per process)."""
        if self._noudev is None:
            result = self._runner.run(["rbd", "help", "device", "map"])
            self._noudev = "noudev" in (result.stdout + result.stderr)
        return self._noudev

    # --- map -----------------------------------------------------------------------------------------

    def map(self, target: RbdTarget, *, key: str, readonly: bool = False) -> RbdMapping:
        """Return a mapping of the target's head image: adopted if present, else freshly mapped."""
        spec = image_spec(target)
        existing = self.find(target)
        if existing is not None and self.device_ok(existing):
            log.info("rbd_mapping_adopted", image=spec, device=existing.device)
            return existing
        self._inflight.check(spec)
        options = []
        if self.supports_noudev():
            options.append("noudev")
        if readonly:
            options.append("ro")
        argv = ["rbd", "device", "map", "-t", "krbd"]
        if options:
            argv += ["-o", ",".join(options)]
        argv += ["--id", target.user, "-m", ",".join(target.monitors)]
        with self._keyfile(key, spec) as keyfile:
            if keyfile:
                argv += ["--keyfile", keyfile]
            argv += ["--", spec]  # the image spec is never read as an option (values are validated too)
            try:
                printed = self._map_under_watchdog(argv, target, spec, key)
            except _NoUdevRefusedError:
                log.warning("rbd_noudev_unsupported", image=spec)
                argv = _without_noudev(argv)
                printed = self._map_under_watchdog(argv, target, spec, key)
        mapping = self.find(target)
        if mapping is None or not self.device_ok(mapping):
            raise RetryableAttachError(f"rbd map of {spec} returned but no sane mapping is in sysfs")
        if printed and os.path.basename(printed) != os.path.basename(mapping.device):
            raise WrongDevice(f"rbd map printed {printed} but sysfs maps {spec} to {mapping.device}")
        log.info("rbd_mapped", image=spec, device=mapping.device)
        return mapping

    @contextlib.contextmanager
    def _keyfile(self, key: str, spec: str):  # type: ignore[no-untyped-def]
        if not key:
            yield ""
            return
        keys = self._settings.state_dir / "keys"
        keys.mkdir(parents=True, exist_ok=True, mode=0o700)
        path = keys / f"{spec.replace('/', '_')}.{os.getpid()}.{time.monotonic_ns()}.key"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, key.encode())
        finally:
            os.close(fd)
        try:
            yield str(path)
        finally:
            path.unlink(missing_ok=True)

    def _map_under_watchdog(self, argv: list[str], target: RbdTarget, spec: str, key: str) -> str:
        s = self._settings
        proc = self._spawn(argv, secrets=(key,))
        started = self._clock()
        targeted_at: float | None = None
        broad_done = False
        try:
            while True:
                rc = proc.poll()
                if rc is not None:
                    out, err = proc.output()
                    if rc == 0:
                        return out.strip().splitlines()[-1] if out.strip() else ""
                    if "unknown map option" in err and "noudev" in " ".join(argv):
                        self._noudev = False
                        raise _NoUdevRefusedError
                    raise _map_error(tuple(proc.argv), rc, err, spec)
                now = self._clock()
                if targeted_at is None and now - started >= s.udev_trigger_after:
                    # Device in sysfs but rbd still waiting: the udev add events came out of order.
                    mapping = self.find(target)
                    if mapping is not None:
                        log.warning("rbd_map_udev_hang", image=spec, device=mapping.device)
                        self._trigger(
                            [
                                "--action=add",
                                "--subsystem-match=block",
                                f"--sysname-match=rbd{mapping.dev_id}",
                            ]
                        )
                        targeted_at = now
                broad_due = targeted_at is not None and now - targeted_at >= s.udev_broad_trigger_after
                if broad_due and not broad_done:
                    log.warning("rbd_map_udev_broad_trigger", image=spec)
                    self._trigger(["--type=devices", "--action=add"])
                    broad_done = True
                if now - started >= s.map_timeout:
                    return self._give_up(proc, target, spec)
                self._sleep(s.poll_interval)
        finally:
            proc.close()  # our copies of its output files; a process stuck in D state keeps its own

    def _trigger(self, args: list[str]) -> None:
        try:
            self._runner.run(["udevadm", "trigger", *args]).check()
        except (CommandFailed, RetryableAttachError) as e:
            log.warning("udev_trigger_failed", error=str(e))

    def _give_up(self, proc: Process, target: RbdTarget, spec: str) -> str:
        s = self._settings
        log.error("rbd_map_timeout", image=spec, pid=proc.pid, timeout=s.map_timeout)
        proc.terminate()
        if proc.wait(s.kill_grace) is None:
            proc.kill()
            if proc.wait(s.kill_grace) is None:
                self._inflight.mark(spec, proc.pid)
                raise RetryableAttachError(
                    f"rbd map of {spec} hung and survived KILL (pid {proc.pid}, kernel D state); "
                    "new maps of this image are refused until it ends"
                )
        mapping = self.find(target)
        if mapping is not None and self.device_ok(mapping):
            log.warning("rbd_map_timeout_adopted", image=spec, device=mapping.device)
            return mapping.device
        raise RetryableAttachError(f"rbd map of {spec} timed out ({s.map_timeout:g}s) and left no mapping")

    # --- unmap / refresh -----------------------------------------------------------------------------

    def holders(self, mapping: RbdMapping) -> list[str]:
        path = self._settings.sysfs_root / "block" / f"rbd{mapping.dev_id}" / "holders"
        return sorted(p.name for p in path.iterdir()) if path.is_dir() else []

    def unmap(self, target: RbdTarget) -> None:
        """Unmap the target's head mapping; not mapped is success, EBUSY is retried with backoff."""
        mapping = self.find(target)
        if mapping is None:
            return
        if held := self.holders(mapping):
            raise DeviceBusy(f"{mapping.device} is still held by {', '.join(held)}")
        base = ["rbd", "device", "unmap", "-t", "krbd"]
        options = ["noudev"] if self.supports_noudev() else []
        delay = self._settings.unmap_backoff
        for attempt in range(self._settings.unmap_retries + 2):
            force = attempt > self._settings.unmap_retries
            if force and not self._settings.force_unmap:
                break
            opts = options + (["force"] if force else [])
            argv = base + (["-o", ",".join(opts)] if opts else []) + ["--", mapping.device]
            result = self._runner.run(argv)
            if result.returncode == 0:
                return
            if result.returncode == EXIT_EINVAL or "not a mapped image" in result.stderr:
                return
            if result.returncode != EXIT_EBUSY:
                raise RetryableAttachError(f"rbd unmap of {mapping.device} failed: {result.stderr.strip()}")
            if attempt < self._settings.unmap_retries:
                self._sleep(delay)
                delay *= 2
        raise DeviceBusy(f"rbd unmap of {mapping.device}: device busy (EBUSY) after retries")

    def refresh(self, mapping: RbdMapping) -> None:
        """Make the kernel re-read the image size (after a Cinder extend)."""
        path = self._settings.sysfs_root / "bus" / "rbd" / "devices" / mapping.dev_id / "refresh"
        with open(path, "w") as f:
            f.write("1")


class _NoUdevRefusedError(Exception):
    """The installed rbd advertised ``noudev`` but refused it: retry the map without it."""


def _without_noudev(argv: list[str]) -> list[str]:
    out: list[str] = []
    i = 0
    while i < len(argv):
        if argv[i] == "-o":
            opts = [o for o in argv[i + 1].split(",") if o != "noudev"]
            if opts:
                out += ["-o", ",".join(opts)]
            i += 2
            continue
        out.append(argv[i])
        i += 1
    return out


def _map_error(argv: tuple[str, ...], rc: int, stderr: str, spec: str) -> Exception:
    text = stderr.strip().splitlines()[-1] if stderr.strip() else f"exit {rc}"
    if rc == 13 or "Permission denied" in stderr or "(13)" in stderr:
        return AuthFailed(f"rbd map of {spec}: permission denied (bad cephx key or blocklisted): {text}")
    if rc == 2 or "(2) No such file" in stderr:
        return NotFound(f"rbd map of {spec}: image not found: {text}")
    if rc == 6 or "(6)" in stderr:
        return FinalAttachError(f"rbd map of {spec}: the kernel lacks image features (ENXIO): {text}")
    if rc in (110, 108) or "(110)" in stderr or "(108)" in stderr:
        return RetryableAttachError(f"rbd map of {spec}: monitors unreachable: {text}")
    err = RetryableAttachError(f"rbd map of {spec} failed (exit {rc}): {text}")
    err.__cause__ = CommandFailed(argv, rc, stderr)
    return err
